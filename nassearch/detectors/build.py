"""Detectors from a config: ResNet backbone + neck + RetinaNet or FCOS head."""

from __future__ import annotations

import torch
from torch import nn

from nassearch.config import BackboneConfig, FCOSConfig, NeckConfig, RetinaNetConfig
from nassearch.detectors.anchors import AnchorGenerator
from nassearch.detectors.backbones import ResNet, build_backbone
from nassearch.detectors.fcos import FCOS, FCOSHead
from nassearch.detectors.fpn import FPN
from nassearch.detectors.retinanet import RetinaNet, RetinaNetHead
from nassearch.search_spaces import Genotype, get_space, inferred_options, resolve_genotype

STRIDES = (8, 16, 32, 64, 128)
# NAS-FCOS's decoder also reads C2 (stride 4); the others start at C3.
BACKBONE_LEVELS = {"fpn": (2, 3, 4), "nasfpn": (2, 3, 4), "nasfcos": (1, 2, 3, 4)}


def model_genotype(cfg: RetinaNetConfig | FCOSConfig) -> Genotype | None:
    """The searched architecture a model config names (None for a plain FPN)."""
    if cfg.neck.type == "fpn":
        return None
    return resolve_genotype(cfg.genotype, cfg.neck.type)


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


def neck_from_config(
    cfg: NeckConfig, in_channels: list[int], default_extra: str, genotype: Genotype | None
) -> nn.Module:
    """Plain FPN, or the searched neck of `genotype` (NAS-FPN pyramid stack, NAS-FCOS decoder)."""
    if cfg.type == "fpn":
        return FPN(
            in_channels,
            out_channels=cfg.out_channels,
            num_outs=len(STRIDES),
            extra_source=cfg.extra_source or default_extra,
            norm=cfg.norm,
        )
    space = get_space(cfg.type, **inferred_options(genotype.to_dict()))
    if cfg.type == "nasfpn":
        return space.build_neck(
            genotype, in_channels, cfg.out_channels, stacks=cfg.stacks, style=cfg.style
        )
    return space.build_neck(genotype, in_channels, cfg.out_channels, upsample=cfg.upsample)


def build_retinanet(cfg: RetinaNetConfig, num_classes: int) -> RetinaNet:
    genotype = model_genotype(cfg)
    backbone = backbone_from_config(cfg.backbone, BACKBONE_LEVELS[cfg.neck.type])
    neck = neck_from_config(cfg.neck, backbone.out_channels, "input", genotype)
    anchors = AnchorGenerator(
        strides=STRIDES,
        octave_base_scale=cfg.octave_base_scale,
        scales_per_octave=cfg.scales_per_octave,
        ratios=tuple(cfg.ratios),
    )
    head = RetinaNetHead(
        neck.out_channels,
        num_classes,
        num_anchors=anchors.num_anchors,
        num_convs=cfg.num_convs,
        feat_channels=cfg.feat_channels,
        norm=cfg.head_norm,
        separate_norm_per_level=cfg.separate_norm_per_level,
        num_levels=len(STRIDES),
    )
    return RetinaNet(
        backbone,
        neck,
        num_classes,
        head=head,
        anchor_generator=anchors,
        pos_iou_thr=cfg.pos_iou_thr,
        neg_iou_thr=cfg.neg_iou_thr,
        min_pos_iou=cfg.min_pos_iou,
        focal_alpha=cfg.focal_alpha,
        focal_gamma=cfg.focal_gamma,
        box_loss=cfg.box_loss,
        smooth_l1_beta=cfg.smooth_l1_beta,
        score_thresh=cfg.score_thresh,
        nms_thresh=cfg.nms_thresh,
        topk_candidates=cfg.topk_candidates,
        detections_per_img=cfg.detections_per_img,
    )


def build_fcos(cfg: FCOSConfig, num_classes: int) -> FCOS:
    genotype = model_genotype(cfg)
    backbone = backbone_from_config(cfg.backbone, BACKBONE_LEVELS[cfg.neck.type])
    neck = neck_from_config(cfg.neck, backbone.out_channels, "output", genotype)
    if getattr(genotype, "head", None) is not None:
        # NAS-FCOS's searched head replaces the stock 4-conv towers (same outputs).
        head = get_space("nasfcos").build_head(
            genotype, neck.out_channels, num_classes, strides=STRIDES, num_levels=len(STRIDES)
        )
    else:
        head = FCOSHead(
            neck.out_channels,
            num_classes,
            num_convs=cfg.num_convs,
            feat_channels=cfg.feat_channels,
            norm=cfg.head_norm,
            centerness_on=cfg.centerness_on,
            num_levels=len(STRIDES),
            strides=STRIDES,
        )
    return FCOS(
        backbone,
        neck,
        head,
        num_classes,
        strides=STRIDES,
        regress_ranges=tuple(tuple(r) for r in cfg.regress_ranges),
        center_sampling=cfg.center_sampling,
        center_sampling_radius=cfg.center_sampling_radius,
        focal_alpha=cfg.focal_alpha,
        focal_gamma=cfg.focal_gamma,
        box_loss=cfg.box_loss,
        score_thresh=cfg.score_thresh,
        nms_thresh=cfg.nms_thresh,
        topk_candidates=cfg.topk_candidates,
        detections_per_img=cfg.detections_per_img,
    )


def build_detector(
    cfg: RetinaNetConfig | FCOSConfig, num_classes: int, *, seed: int | None = None
) -> nn.Module:
    """Build the detector named by `cfg.type` for `num_classes` contiguous labels.

    With `seed`, weights are initialised from that seed without touching the caller's RNG, so the
    same architecture starts from the same weights in the search driver and in any trial process.
    """
    build = build_retinanet if cfg.type == "retinanet" else build_fcos
    if seed is None:
        return build(cfg, num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(cfg, num_classes)
