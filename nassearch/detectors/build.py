"""Detectors from a config: ResNet backbone + registered neck + RetinaNet or FCOS head.

The searched architecture is an argument (`genotype`), not part of the config: a search trial
builds its candidate with the search config's detector settings and the sampled genotype, and a
retrain config's own `model.genotype` is used only when none is passed.
"""

from __future__ import annotations

import torch
from torch import nn

import nassearch.detectors.heads  # noqa: F401  (registers the searched heads)
import nassearch.detectors.necks  # noqa: F401  (registers the necks)
from nassearch.config import BackboneConfig, FCOSConfig, RetinaNetConfig, neck_config
from nassearch.detectors.backbones import ResNet, build_backbone
from nassearch.detectors.fcos import FCOS, FCOSHead
from nassearch.detectors.registry import NECKS, SEARCHED_HEADS
from nassearch.detectors.retinanet import RetinaNet
from nassearch.search_spaces import Genotype, resolve_genotype

ModelConfig = RetinaNetConfig | FCOSConfig


def model_genotype(cfg: ModelConfig) -> Genotype | None:
    """The searched architecture a model config names (None for a plain FPN); resolved when the
    config was loaded, so a named genotype or an arch file is read once."""
    if cfg.neck.type == "fpn":
        return None
    resolved = cfg.resolved_genotype()
    return resolved if resolved is not None else resolve_genotype(cfg.genotype, cfg.neck.type)


def backbone_indices(neck_type: str) -> tuple[int, ...]:
    """The backbone stages (0-based, C2 = 0) the neck registered as `neck_type` reads."""
    return NECKS.get(neck_type).backbone_indices


def backbone_from_config(cfg: BackboneConfig, out_indices: tuple[int, ...] = (2, 3, 4)) -> ResNet:
    return build_backbone(
        cfg.depth,
        weights=cfg.weights,
        out_indices=out_indices,
        frozen_stages=cfg.frozen_stages,
        norm_eval=cfg.norm_eval,
        freeze_norm=cfg.freeze_norm,
        style=cfg.style,
    )


def _backbone_and_neck(
    cfg: ModelConfig, genotype: Genotype | None, default_extra: str
) -> tuple[ResNet, nn.Module]:
    kind = genotype.space if genotype is not None else "fpn"
    neck_cls = NECKS.get(kind)
    # The genotype names the neck. A section of another type (a search config's plain FPN)
    # lends it only its width: the search's own neck options come with `candidate_model()`.
    neck_cfg = (
        cfg.neck
        if cfg.neck.type == kind
        else neck_config(kind, {"out_channels": cfg.neck.out_channels})
    )
    backbone = backbone_from_config(cfg.backbone, neck_cls.backbone_indices)
    neck = neck_cls.from_config(
        neck_cfg, backbone.out_channels, genotype, default_extra=default_extra
    )
    return backbone, neck


def build_retinanet(cfg: RetinaNetConfig, num_classes: int, genotype: Genotype | None) -> RetinaNet:
    backbone, neck = _backbone_and_neck(cfg, genotype, "input")
    return RetinaNet.from_config(cfg, backbone, neck, num_classes)


def build_fcos(cfg: FCOSConfig, num_classes: int, genotype: Genotype | None) -> FCOS:
    backbone, neck = _backbone_and_neck(cfg, genotype, "output")
    searched = (
        SEARCHED_HEADS.get(genotype.space)
        if genotype is not None and genotype.space in SEARCHED_HEADS
        else None
    )
    if searched is not None and searched.searched_by(genotype):
        # A searched head (NAS-FCOS) replaces the stock towers; same outputs.
        head = searched.from_config(genotype, neck.out_channels, num_classes)
    else:
        head = FCOSHead.from_config(cfg, neck.out_channels, num_classes)
    return FCOS.from_config(cfg, backbone, neck, head, num_classes)


def build_detector(
    cfg: ModelConfig,
    num_classes: int,
    genotype: Genotype | None = None,
    *,
    seed: int | None = None,
) -> nn.Module:
    """Build the detector named by `cfg.type` for `num_classes` contiguous labels.

    Args:
        cfg: the `model` section: detector type, backbone, neck options, head.
        num_classes: number of foreground classes.
        genotype: the searched architecture; its space names the neck (and, for NAS-FCOS head
            searches, the head). None: the config's own `model.genotype`, or a plain FPN.
        seed: initialise the weights from this seed without touching the caller's RNG, so the
            same architecture starts from the same weights in the search driver and any trial.
    """
    if genotype is None:
        genotype = model_genotype(cfg)
    build = build_retinanet if cfg.type == "retinanet" else build_fcos
    if seed is None:
        return build(cfg, num_classes, genotype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(cfg, num_classes, genotype)
