"""Plain Feature Pyramid Network neck (Lin et al. 2017) as RetinaNet and FCOS use it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from nassearch.config import NeckConfig
from nassearch.detectors.dense import PYRAMID_STRIDES
from nassearch.detectors.ops.norm import GN_GROUPS, norm_layer
from nassearch.detectors.registry import NECKS
from nassearch.errors import NasSearchError
from nassearch.search_spaces import Genotype

__all__ = ["FPN", "ConvNorm"]

EXTRA_SOURCES = ("input", "output")
NORMS = (None, "bn", "gn")


class ConvNorm(nn.Sequential):
    """Conv2d followed by an optional BatchNorm / GroupNorm (the conv has a bias only without norm)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        norm: str | None = None,
    ) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, pad, bias=norm is None
        )
        if norm is not None:
            self.norm = norm_layer(norm, out_channels, where="fpn")


@NECKS.register("fpn")
class FPN(nn.Module):
    """Lateral 1x1 convs, top-down nearest upsampling + sum, 3x3 output convs, then extra levels.

    Extra levels (num_outs > len(in_channels)) are 3x3 stride-2 convs. The first reads the
    coarsest input (C5, `extra_source="input"`: RetinaNet / mmdetection `add_extra_convs="on_input"`)
    or the coarsest output (P5, `"output"`: FCOS); later ones read the previous extra level, through
    a ReLU when `relu_before_extra` (RetinaNet paper Sec. 4 / Detectron's P7).
    """

    backbone_indices: ClassVar[tuple[int, ...]] = (2, 3, 4)  # C3..C5

    @classmethod
    def from_config(
        cls,
        cfg: NeckConfig,
        in_channels: Sequence[int],
        genotype: Genotype | None = None,
        *,
        default_extra: str = "input",
    ) -> FPN:
        """The neck of a `model.neck` section of type fpn (no genotype); `default_extra` is the
        detector's convention for P6 when `extra_source` is not given (RetinaNet: input, FCOS:
        output)."""
        if genotype is not None:
            raise NasSearchError("fpn neck: takes no genotype (use a searched neck type)")
        return cls(
            in_channels,
            out_channels=cfg.out_channels,
            num_outs=len(PYRAMID_STRIDES),
            extra_source=cfg.extra_source or default_extra,
            norm=cfg.norm,
        )

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int = 256,
        num_outs: int = 5,
        extra_source: str = "input",
        relu_before_extra: bool = True,
        norm: str | None = None,
        in_strides: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        in_channels = [int(c) for c in in_channels]
        if not in_channels:
            raise NasSearchError("fpn in_channels must list at least one input level")
        if num_outs < len(in_channels):
            raise NasSearchError(
                f"fpn num_outs {num_outs} is smaller than the number of inputs {len(in_channels)}"
            )
        if extra_source not in EXTRA_SOURCES:
            raise NasSearchError(
                f"fpn extra_source {extra_source!r} must be one of {list(EXTRA_SOURCES)}"
            )
        if norm not in NORMS:
            raise NasSearchError(f"fpn norm {norm!r} must be one of {list(NORMS)}")
        if norm == "gn" and out_channels % GN_GROUPS:
            raise NasSearchError(
                f"fpn out_channels {out_channels} must be divisible by {GN_GROUPS} for norm 'gn'"
            )
        if in_strides is None:  # the coarsest input is C5 (stride 32), each finer one halves it
            in_strides = [32 // 2 ** (len(in_channels) - 1 - i) for i in range(len(in_channels))]
        if len(in_strides) != len(in_channels):
            raise NasSearchError(
                f"fpn in_strides {list(in_strides)} must have one entry per input {in_channels}"
            )
        self.in_channels = in_channels
        self.out_channels: int = out_channels
        self.num_outs = num_outs
        self.extra_source = extra_source
        self.relu_before_extra = relu_before_extra
        num_extra = num_outs - len(in_channels)
        self.out_strides: list[int] = list(in_strides) + [
            in_strides[-1] * 2 ** (k + 1) for k in range(num_extra)
        ]

        self.lateral_convs = nn.ModuleList(
            ConvNorm(c, out_channels, 1, norm=norm) for c in in_channels
        )
        self.fpn_convs = nn.ModuleList(
            ConvNorm(out_channels, out_channels, 3, norm=norm) for _ in in_channels
        )
        extra_in = [in_channels[-1] if extra_source == "input" else out_channels]
        extra_in += [out_channels] * (num_extra - 1)
        self.extra_convs = nn.ModuleList(
            ConvNorm(c, out_channels, 3, stride=2, norm=norm) for c in extra_in[:num_extra]
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # mmdetection's FPN: xavier uniform, zero bias
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """Map [C3, C4, C5] (finest first) to [P3, ..., P7]."""
        if len(feats) != len(self.in_channels):
            raise ValueError(f"FPN expects {len(self.in_channels)} feature maps, got {len(feats)}")
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, feats, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):
            # upsample to the exact finer size: odd inputs give e.g. 7 -> 13, not 14
            up = F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
            laterals[i - 1] = laterals[i - 1] + up
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals, strict=True)]
        for k, conv in enumerate(self.extra_convs):
            if k == 0:
                x = feats[-1] if self.extra_source == "input" else outs[-1]
            else:
                x = F.relu(outs[-1]) if self.relu_before_extra else outs[-1]
            outs.append(conv(x))
        return outs
