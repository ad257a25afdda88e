"""NAS-FCOS decoder (Wang et al., CVPR 2020): cells over a growing feature pool and the output
rule, built from a `NASFCOSGenotype` (described, with the paper's reading, in
`search_spaces/nasfcos.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from nassearch.config import NeckConfig
from nassearch.detectors.dense import PYRAMID_STRIDES
from nassearch.detectors.ops.nasfcos_ops import build_agg, build_fpn_op
from nassearch.detectors.ops.norm import norm_layer
from nassearch.detectors.ops.resample import resize
from nassearch.detectors.registry import NECKS
from nassearch.errors import NasSearchError
from nassearch.search_spaces import Genotype
from nassearch.search_spaces.nasfcos import (
    BACKBONE_NAMES,
    MIN_LEAVES,
    NUM_BACKBONE,
    UPSAMPLE_MODES,
    Cell,
    NASFCOSGenotype,
    fpn_leaves,
)

__all__ = ["NASFCOSCell", "NASFCOSNeck"]


class NASFCOSCell(nn.Module):
    """op1(x), op2(y) at their own resolutions, upsample the smaller to the larger, aggregate."""

    def __init__(
        self,
        op1: str,
        op2: str,
        agg: str,
        channels: int,
        *,
        upsample: str = "bilinear",
        norm: str = "bn",
        gn_groups: int = 32,
    ) -> None:
        super().__init__()
        self.op1 = build_fpn_op(op1, channels, norm, gn_groups)
        self.op2 = build_fpn_op(op2, channels, norm, gn_groups)
        self.agg = build_agg(agg, channels, norm, gn_groups)
        self.upsample = upsample

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        a, b = self.op1(x), self.op2(y)
        if a.shape[-2] * a.shape[-1] >= b.shape[-2] * b.shape[-1]:
            b = resize(b, a.shape[-2:], self.upsample)
        else:
            a = resize(a, b.shape[-2:], self.upsample)
        return self.agg(a, b)


@NECKS.register("nasfcos")
class NASFCOSNeck(nn.Module):
    """The searched FPN: adapt convs, cells over a growing pool, output rule, P6/P7 from P5.

    `in_channels` lists the channels of C2..C5 (4 values) or of C3..C5 (3 values, only for
    genotypes that never read C2); `forward` takes the maps in the same order. An adapt conv is
    built only for the backbone maps some cell reads (mmdetection omits the unused C2 one), so no
    parameter is left without a gradient.
    """

    backbone_indices: ClassVar[tuple[int, ...]] = (1, 2, 3, 4)  # C2..C5: the decoder reads C2

    @classmethod
    def from_config(
        cls,
        cfg: NeckConfig,
        in_channels: Sequence[int],
        genotype: Genotype | None,
        *,
        default_extra: str = "output",
    ) -> NASFCOSNeck:
        """The neck of a `model.neck` section of type nasfcos: the genotype's FPN cells with the
        in-cell upsampling `cfg.upsample`."""
        if not isinstance(genotype, NASFCOSGenotype):
            raise NasSearchError(
                f"nasfcos neck: needs a nasfcos genotype, got {type(genotype).__name__}"
            )
        if genotype.fpn is None:
            raise NasSearchError("nasfcos genotype: has no fpn cells to build a neck from")
        return cls(genotype.fpn, in_channels, cfg.out_channels, upsample=cfg.upsample)

    def __init__(
        self,
        cells: Sequence[Cell],
        in_channels: Sequence[int],
        out_channels: int = 256,
        *,
        upsample: str = "bilinear",
        norm: str = "bn",
        gn_groups: int = 32,
    ) -> None:
        super().__init__()
        if len(in_channels) not in (3, 4):
            raise NasSearchError(
                f"nasfcos neck: in_channels {list(in_channels)} must list C2..C5 or C3..C5"
            )
        if upsample not in UPSAMPLE_MODES:
            raise NasSearchError(
                f"nasfcos neck: upsample={upsample!r} (use one of {', '.join(UPSAMPLE_MODES)})"
            )
        self.first_level = NUM_BACKBONE - len(in_channels)  # 0: inputs start at C2, 1: at C3
        used = sorted({i for cell in cells for i in cell[:2] if i < NUM_BACKBONE})
        if used and used[0] < self.first_level:
            raise NasSearchError(
                f"nasfcos neck: the genotype reads C2 but in_channels {list(in_channels)} has no C2"
            )
        self.out_channels = out_channels
        self.strides = PYRAMID_STRIDES
        self.upsample = upsample
        self.cell_inputs = tuple((cell[0], cell[1]) for cell in cells)
        self.adapt = nn.ModuleDict(
            {
                BACKBONE_NAMES[i]: nn.Sequential(
                    nn.Conv2d(in_channels[i - self.first_level], out_channels, 1, bias=False),
                    norm_layer(norm, out_channels, gn_groups),
                    nn.ReLU(inplace=True),
                )
                for i in used
            }
        )
        self.cells = nn.ModuleList(
            NASFCOSCell(
                cell[2], cell[3], cell[4], out_channels,
                upsample=upsample, norm=norm, gn_groups=gn_groups,
            )
            for cell in cells
        )  # fmt: skip
        leaves = fpn_leaves(cells)
        if len(leaves) < MIN_LEAVES:
            raise NasSearchError(f"nasfcos neck: {len(leaves)} leaf cells, need {MIN_LEAVES}")
        self.output_leaves = tuple(leaves[-3:])  # -> P5, P4, P3
        self.extra_leaves = tuple(leaves[:-3])  # added into each of them
        self.p6 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        for conv in [m[0] for m in self.adapt.values()] + [self.p6, self.p7]:
            nn.init.kaiming_uniform_(conv.weight, a=1)  # Caffe2 Xavier, as both implementations
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """[C2, C3, C4, C5] (or [C3, C4, C5]) -> [P3, P4, P5, P6, P7]."""
        expected = NUM_BACKBONE - self.first_level
        if len(feats) != expected:
            raise NasSearchError(
                f"nasfcos neck: got {len(feats)} feature maps, expected {expected}"
            )
        pool: list[Tensor | None] = [None] * NUM_BACKBONE
        for name, adapt in self.adapt.items():
            i = BACKBONE_NAMES.index(name)
            pool[i] = adapt(feats[i - self.first_level])
        for (in1, in2), cell in zip(self.cell_inputs, self.cells, strict=True):
            pool.append(cell(pool[in1], pool[in2]))
        outs = []
        # Newest leaf -> P3 sized like C3, ..., oldest of the three -> P5 sized like C5.
        for leaf, ref in zip(reversed(self.output_leaves), feats[-3:], strict=True):
            x = pool[leaf]
            for extra in self.extra_leaves:
                x = x + resize(pool[extra], x.shape[-2:], "bilinear")
            outs.append(resize(x, ref.shape[-2:], "bilinear"))
        p6 = self.p6(outs[-1])
        return outs + [p6, self.p7(F.relu(p6))]
