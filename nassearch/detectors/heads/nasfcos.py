"""NAS-FCOS's searched head (Wang et al., CVPR 2020): per-level then shared op layers, FCOS
predictors; built from a `NASFCOSGenotype`'s head (see `search_spaces/nasfcos.py`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nassearch.detectors.dense import PYRAMID_STRIDES
from nassearch.detectors.fcos import HeadOutputs, Scale
from nassearch.detectors.ops.nasfcos_ops import build_head_op
from nassearch.detectors.registry import SEARCHED_HEADS
from nassearch.errors import NasSearchError
from nassearch.search_spaces import Genotype
from nassearch.search_spaces.nasfcos import HeadGenotype, NASFCOSGenotype

__all__ = ["NASFCOSHead"]


@SEARCHED_HEADS.register("nasfcos")
class NASFCOSHead(nn.Module):
    """Searched FCOS head: per-level layers (< share), shared layers (>= share), FCOS predictors.

    Drop-in for `FCOSHead`: same forward triple and `num_classes`, `num_levels`, `strides`,
    `centerness_on`, `scales` attributes. Op convs keep PyTorch's default init (released code);
    predictors get N(0, 0.01) weights, zero bias and the focal prior on the class bias.
    """

    @staticmethod
    def searched_by(genotype: Genotype) -> bool:
        """Whether the genotype names a head (part `head` or `both`), not only an FPN."""
        return isinstance(genotype, NASFCOSGenotype) and genotype.head is not None

    @classmethod
    def from_config(
        cls,
        genotype: Genotype,
        in_channels: int,
        num_classes: int,
        *,
        strides: Sequence[int] = PYRAMID_STRIDES,
    ) -> NASFCOSHead:
        """The genotype's searched head (GroupNorm(32) after every op but skip_connect)."""
        if not cls.searched_by(genotype):
            raise NasSearchError("nasfcos genotype: has no head to build")
        return cls(
            in_channels,
            num_classes,
            genotype.head.ops,
            genotype.head.share,
            strides=strides,
            num_levels=len(strides),
        )

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        ops: Sequence[str],
        share: int,
        *,
        strides: Sequence[int] = PYRAMID_STRIDES,
        num_levels: int = 5,
        prior_prob: float = 0.01,
        norm: str = "gn",
        gn_groups: int = 32,
    ) -> None:
        super().__init__()
        head = HeadGenotype(tuple(ops), share)
        if len(strides) != num_levels:
            raise NasSearchError(
                f"nasfcos head: {len(strides)} strides {tuple(strides)} for num_levels={num_levels}"
            )
        self.num_classes = num_classes
        self.num_levels = num_levels
        self.strides = tuple(int(s) for s in strides)
        self.centerness_on = "cls"
        self.ops, self.share = head.ops, head.share

        def layers(names: Sequence[str]) -> nn.Sequential:
            return nn.Sequential(*(build_head_op(n, in_channels, norm, gn_groups) for n in names))

        per_level, shared = head.ops[: head.share], head.ops[head.share :]
        self.cls_levels = nn.ModuleList(layers(per_level) for _ in range(num_levels))
        self.reg_levels = nn.ModuleList(layers(per_level) for _ in range(num_levels))
        self.cls_shared = layers(shared)
        self.reg_shared = layers(shared)
        self.cls_logits = nn.Conv2d(in_channels, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(in_channels, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in range(num_levels))
        for conv in (self.cls_logits, self.bbox_pred, self.centerness):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        bias = -torch.log(torch.tensor((1.0 - prior_prob) / prior_prob))
        nn.init.constant_(self.cls_logits.bias, float(bias))

    def forward(self, feats: Sequence[Tensor]) -> HeadOutputs:
        """Per-level (cls logits [B,C,H,W], positive ltrb distances [B,4,H,W], centerness [B,1,H,W])."""
        if len(feats) != self.num_levels:
            raise NasSearchError(
                f"nasfcos head: got {len(feats)} feature levels, expected {self.num_levels}"
            )
        cls_out, reg_out, ctr_out = [], [], []
        for level, x in enumerate(feats):
            cls_feat = self.cls_shared(self.cls_levels[level](x))
            reg_feat = self.reg_shared(self.reg_levels[level](x))
            cls_out.append(self.cls_logits(cls_feat))
            reg_out.append(torch.exp(self.scales[level](self.bbox_pred(reg_feat))))
            ctr_out.append(self.centerness(cls_feat))
        return cls_out, reg_out, ctr_out
