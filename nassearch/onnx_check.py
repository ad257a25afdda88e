"""How closely an exported ONNX graph reproduces PyTorch, and the bound it is held to.

Plain graphs (convolutions, norms, resizes, pooling) are compared with PyTorch's float32 outputs
and must agree within `DEFAULT_TOLERANCE` of each output's largest magnitude (1e-6 to 4e-6
measured on NAS-FPN RetinaNets).

Graphs with deformable convolutions are compared with PyTorch's float64 result of the same
weights instead. A DCN samples its input at positions that another convolution computes, so a
float32 rounding error of d pixels in an offset changes the sample by about d times the input's
local gradient; offsets of tens of pixels and rough feature maps turn ulp-level differences of
accumulation order into relative output errors of 1e-4 and more. PyTorch's own float32 result is
then ~1e-4 from the exact one, and by a different amount on each CPU (oneDNN's AVX2 kernels give
2.4e-4 where its AVX-512 ones give 8.7e-5 on the NAS-FCOS ONNX test; scripts/onnx_precision.py
measures it), so a fixed bound between two float32 results tests the CPU, not the export.
onnxruntime passes if every output is no further from the float64 result than `FLOAT32_SLACK`
times PyTorch float32's largest error over all outputs, L (and at least `DEFAULT_TOLERANCE`). The
bound is thus the graph's float32 error level on the CPU at hand; L comes from PyTorch alone, so
a broken export cannot widen it. One L for the whole graph rather than one per output: a
per-output maximum of rounding errors is itself noisy (1.8e-6 to 8.7e-5 across the NAS-FCOS
test's outputs), and a mismatch within a few L of float64 cannot be told from rounding anyway. A
real mismatch, such as a wrong border rule in the bilinear sampling, gives errors of order 1
(tests/test_onnx_check.py).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from nassearch.detectors.ops.deform_conv import ModulatedDeformConv2d
from nassearch.errors import NasSearchError

# Largest accepted |onnxruntime - reference| / max |reference| over each output.
DEFAULT_TOLERANCE = 1e-4
# onnxruntime's error against float64 may be this many times PyTorch float32's own (deformable
# graphs). With PyTorch on oneDNN's SSE4.1, AVX2 and AVX-512 kernels and onnxruntime with and
# without graph optimisations, the measured ratio was 0.46 to 1.3 (scripts/onnx_precision.py):
# a 3x margin. onnxruntime's own kernels were those of one AVX-512 CPU in all these runs (its
# MLAS library picks them by CPUID and cannot be capped), so its error elsewhere is unmeasured.
FLOAT32_SLACK = 4.0


@dataclass(frozen=True)
class OutputError:
    """The largest deviation of one graph output from its reference, and where it sits.

    Args:
        name: the output's name, e.g. ``bbox_reg_p3``.
        max_abs: the largest ``|got - want|``.
        rel: ``max_abs / max |want|``.
        index: where ``max_abs`` occurs, (image, channel, y, x) for a 4-D output.
    """

    name: str
    max_abs: float
    rel: float
    index: tuple[int, ...]

    def where(self) -> str:
        """``image 0, channel 2, y 5, x 7`` (``index (...)`` for outputs that are not 4-D)."""
        if len(self.index) == 4:
            axes = ("image", "channel", "y", "x")
            return ", ".join(f"{axis} {i}" for axis, i in zip(axes, self.index, strict=True))
        return f"index {self.index}"

    def describe(self) -> str:
        """``name: relative R, max |diff| A at image ..``: one output's error in one phrase."""
        return (
            f"{self.name}: relative {self.rel:.2e}, max |diff| {self.max_abs:.2e} at {self.where()}"
        )


def output_errors(
    got: Sequence[np.ndarray | Tensor],
    want: Sequence[np.ndarray | Tensor],
    names: Sequence[str],
) -> list[OutputError]:
    """Per output: the largest |got - want|, relative to max |want|, and its position."""
    if not len(got) == len(want) == len(names):
        raise NasSearchError(
            f"export-onnx: {len(got)} outputs, {len(want)} reference outputs, {len(names)} names"
        )
    errors = []
    for name, g, w in zip(names, got, want, strict=True):
        g, w = np.asarray(g, dtype=np.float64), np.asarray(w, dtype=np.float64)
        if g.shape != w.shape:
            raise NasSearchError(
                f"export-onnx: {name} has shape {g.shape} in onnxruntime, {w.shape} in PyTorch"
            )
        if g.size == 0:
            errors.append(OutputError(name, 0.0, 0.0, ()))
            continue
        diff = np.abs(g - w)
        flat = int(np.argmax(diff))
        scale = max(float(np.abs(w).max()), float(np.finfo(np.float32).tiny))
        index = tuple(int(i) for i in np.unravel_index(flat, diff.shape))
        errors.append(
            OutputError(name, float(diff.flat[flat]), float(diff.flat[flat]) / scale, index)
        )
    return errors


