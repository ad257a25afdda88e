"""NAS-FPN neck (Ghiasi, Lin, Le, CVPR 2019): stacked pyramids of merging cells, built from a
`NASFPNGenotype` (the search space that describes it is `search_spaces/nasfpn.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nassearch.config import NeckConfig
from nassearch.detectors.ops.norm import GN_GROUPS, norm_layer
from nassearch.detectors.ops.resample import resample
from nassearch.detectors.registry import NECKS
from nassearch.errors import NasSearchError
from nassearch.search_spaces import Genotype
from nassearch.search_spaces.nasfpn import LEVELS, NUM_OUTPUTS, STYLES, NASFPNGenotype

__all__ = ["NASFPNNeck", "NASFPNStack", "merge"]

NORMS = ("bn", "gn", None)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def merge(op: str, x1: Tensor, x2: Tensor, level1: int, level2: int, style: str) -> Tensor:
    """Binary op on two inputs already at the cell's level; levels are those of their sources.

    `global_pool`: the higher-level input is the coarse one (x1 on a tie). tensorflow (Google):
    coarse + fine * sigmoid(global max of coarse). mmdet (mmcv GlobalPoolingCell): fine + coarse *
    sigmoid(global mean of fine).
    """
    if op == "sum":
        return x1 + x2
    if op != "global_pool":
        raise NasSearchError(f"nasfpn: unknown op {op!r}")
    coarse, fine = (x1, x2) if level1 >= level2 else (x2, x1)
    if style == "mmdet":
        return fine + coarse * torch.sigmoid(fine.mean(dim=(-2, -1), keepdim=True))
    return coarse + fine * torch.sigmoid(coarse.amax(dim=(-2, -1), keepdim=True))


def _conv_norm(
    in_ch: int, out_ch: int, kernel: int, norm: str | None, bias: bool = False
) -> nn.Sequential:
    """Conv (bias when asked or when there is no norm) followed by the norm layer."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=bias or norm is None)
    return nn.Sequential(conv, norm_layer(norm, out_ch, where="nasfpn neck"))


class NASFPNStack(nn.Module):
    """One pyramid: runs the genotype's cells on P3..P7 and returns the five output cells by level."""

    def __init__(
        self, genotype: NASFPNGenotype, channels: int, style: str, norm: str | None
    ) -> None:
        super().__init__()
        self.genotype = genotype
        self.style = style
        self.additions = genotype.unused_additions()
        # Cell output block: ReLU -> 3x3 conv -> norm; mmdet's merge cells keep the conv bias.
        self.cells = nn.ModuleList(
            nn.Sequential(nn.ReLU(), *_conv_norm(channels, channels, 3, norm, style == "mmdet"))
            for _ in genotype.cells
        )

    def forward(self, pyramid: Sequence[Tensor]) -> list[Tensor]:
        sizes = [p.shape[-2:] for p in pyramid]
        levels = self.genotype.pool_levels()
        pool = list(pyramid)
        for cell, block, added in zip(self.genotype.cells, self.cells, self.additions, strict=True):
            i, j = sorted((cell.input1, cell.input2))  # tie rule: smaller index is the coarse one
            size = sizes[cell.level - LEVELS[0]]
            x1 = resample(pool[i], levels[i], cell.level, size)
            x2 = resample(pool[j], levels[j], cell.level, size)
            x = merge(cell.op, x1, x2, levels[i], levels[j], self.style)
            for extra in added:
                x = x + pool[extra]
            pool.append(block(x))
        outputs = dict(zip(self.genotype.output_levels, pool[-NUM_OUTPUTS:], strict=True))
        return [outputs[level] for level in LEVELS]


@NECKS.register("nasfpn")
class NASFPNNeck(nn.Module):
    """C3..C5 -> 1x1 projections -> P6/P7 by max pooling -> `stacks` NAS-FPN pyramids -> P3..P7.

    style "tensorflow" (tensorflow/tpu): P6 = maxpool(P5), P7 = maxpool(P6), bias-free cell convs,
    global_pool gated by the coarse input's global max. style "mmdet" (mmdetection NASFPN): a 1x1
    conv + norm before each extra max pool, cell convs with bias, global_pool gated by the fine
    input's global mean. Stacks have independent weights; the projection happens once.
    """

    backbone_indices: ClassVar[tuple[int, ...]] = (2, 3, 4)  # C3..C5

    @classmethod
    def from_config(
        cls,
        cfg: NeckConfig,
        in_channels: Sequence[int],
        genotype: Genotype | None,
        *,
        default_extra: str = "input",
    ) -> NASFPNNeck:
        """The neck of a `model.neck` section of type nasfpn: `cfg.stacks` repeats of the
        genotype's pyramid in `cfg.style`, BatchNorm after every conv (both references)."""
        if not isinstance(genotype, NASFPNGenotype):
            raise NasSearchError(
                f"nasfpn neck: needs a nasfpn genotype, got {type(genotype).__name__}"
            )
        return cls(genotype, in_channels, cfg.out_channels, stacks=cfg.stacks, style=cfg.style)

    def __init__(
        self,
        genotype: NASFPNGenotype,
        in_channels: Sequence[int],
        out_channels: int = 256,
        *,
        stacks: int = 1,
        style: str = "tensorflow",
        norm: str | None = "bn",
    ) -> None:
        super().__init__()
        in_channels = list(in_channels)
        if len(in_channels) != 3 or not all(_is_int(c) and c > 0 for c in in_channels):
            raise NasSearchError(
                f"nasfpn neck in_channels must be three positive channel counts (C3, C4, C5), "
                f"got {in_channels}"
            )
        if not _is_int(out_channels) or out_channels < 1:
            raise NasSearchError(f"nasfpn neck out_channels must be >= 1, got {out_channels!r}")
        if not _is_int(stacks) or stacks < 1:
            raise NasSearchError(f"nasfpn neck stacks must be an integer >= 1, got {stacks!r}")
        if style not in STYLES:
            raise NasSearchError(f"nasfpn neck style {style!r} must be one of {list(STYLES)}")
        if norm not in NORMS:
            raise NasSearchError(f"nasfpn neck norm {norm!r} must be one of {list(NORMS)}")
        if norm == "gn" and out_channels % GN_GROUPS:
            raise NasSearchError(
                f"nasfpn neck out_channels {out_channels} must be divisible by {GN_GROUPS} "
                "for norm 'gn'"
            )
        self.genotype = genotype
        self.style = style
        self.out_channels = out_channels
        self.lateral = nn.ModuleList(_conv_norm(c, out_channels, 1, norm) for c in in_channels)
        num_extra = len(LEVELS) - len(in_channels)
        self.extra = nn.ModuleList(
            _conv_norm(out_channels, out_channels, 1, norm) if style == "mmdet" else nn.Identity()
            for _ in range(num_extra)
        )
        self.stacks = nn.ModuleList(
            NASFPNStack(genotype, out_channels, style, norm) for _ in range(stacks)
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        if len(feats) != len(self.lateral):
            raise NasSearchError(
                f"nasfpn neck expects {len(self.lateral)} feature maps (C3..C5), got {len(feats)}"
            )
        pyramid = [proj(f) for proj, f in zip(self.lateral, feats, strict=True)]
        for extra in self.extra:  # P6, P7: stride-2 max pool (ceil for odd sizes)
            pyramid.append(F.max_pool2d(extra(pyramid[-1]), 2, 2, ceil_mode=True))
        for stack in self.stacks:
            pyramid = stack(pyramid)
        return pyramid
