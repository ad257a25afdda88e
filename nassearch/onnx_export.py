"""`nassearch export-onnx`: a trained detector as an ONNX graph up to its raw per-level head outputs.

Anchor/point decoding and NMS stay in Python (`onnx_postprocess` runs the detector's own
postprocess on onnxruntime's outputs): they are data-dependent and cheap, and keeping them out of
the graph keeps the graph portable. Export uses torch's TorchScript-based exporter (`dynamo=False`,
no onnxscript needed); deformable convolutions (NAS-FCOS `dconv3x3`) export through the
pure-PyTorch DCNv2 (gather + matmul, standard ONNX ops), never torchvision's custom op. The file is
written only after onnxruntime reproduces PyTorch within the bound `onnx_check` sets.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from nassearch.config import ExperimentConfig
from nassearch.data.build import num_classes
from nassearch.detectors.build import build_detector
from nassearch.detectors.dense import PYRAMID_STRIDES
from nassearch.detectors.ops.deform_conv import ModulatedDeformConv2d
from nassearch.engine.checkpoint import load_model_weights
from nassearch.errors import NasSearchError, first_line
from nassearch.onnx_check import (
    DEFAULT_TOLERANCE,
    OnnxCheck,
    check_against_pytorch,
    require_onnx_extra,
    run_onnx,
)

OPSET = 17
OUTPUT_KINDS = {
    "retinanet": ("cls_logits", "bbox_deltas"),
    "fcos": ("cls_logits", "bbox_reg", "centerness"),
}


@dataclass
class OnnxReport:
    """What was exported and how well onnxruntime reproduces PyTorch (check None: not checked)."""

    path: Path
    input_shape: tuple[int, int, int, int]
    output_names: list[str]
    check: OnnxCheck | None
    seconds: float


class RawHeadOutputs(nn.Module):
    """images [B, 3, H, W] (normalised, padded) -> every level's raw head tensors, kind by kind."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        kinds = self.detector.head_outputs(self.detector.backbone(images))
        return tuple(t for per_level in kinds for t in per_level)


def output_names(detector_type: str, num_levels: int = len(PYRAMID_STRIDES)) -> list[str]:
    """`<kind>_p<level>` for every head output kind and pyramid level (P3 is stride 8)."""
    first = int(np.log2(PYRAMID_STRIDES[0]))
    return [
        f"{kind}_p{first + i}" for kind in OUTPUT_KINDS[detector_type] for i in range(num_levels)
    ]


def parse_input_size(value: str | None, cfg: ExperimentConfig) -> tuple[int, int]:
    """`S` or `HxW` (default: the config's network input), a multiple of input.size_divisor."""
    if value is None:
        height, width = cfg.input.network_size()
    else:
        parts = value.lower().split("x")
        try:
            sizes = [int(p) for p in parts]
        except ValueError:
            sizes = []
        if len(sizes) not in (1, 2) or min(sizes, default=0) < 1:
            raise NasSearchError(f"--input-size {value!r}: expected S or HxW in pixels, e.g. 640")
        height, width = sizes[0], sizes[-1]
    d = cfg.input.size_divisor
    if height % d or width % d:
        raise NasSearchError(
            f"--input-size {height}x{width}: must be a multiple of input.size_divisor ({d}), "
            "the padding every batch gets"
        )
    return height, width


def load_detector(cfg: ExperimentConfig, checkpoint: str | os.PathLike) -> nn.Module:
    """The config's detector with the checkpoint's weights, in eval mode on the CPU."""
    model = build_detector(cfg.model, num_classes(cfg, read_val=True), seed=cfg.seed)
    load_model_weights(model, checkpoint)
    return model.eval()


