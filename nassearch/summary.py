"""`nassearch summary`: parameter counts and multiply-adds per part of the detector a config builds."""

from __future__ import annotations

from nassearch.config import ExperimentConfig
from nassearch.data.build import num_classes
from nassearch.detectors.build import build_detector, model_genotype
from nassearch.detectors.complexity import PARTS, measure_complexity


def summarize(cfg: ExperimentConfig, input_size: int | tuple[int, int] | None = None) -> dict:
    """Build the config's detector (random weights, no data read) and measure it at `input_size`
    (a side, or height and width; default: the config's network input)."""
    if input_size is None:
        size = cfg.input.network_size()
    elif isinstance(input_size, int):
        size = (input_size, input_size)
    else:
        size = tuple(input_size)
    classes = num_classes(cfg)
    model = build_detector(cfg.model, classes)
    cost = measure_complexity(model, size)
    genotype = model_genotype(cfg.model)
    return {
        "name": cfg.name,
        "detector": cfg.model.type,
        "backbone": f"ResNet-{cfg.model.backbone.depth}",
        "neck": cfg.model.neck.type,
        "genotype_key": genotype.key() if genotype is not None else None,
        "num_classes": classes,
        **cost.to_dict(),
    }


def format_summary(result: dict) -> str:
    h, w = result["input_size"]
    neck = result["neck"]
    if result.get("genotype_key"):
        neck += f" (genotype {result['genotype_key']})"
    lines = [
        f"{result['name']}: {result['detector']} with {result['backbone']} and {neck}, "
        f"{result['num_classes']} classes, input {h}x{w}",
        f"{'part':<10}{'parameters':>14}{'GMACs':>10}",
    ]
    for part in (*PARTS, "total"):
        lines.append(f"{part:<10}{result['params'][part]:>14,}{result['macs'][part] / 1e9:>10.2f}")
    lines.append(
        "GMACs = 10^9 multiply-adds per image (papers' 'FLOPs'), backbone+neck+head, no NMS"
    )
    return "\n".join(lines)
