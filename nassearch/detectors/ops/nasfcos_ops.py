"""The modules NAS-FCOS's op vocabularies name (Wang et al., CVPR 2020; the vocabularies,
in the released code's order, are part of the search space: `search_spaces/nasfcos.py`).

Where biases and norms sit follows mmdetection's re-implementation, whose parameter counts we match
exactly (`NASFCOS_FPN` 10,690,696 and `NASFCOSHead` 4,368,946 at 256 channels, 80 classes):

* plain and separable convs have no bias (a norm follows);
* `def_conv_3x3` is DCNv2 (2 deformable groups, zero-initialised offset/mask conv) WITH a bias,
  then norm + ReLU (mmdet builds it as ConvModule(bias=True) with a DCNv2 conv_cfg);
* `skip_connect` is the identity: no norm, no ReLU, no parameters;
* FPN ops use BatchNorm, head ops GroupNorm(32) (configurable: `norm`, `gn_groups`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nassearch.detectors.ops.deform_conv import ModulatedDeformConv2d
from nassearch.detectors.ops.norm import norm_layer
from nassearch.errors import NasSearchError
from nassearch.search_spaces.nasfcos import AGG_OPS, FPN_OPS, HEAD_OPS

# (kernel, dilation) of the separable convs.
_SEP = {"sep_conv_3x3": (3, 1), "sep_conv_3x3_dil3": (3, 3), "sep_conv_5x5_dil6": (5, 6)}


class SepConv(nn.Sequential):
    """Depthwise k x k (dilated, 'same' padding) -> pointwise 1x1 -> norm -> ReLU; no bias."""

    def __init__(
        self, channels: int, kernel: int, dilation: int, norm: str, gn_groups: int = 32
    ) -> None:
        pad = dilation * (kernel - 1) // 2
        super().__init__(
            nn.Conv2d(channels, channels, kernel, padding=pad, dilation=dilation,
                      groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=False),
            norm_layer(norm, channels, gn_groups, allow_none=False),
            nn.ReLU(inplace=True),
        )  # fmt: skip


class ConvNormAct(nn.Sequential):
    """k x k conv (no bias) -> norm -> ReLU."""

    def __init__(self, channels: int, kernel: int, norm: str, gn_groups: int = 32) -> None:
        super().__init__(
            nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=False),
            norm_layer(norm, channels, gn_groups, allow_none=False),
            nn.ReLU(inplace=True),
        )


class DefConv(nn.Sequential):
    """DCNv2 3x3 (2 deformable groups, bias, zero-init offsets/mask) -> norm -> ReLU."""

    def __init__(self, channels: int, norm: str, gn_groups: int = 32) -> None:
        super().__init__(
            ModulatedDeformConv2d(channels, channels, 3, padding=1, deform_groups=2, bias=True),
            norm_layer(norm, channels, gn_groups, allow_none=False),
            nn.ReLU(inplace=True),
        )


def _build_op(name: str, vocabulary: tuple[str, ...], channels: int, norm: str, gn_groups: int):
    if name not in vocabulary:
        raise NasSearchError(f"unknown op {name!r} (use one of {', '.join(vocabulary)})")
    if name == "skip_connect":
        return nn.Identity()
    if name == "def_conv_3x3":
        return DefConv(channels, norm, gn_groups)
    if name in _SEP:
        kernel, dilation = _SEP[name]
        return SepConv(channels, kernel, dilation, norm, gn_groups)
    return ConvNormAct(channels, 1 if name == "conv1x1" else 3, norm, gn_groups)


def build_fpn_op(name: str, channels: int, norm: str = "bn", gn_groups: int = 32) -> nn.Module:
    """A channel-preserving, stride-1 FPN op from `FPN_OPS` (BatchNorm by default)."""
    return _build_op(name, FPN_OPS, channels, norm, gn_groups)


def build_head_op(name: str, channels: int, norm: str = "gn", gn_groups: int = 32) -> nn.Module:
    """A channel-preserving, stride-1 head op from `HEAD_OPS` (GroupNorm(32) by default)."""
    return _build_op(name, HEAD_OPS, channels, norm, gn_groups)


class ParamSum(nn.Module):
    """`psum`: a * x + b * y with per-channel learnable weights a, b initialised to 1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight_x = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.weight_y = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.weight_x * x + self.weight_y * y


class ConcatReduce(nn.Module):
    """`cat`: concat -> norm -> ReLU -> 1x1 conv 2C -> C with groups=C, no bias.

    Quirk kept from the released code (and mmdetection): with groups=C each output channel sees two
    adjacent concatenated channels, so outputs 0..C/2-1 mix only channels of x and the rest only y.
    """

    def __init__(self, channels: int, norm: str = "bn", gn_groups: int = 32) -> None:
        super().__init__()
        self.norm = norm_layer(norm, 2 * channels, gn_groups, allow_none=False)
        self.act = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(2 * channels, channels, 1, groups=channels, bias=False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.conv(self.act(self.norm(torch.cat([x, y], dim=1))))


def build_agg(name: str, channels: int, norm: str = "bn", gn_groups: int = 32) -> nn.Module:
    """An aggregation from `AGG_OPS` taking two same-size maps."""
    if name == "psum":
        return ParamSum(channels)
    if name == "cat":
        return ConcatReduce(channels, norm, gn_groups)
    raise NasSearchError(f"unknown aggregation {name!r} (use one of {', '.join(AGG_OPS)})")
