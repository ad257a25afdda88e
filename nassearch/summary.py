"""`nassearch summary`: parameter counts and multiply-adds per part of the detector a config builds."""

from __future__ import annotations

from nassearch.config import ExperimentConfig
from nassearch.detectors.build import build_detector, model_genotype
from nassearch.detectors.complexity import PARTS, measure_complexity

COCO_CLASSES = 80


def default_num_classes(cfg: ExperimentConfig) -> int:
    """Class count without reading the data: the config's, the synthetic set's, or COCO's 80."""
    if cfg.model.num_classes is not None:
        return cfg.model.num_classes
    if cfg.data.type == "synthetic":
        from nassearch.data.synthetic import SHAPES

        return len(SHAPES)
    return COCO_CLASSES


def summarize(cfg: ExperimentConfig, input_size: int | None = None) -> dict:
    """Build the config's detector (random weights, no data read) and measure it."""
    size = (input_size, input_size) if input_size else cfg.input.network_size()
    num_classes = default_num_classes(cfg)
    model = build_detector(cfg.model, num_classes)
    cost = measure_complexity(model, size)
    genotype = model_genotype(cfg.model)
    return {
        "name": cfg.name,
        "detector": cfg.model.type,
        "backbone": f"ResNet-{cfg.model.backbone.depth}",
        "neck": cfg.model.neck.type,
        "genotype_key": genotype.key() if genotype is not None else None,
        "num_classes": num_classes,
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