def export_onnx(
    cfg: ExperimentConfig,
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    input_size: tuple[int, int] | None = None,
    batch_size: int = 1,
    check: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
) -> OnnxReport:
    """Export to `out` (written only after the export and the onnxruntime check succeed).

    The batch dimension is dynamic; height and width are fixed at `input_size`. Inputs are images
    normalised as `cfg.input.normalize` says and zero-padded to that size.
    """
    onnx = require_onnx_extra("onnx")
    out = Path(out)
    if out.suffix != ".onnx":
        raise NasSearchError(f"--out {out}: use a file name ending in .onnx")
    if not out.parent.is_dir():
        raise NasSearchError(f"--out {out}: folder {out.parent} does not exist")
    height, width = input_size or cfg.input.network_size()
    started = time.perf_counter()
    model = load_detector(cfg, checkpoint)
    for module in model.modules():
        if isinstance(module, ModulatedDeformConv2d):
            module.use_torchvision = False
    wrapper = RawHeadOutputs(model).eval()
    generator = torch.Generator().manual_seed(cfg.seed)
    images = torch.randn(batch_size, 3, height, width, generator=generator)
    try:
        with torch.no_grad():
            reference = wrapper(images)
    except (ValueError, RuntimeError) as exc:
        raise NasSearchError(
            f"export-onnx: the detector fails on a {batch_size}x3x{height}x{width} input "
            f"({first_line(exc)}); "
            "try a larger --input-size"
        ) from None
    names = output_names(cfg.model.type, len(reference) // len(OUTPUT_KINDS[cfg.model.type]))

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        # The exporter's tracer warns about Python-level shape arithmetic it records as constants
        # (fixed H, W are intended) and prints diagnostics; neither is actionable for the user.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                (images,),
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                input_names=["images"],
                output_names=names,
                dynamic_axes={name: {0: "batch"} for name in ["images", *names]},
            )
        proto = onnx.load(str(tmp))
        _set_metadata(proto, cfg, (height, width), names)
        onnx.save(proto, str(tmp))
        result = None
        if check:
            result = onnxruntime_check(tmp, wrapper, images, reference, names, tolerance)
            if not result.passed:
                raise NasSearchError(f"export-onnx: {result.failure()}; nothing written")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return OnnxReport(
        out, (batch_size, 3, height, width), names, result, time.perf_counter() - started
    )


def onnxruntime_check(
    path: str | os.PathLike,
    wrapper: nn.Module,
    images: Tensor,
    reference: tuple[Tensor, ...],
    names: list[str],
    tolerance: float = DEFAULT_TOLERANCE,
) -> OnnxCheck:
    """The graph at `path` run by onnxruntime on `images`, against `wrapper` (see onnx_check)."""
    outputs = run_onnx(path, images.numpy())
    return check_against_pytorch(
        wrapper, images, outputs, names, tolerance=tolerance, reference=reference
    )


def onnx_postprocess(
    detector: nn.Module, outputs: list[np.ndarray], image_shape: tuple[int, int]
) -> list[dict[str, Tensor]]:
    """Detections (boxes, scores, labels per image) from the graph's outputs, by the detector's own
    decoding and NMS: `detector` is the same config's model (its weights are not used)."""
    kinds = len(OUTPUT_KINDS[_detector_type(detector)])
    levels = len(outputs) // kinds
    tensors = [torch.from_numpy(np.asarray(o)) for o in outputs]
    grouped = tuple(tensors[k * levels : (k + 1) * levels] for k in range(kinds))
    with torch.no_grad():
        return detector.postprocess(grouped, image_shape)


def _detector_type(detector: nn.Module) -> str:
    name = type(detector).__name__.lower()
    if name not in OUTPUT_KINDS:
        raise NasSearchError(f"onnx_postprocess: unknown detector {type(detector).__name__}")
    return name


def _set_metadata(
    proto: Any, cfg: ExperimentConfig, size: tuple[int, int], names: list[str]
) -> None:
    """What a deployment needs to feed the graph and decode it, in the model's metadata_props."""
    values = {
        "nassearch.detector": cfg.model.type,
        "nassearch.input": f"images [batch, 3, {size[0]}, {size[1]}] float32, "
        f"normalize={cfg.input.normalize}, zero-padded",
        "nassearch.outputs": ",".join(names),
        "nassearch.strides": ",".join(str(s) for s in PYRAMID_STRIDES),
        "nassearch.config": yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False),
    }
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