@dataclass(frozen=True)
class OnnxCheck:
    """onnxruntime's outputs against PyTorch's on one batch.

    Args:
        errors: each output's deviation from the reference.
        reference: ``float32`` (PyTorch's own outputs; plain graphs) or ``float64`` (the same
            weights in double precision; graphs with deformable convolutions).
        tolerance: the bound every ``errors[i].rel`` is held to.
        float32_error: for a float64 reference, PyTorch float32's own largest relative error
            against it, from which ``tolerance`` is computed.
    """

    errors: tuple[OutputError, ...]
    reference: Literal["float32", "float64"]
    tolerance: float
    float32_error: float | None = None

    @property
    def worst(self) -> OutputError:
        """The output with the largest relative error."""
        return max(self.errors, key=lambda e: e.rel)

    @property
    def passed(self) -> bool:
        """Every output within `tolerance`."""
        return all(e.rel <= self.tolerance for e in self.errors)

    def bound_text(self) -> str:
        """The tolerance, and for a float64 reference how it was computed."""
        if self.float32_error is None:
            return f"tolerance {self.tolerance:g}"
        return (
            f"tolerance {self.tolerance:.2e} = max({DEFAULT_TOLERANCE:g}, {FLOAT32_SLACK:g} x "
            f"PyTorch float32's own error {self.float32_error:.2e})"
        )

    def summary(self) -> str:
        """One line for a passed check: the largest error, what it was compared with, the bound."""
        against = "PyTorch" if self.reference == "float32" else "PyTorch's float64 result"
        return (
            f"onnxruntime matches {against}: largest {self.worst.describe()}; {self.bound_text()}"
        )

    def failure(self) -> str:
        """One line naming the worst output, its position and the bound."""
        against = "PyTorch's" if self.reference == "float32" else "PyTorch's float64 result"
        worst = self.worst
        return (
            f"onnxruntime's {worst.name} differs from {against} by {worst.rel:.2e} (relative; "
            f"max |diff| {worst.max_abs:.2e} at {worst.where()}; {self.bound_text()})"
        )


def has_deformable_convs(module: nn.Module) -> bool:
    """Whether `module` contains a DCNv2 layer (its check is then held to float64)."""
    return any(isinstance(m, ModulatedDeformConv2d) for m in module.modules())


def check_against_pytorch(
    module: nn.Module,
    images: Tensor,
    outputs: Sequence[np.ndarray],
    names: Sequence[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    reference: Sequence[Tensor] | None = None,
) -> OnnxCheck:
    """Compare `outputs` (onnxruntime's, for `images`) with `module` (images -> tuple of tensors,
    float32, eval mode); `reference` is the module's float32 outputs when already computed.

    Deformable graphs are held to the float64 result (see the module docstring).
    """
    with torch.no_grad():
        ref32 = tuple(reference) if reference is not None else tuple(module(images))
        if not has_deformable_convs(module):
            return OnnxCheck(tuple(output_errors(outputs, ref32, names)), "float32", tolerance)
        ref64 = tuple(copy.deepcopy(module).double()(images.double()))
    float32_error = max(e.rel for e in output_errors(ref32, ref64, names))
    bound = max(tolerance, FLOAT32_SLACK * float32_error)
    return OnnxCheck(tuple(output_errors(outputs, ref64, names)), "float64", bound, float32_error)


def run_onnx(
    path: str | os.PathLike, images: np.ndarray, *, optimize: bool = True
) -> list[np.ndarray]:
    """The graph's outputs on CPU with onnxruntime; `optimize=False` turns off its graph
    optimisations (no fusions: another order of float32 accumulation)."""
    ort = require_onnx_extra("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images.astype(np.float32)})


def require_onnx_extra(module: str) -> Any:
    """Import `onnx` or `onnxruntime` (the optional onnx extra), or say how to install it."""
    try:
        return __import__(module)
    except ImportError:
        raise NasSearchError(
            f"export-onnx: the {module} package is not installed; install the onnx extra: "
            "pip install -c constraints.txt -e '.[onnx]'"
        ) from None
