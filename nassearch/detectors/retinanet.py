"""RetinaNet (Lin et al. 2017, "Focal Loss for Dense Object Detection") on any backbone and neck.

The detector follows the Detector contract: `forward_features` takes backbone features so that a
proxy trainer can feed cached features; training returns {"loss_cls", "loss_box"}, evaluation a
list of {"boxes", "scores", "labels"} per image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from nassearch.detectors.anchors import AnchorGenerator
from nassearch.detectors.boxes import (
    DeltaXYWHCoder,
    batched_nms,
    box_iou_batched,
    clip_boxes,
)
from nassearch.detectors.dense import PYRAMID_STRIDES, DenseDetector, loss_and_inference_settings
from nassearch.detectors.losses import giou_loss, l1_loss, sigmoid_focal_loss, smooth_l1_loss
from nassearch.detectors.ops.norm import norm_layer
from nassearch.errors import NasSearchError

if TYPE_CHECKING:
    from nassearch.config import RetinaNetConfig

# Assignment codes for anchors that match no ground-truth box.
NEGATIVE = -1
IGNORE = -2

_NORMS = (None, "bn", "gn")
_BOX_LOSSES = ("smooth_l1", "l1", "giou")


class RetinaNetHead(nn.Module):
    """Classification and box towers shared across pyramid levels (paper, section 4, Fig. 3).

    Each tower is `num_convs` x (3x3 conv [+ norm] + ReLU). With `separate_norm_per_level` the conv
    weights stay shared while every level gets its own norm layers, as in NAS-FPN's RetinaNet head.
    """

    @classmethod
    def from_config(
        cls, cfg: RetinaNetConfig, in_channels: int, num_classes: int, num_anchors: int
    ) -> RetinaNetHead:
        return cls(
            in_channels,
            num_classes,
            num_anchors=num_anchors,
            num_convs=cfg.num_convs,
            feat_channels=cfg.feat_channels,
            norm=cfg.head_norm,
            separate_norm_per_level=cfg.separate_norm_per_level,
            num_levels=len(PYRAMID_STRIDES),
        )

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_anchors: int = 9,
        num_convs: int = 4,
        feat_channels: int = 256,
        norm: str | None = None,
        separate_norm_per_level: bool = False,
        num_levels: int = 5,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        if norm not in _NORMS:
            raise NasSearchError(f"retinanet head: norm must be one of {_NORMS}, got {norm!r}")
        if not 0 < prior_prob < 1:
            raise NasSearchError(f"retinanet head: prior_prob must be in (0, 1), got {prior_prob}")
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        self.norm = norm
        self.separate_norm_per_level = bool(separate_norm_per_level and norm is not None)
        self.num_levels = num_levels
        self.cls_convs = self._tower_convs(in_channels, feat_channels, num_convs)
        self.box_convs = self._tower_convs(in_channels, feat_channels, num_convs)
        self.cls_norms = self._tower_norms(feat_channels, num_convs)
        self.box_norms = self._tower_norms(feat_channels, num_convs)
        tower_out = feat_channels if num_convs > 0 else in_channels
        self.cls_logits = nn.Conv2d(tower_out, num_anchors * num_classes, 3, padding=1)
        self.box_deltas = nn.Conv2d(tower_out, num_anchors * 4, 3, padding=1)
        self._init_weights(prior_prob)

    def _tower_convs(self, in_channels: int, channels: int, num_convs: int) -> nn.ModuleList:
        # A norm right after the conv makes the conv bias redundant.
        bias = self.norm is None
        return nn.ModuleList(
            nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1, bias=bias)
            for i in range(num_convs)
        )

    def _tower_norms(self, channels: int, num_convs: int) -> nn.ModuleList:
        """Norm layers indexed [level][conv] (one shared "level" unless separate per level)."""
        if self.norm is None:
            return nn.ModuleList()
        copies = self.num_levels if self.separate_norm_per_level else 1
        return nn.ModuleList(
            nn.ModuleList(
                norm_layer(self.norm, channels, fit_groups=True, where="retinanet head")
                for _ in range(num_convs)
            )
            for _ in range(copies)
        )

    def _init_weights(self, prior_prob: float) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # Start every anchor at foreground probability ~prior_prob so the many easy negatives
        # do not swamp the first iterations (paper, section 4.1 "Initialization").
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def _tower(self, x: Tensor, convs: nn.ModuleList, norms: nn.ModuleList, level: int) -> Tensor:
        level_norms = norms[level if self.separate_norm_per_level else 0] if len(norms) else None
        for i, conv in enumerate(convs):
            x = conv(x)
            if level_norms is not None:
                x = level_norms[i](x)
            x = torch.relu(x)
        return x

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: class logits [B, A*C, H, W] and box deltas [B, A*4, H, W]."""
        if self.separate_norm_per_level and len(feats) != self.num_levels:
            raise NasSearchError(
                f"retinanet head: built with per-level norms for {self.num_levels} levels, "
                f"got {len(feats)} feature maps"
            )
        cls_out, box_out = [], []
        for level, x in enumerate(feats):
            cls_out.append(self.cls_logits(self._tower(x, self.cls_convs, self.cls_norms, level)))
            box_out.append(self.box_deltas(self._tower(x, self.box_convs, self.box_norms, level)))
        return cls_out, box_out


def assign_max_iou(
    anchors: Tensor,
    gt_boxes: Tensor,
    pos_iou_thr: float = 0.5,
    neg_iou_thr: float = 0.4,
    min_pos_iou: float = 0.0,
    allow_low_quality_matches: bool = True,
) -> Tensor:
    """Max-IoU assignment: per anchor, the index of its GT box, NEGATIVE (-1) or IGNORE (-2).

    Anchors with max IoU >= pos_iou_thr are positive, < neg_iou_thr negative, in between ignored.
    Low-quality matches: every GT box's best anchors (ties included) become positive when that
    best IoU is >= min_pos_iou and > 0, so that no GT box is left without a positive anchor.
    """
    return assign_max_iou_batched(
        anchors, [gt_boxes], pos_iou_thr, neg_iou_thr, min_pos_iou, allow_low_quality_matches
    )[0]


def assign_max_iou_batched(
    anchors: Tensor,
    gt_boxes: Sequence[Tensor],
    pos_iou_thr: float = 0.5,
    neg_iou_thr: float = 0.4,
    min_pos_iou: float = 0.0,
    allow_low_quality_matches: bool = True,
) -> Tensor:
    """`assign_max_iou` for a batch of images at once: [B, N], each row what that image alone
    would get. Ground-truth lists are padded with IoU -1, which no maximum and no low-quality
    match can pick; ties keep the first index (an anchor that is the best for several GT boxes
    takes the one it overlaps most, the first of equals)."""
    batch, num_anchors = len(gt_boxes), anchors.shape[0]
    most = max((int(g.shape[0]) for g in gt_boxes), default=0)
    if most == 0:
        return torch.full((batch, num_anchors), NEGATIVE, dtype=torch.long, device=anchors.device)
    padded = anchors.new_zeros(batch, most, 4)
    real = torch.zeros(batch, most, dtype=torch.bool, device=anchors.device)
    for i, g in enumerate(gt_boxes):
        padded[i, : g.shape[0]] = g.float()
        real[i, : g.shape[0]] = True
    iou = box_iou_batched(padded, anchors.float())  # [B, M, N]
    iou = torch.where(real[:, :, None], iou, iou.new_tensor(-1.0))
    max_iou, matched = iou.max(dim=1)
    assigned = torch.full_like(matched, IGNORE)
    assigned[max_iou < neg_iou_thr] = NEGATIVE
    positive = max_iou >= pos_iou_thr
    assigned[positive] = matched[positive]
    if allow_low_quality_matches:
        gt_best = iou.max(dim=2, keepdim=True).values  # [B, M, 1]
        eligible = (gt_best >= min_pos_iou) & (gt_best > 0)
        is_best = (iou == gt_best) & eligible
        best_gt = torch.where(is_best, iou, iou.new_tensor(-1.0)).max(dim=1).indices
        low_quality = is_best.any(dim=1)
        assigned[low_quality] = best_gt[low_quality]
    return assigned


def _flatten_levels(outputs: Sequence[Tensor], last: int) -> Tensor:
    """Per-level [B, A*K, H, W] -> [B, sum(H*W*A), K], location-major like the anchors."""
    flat = []
    for x in outputs:
        b, _, h, w = x.shape
        flat.append(x.reshape(b, -1, last, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, last))
    return torch.cat(flat, dim=1)


class RetinaNet(DenseDetector):
    """Single-stage anchor-based detector: backbone -> neck (P3-P7) -> shared RetinaNet head."""

    @classmethod
    def from_config(
        cls, cfg: RetinaNetConfig, backbone: nn.Module, neck: nn.Module, num_classes: int
    ) -> RetinaNet:
        """The detector a `model` section describes, around an injected backbone and neck.

        Args:
            cfg: the `model` section (head, anchors, matching, losses, inference).
            backbone: returns the features `neck` reads.
            neck: returns P3-P7 with `neck.out_channels` channels.
            num_classes: number of foreground classes.
        """
        anchors = AnchorGenerator.from_config(cfg, PYRAMID_STRIDES)
        return cls(
            backbone,
            neck,
            num_classes,
            head=RetinaNetHead.from_config(
                cfg, neck.out_channels, num_classes, anchors.num_anchors
            ),
            anchor_generator=anchors,
            pos_iou_thr=cfg.pos_iou_thr,
            neg_iou_thr=cfg.neg_iou_thr,
            min_pos_iou=cfg.min_pos_iou,
            box_loss=cfg.box_loss,
            smooth_l1_beta=cfg.smooth_l1_beta,
            **loss_and_inference_settings(cfg),
        )

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        num_classes: int,
        *,
        head: nn.Module | None = None,
        head_kwargs: dict | None = None,
        anchor_generator: AnchorGenerator | None = None,
        pos_iou_thr: float = 0.5,
        neg_iou_thr: float = 0.4,
        min_pos_iou: float = 0.0,
        allow_low_quality_matches: bool = True,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        box_loss: str = "smooth_l1",
        smooth_l1_beta: float = 1.0 / 9,
        box_coder_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        topk_candidates: int = 1000,
        detections_per_img: int = 100,
    ) -> None:
        super().__init__()
        if box_loss not in _BOX_LOSSES:
            raise NasSearchError(
                f"retinanet: box_loss must be one of {_BOX_LOSSES}, got {box_loss!r}"
            )
        if neg_iou_thr > pos_iou_thr:
            raise NasSearchError(
                f"retinanet: neg_iou_thr ({neg_iou_thr}) must not exceed pos_iou_thr ({pos_iou_thr})"
            )
        if head is not None and head_kwargs:
            raise NasSearchError("retinanet: pass either head or head_kwargs, not both")
        self.backbone = backbone
        self.neck = neck
        self.num_classes = num_classes
        self.anchor_generator = anchor_generator or AnchorGenerator()
        if head is None:
            head = RetinaNetHead(
                neck.out_channels,
                num_classes,
                num_anchors=self.anchor_generator.num_anchors,
                **(head_kwargs or {}),
            )
        self.head = head
        self.box_coder = DeltaXYWHCoder(box_coder_weights)
        self.pos_iou_thr = pos_iou_thr
        self.neg_iou_thr = neg_iou_thr
        self.min_pos_iou = min_pos_iou
        self.allow_low_quality_matches = allow_low_quality_matches
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.box_loss = box_loss
        self.smooth_l1_beta = smooth_l1_beta
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.topk_candidates = topk_candidates
        self.detections_per_img = detections_per_img

    # ------------------------------------------------------------------------------ forward

    def anchors(self, outputs: tuple[list[Tensor], list[Tensor]]) -> Tensor:
        """All anchors [N, 4] (float32) for the feature-map sizes of `outputs`, levels concatenated."""
        cls_out = outputs[0]
        shapes = tuple(tuple(x.shape[-2:]) for x in cls_out)
        return self.anchor_generator.all_anchors(shapes, cls_out[0].device)

    # --------------------------------------------------------------------------------- loss

    def loss(
        self,
        outputs: tuple[list[Tensor], list[Tensor]],
        targets: list[dict],
        image_shape: tuple[int, int],
    ) -> dict[str, Tensor]:
        """Focal loss over non-ignored anchors and box loss over positives, both / num positives."""
        cls_logits = _flatten_levels(outputs[0], self.num_classes).float()  # [B, N, C]
        box_deltas = _flatten_levels(outputs[1], 4).float()  # [B, N, 4]
        anchors = self.anchors(outputs)
        if len(targets) != cls_logits.shape[0]:
            raise NasSearchError(
                f"retinanet: got {len(targets)} targets for a batch of {cls_logits.shape[0]} images"
            )
        boxes = [t["boxes"].to(anchors.device).float() for t in targets]
        assigned = assign_max_iou_batched(
            anchors,
            boxes,
            self.pos_iou_thr,
            self.neg_iou_thr,
            self.min_pos_iou,
            self.allow_low_quality_matches,
        )  # [B, N]
        positive = assigned >= 0
        num_pos = self.global_count(positive.sum()).clamp(min=1.0)

        # Positives in (image, anchor) order; their boxes and labels from the padded GT lists.
        image_idx, anchor_idx = positive.nonzero(as_tuple=True)
        matched = assigned[image_idx, anchor_idx]
        most = max(int(b.shape[0]) for b in boxes)
        gt_padded = anchors.new_zeros(len(targets), max(most, 1), 4)
        labels_padded = torch.zeros(
            len(targets), max(most, 1), dtype=torch.long, device=anchors.device
        )
        for i, (b, t) in enumerate(zip(boxes, targets, strict=True)):
            gt_padded[i, : b.shape[0]] = b
            labels_padded[i, : b.shape[0]] = t["labels"].to(anchors.device)
        cls_targets = torch.zeros_like(cls_logits)
        cls_targets[image_idx, anchor_idx, labels_padded[image_idx, matched]] = 1.0
        valid = assigned != IGNORE
        loss_cls = sigmoid_focal_loss(
            cls_logits[valid], cls_targets[valid], self.focal_alpha, self.focal_gamma, "sum"
        )

        gt_boxes_t = gt_padded[image_idx, matched]
        pos_anchors_t = anchors[anchor_idx]
        pos_deltas = box_deltas[positive]  # the same (image, anchor) order
        if self.box_loss == "giou":
            pred = self.box_coder.decode(pos_deltas, pos_anchors_t)
            loss_box = giou_loss(pred, gt_boxes_t, reduction="sum")
        else:
            target_deltas = self.box_coder.encode(gt_boxes_t, pos_anchors_t)
            if self.box_loss == "l1":
                loss_box = l1_loss(pos_deltas, target_deltas, reduction="sum")
            else:
                loss_box = smooth_l1_loss(pos_deltas, target_deltas, self.smooth_l1_beta, "sum")
        return {"loss_cls": loss_cls / num_pos, "loss_box": loss_box / num_pos}

    # -------------------------------------------------------------------------- postprocess

    @torch.no_grad()
    def postprocess(
        self,
        outputs: tuple[list[Tensor], list[Tensor]],
        image_shape: tuple[int, int],
        targets: list[dict] | None = None,
    ) -> list[dict[str, Tensor]]:
        """Detections per image: threshold, per-level top-k, decode, clip, class-aware NMS."""
        cls_out, box_out = outputs
        level_anchors = self.anchor_generator.grid_anchors(
            [tuple(x.shape[-2:]) for x in cls_out], cls_out[0].device
        )
        level_logits = [_flatten_levels([x], self.num_classes).float() for x in cls_out]
        level_deltas = [_flatten_levels([x], 4).float() for x in box_out]
        results = []
        for i in range(cls_out[0].shape[0]):
            size = tuple(image_shape)
            if targets is not None and "img_size" in targets[i]:
                size = tuple(targets[i]["img_size"])
            boxes, scores, labels = [], [], []
            for logits, deltas, anchors in zip(
                level_logits, level_deltas, level_anchors, strict=True
            ):
                b, s, lab = self._level_candidates(logits[i], deltas[i], anchors)
                boxes.append(b)
                scores.append(s)
                labels.append(lab)
            boxes_t = clip_boxes(torch.cat(boxes), size)
            scores_t, labels_t = torch.cat(scores), torch.cat(labels)
            keep = batched_nms(
                boxes_t, scores_t, labels_t, self.nms_thresh, max_keep=self.detections_per_img
            )
            results.append(
                {"boxes": boxes_t[keep], "scores": scores_t[keep], "labels": labels_t[keep]}
            )
        return results

    def _level_candidates(
        self, logits: Tensor, deltas: Tensor, anchors: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One image, one level: boxes, scores, labels of the top-k (anchor, class) pairs above threshold."""
        scores = torch.sigmoid(logits).flatten()
        candidates = (scores > self.score_thresh).nonzero(as_tuple=True)[0]
        scores = scores[candidates]
        k = min(self.topk_candidates, scores.numel())
        scores, order = scores.topk(k)
        candidates = candidates[order]
        anchor_idx = torch.div(candidates, self.num_classes, rounding_mode="floor")
        labels = candidates % self.num_classes
        boxes = self.box_coder.decode(deltas[anchor_idx], anchors[anchor_idx])
        return boxes, scores, labels
