"""FCOS: anchor-free one-stage detector (Tian et al., ICCV 2019) with a replaceable head.

The detector owns points, target assignment, losses and inference; the head is any module whose
forward maps the 5 neck levels to (cls_logits, bbox_reg, centerness) per-level lists, so a searched
NAS-FCOS head can replace `FCOSHead`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nassearch.detectors.boxes import batched_nms, clip_boxes, decode_distances, encode_distances
from nassearch.detectors.dense import PYRAMID_STRIDES, DenseDetector, loss_and_inference_settings
from nassearch.detectors.losses import iou_loss, sigmoid_focal_loss
from nassearch.detectors.ops.norm import norm_layer
from nassearch.errors import NasSearchError

if TYPE_CHECKING:
    from nassearch.config import FCOSConfig

INF = float("inf")
DEFAULT_REGRESS_RANGES = ((-1.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, INF))
BOX_LOSSES = ("log", "linear", "giou")
HeadOutputs = tuple[list[Tensor], list[Tensor], list[Tensor]]


class Scale(nn.Module):
    """Learnable scalar multiplier, one per pyramid level (FCOS Sec. 3.1: exp(s_i x))."""

    def __init__(self, init: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class FCOSHead(nn.Module):
    """Standard FCOS head: two towers of 3x3 conv-norm-ReLU, shared across levels, and 3x3 predictors.

    Tower convs have no bias when a norm follows (the norm's shift makes it redundant; official FCOS
    keeps bias=True with GN, which changes nothing but the parameter count).
    """

    @classmethod
    def from_config(cls, cfg: FCOSConfig, in_channels: int, num_classes: int) -> FCOSHead:
        return cls(
            in_channels,
            num_classes,
            num_convs=cfg.num_convs,
            feat_channels=cfg.feat_channels,
            norm=cfg.head_norm,
            centerness_on=cfg.centerness_on,
            num_levels=len(PYRAMID_STRIDES),
            strides=PYRAMID_STRIDES,
        )

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_convs: int = 4,
        feat_channels: int = 256,
        norm: str | None = "gn",
        centerness_on: str = "cls",
        num_levels: int = 5,
        prior_prob: float = 0.01,
        strides: Sequence[int] = PYRAMID_STRIDES,
    ) -> None:
        super().__init__()
        if centerness_on not in ("cls", "reg"):
            raise NasSearchError(f"FCOSHead: centerness_on={centerness_on!r} (use 'cls' or 'reg')")
        if len(strides) != num_levels:
            raise NasSearchError(
                f"FCOSHead: {len(strides)} strides {tuple(strides)} for num_levels={num_levels}"
            )
        self.num_classes = num_classes
        self.num_levels = num_levels
        self.strides = tuple(int(s) for s in strides)
        self.centerness_on = centerness_on
        self.cls_tower = self._tower(in_channels, feat_channels, num_convs, norm)
        self.reg_tower = self._tower(in_channels, feat_channels, num_convs, norm)
        tower_out = feat_channels if num_convs > 0 else in_channels
        self.cls_logits = nn.Conv2d(tower_out, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(tower_out, 4, 3, padding=1)
        self.centerness = nn.Conv2d(tower_out, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in range(num_levels))
        self._init_weights(prior_prob)

    @staticmethod
    def _tower(in_channels: int, channels: int, num_convs: int, norm: str | None) -> nn.Sequential:
        layers: list[nn.Module] = []
        for i in range(num_convs):
            cin = in_channels if i == 0 else channels
            layers += [
                nn.Conv2d(cin, channels, 3, padding=1, bias=norm is None),
                norm_layer(norm, channels, where="FCOSHead"),
                nn.ReLU(inplace=True),
            ]
        return nn.Sequential(*layers)

    def _init_weights(self, prior_prob: float) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # Focal-loss prior (RetinaNet Sec. 4.1): every location starts at foreground probability prior_prob.
        nn.init.constant_(self.cls_logits.bias, -math.log((1.0 - prior_prob) / prior_prob))

    def forward(self, feats: Sequence[Tensor]) -> HeadOutputs:
        """Per-level (cls logits [B,C,H,W], positive ltrb distances in pixels [B,4,H,W], centerness [B,1,H,W])."""
        if len(feats) != self.num_levels:
            raise NasSearchError(
                f"FCOSHead: got {len(feats)} feature levels, expected {self.num_levels}"
            )
        cls_out, reg_out, ctr_out = [], [], []
        for level, x in enumerate(feats):
            cls_feat = self.cls_tower(x)
            reg_feat = self.reg_tower(x)
            cls_out.append(self.cls_logits(cls_feat))
            reg_out.append(torch.exp(self.scales[level](self.bbox_pred(reg_feat))))
            ctr_feat = cls_feat if self.centerness_on == "cls" else reg_feat
            ctr_out.append(self.centerness(ctr_feat))
        return cls_out, reg_out, ctr_out


def level_points(
    height: int, width: int, stride: int, device: torch.device | None = None
) -> Tensor:
    """Image coordinates [H*W, 2] (x, y) of a level's locations, y-major to match (B,C,H,W)->(B,H*W,C)."""
    ys = torch.arange(height, device=device, dtype=torch.float32) * stride + stride // 2
    xs = torch.arange(width, device=device, dtype=torch.float32) * stride + stride // 2
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def centerness_targets(ltrb: Tensor) -> Tensor:
    """FCOS Eq. 3: sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b)) for ltrb [N,4] -> [N]."""
    lr = ltrb[:, [0, 2]]
    tb = ltrb[:, [1, 3]]
    ratio = (lr.min(dim=1).values / lr.max(dim=1).values) * (
        tb.min(dim=1).values / tb.max(dim=1).values
    )
    return ratio.clamp(min=0).sqrt()


def fcos_targets(
    points: Tensor,
    point_strides: Tensor,
    point_ranges: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    center_sampling: bool = False,
    center_sampling_radius: float = 1.5,
) -> tuple[Tensor, Tensor]:
    """Assign each point a class (-1 = background) and ltrb distances to its GT (FCOS Sec. 3.1-3.2).

    points [P,2], point_strides [P], point_ranges [P,2] (the level's regress range per point);
    a point is positive when inside the box (or its centre region) and its max distance lies in the
    range; ambiguous points take the GT of minimal area.
    """
    num_points, num_gts = points.shape[0], gt_boxes.shape[0]
    labels = torch.full((num_points,), -1, dtype=torch.int64, device=points.device)
    if num_gts == 0:
        return labels, points.new_zeros((num_points, 4))
    flat_points = points[:, None, :].expand(num_points, num_gts, 2).reshape(-1, 2)
    flat_boxes = gt_boxes[None, :, :].expand(num_points, num_gts, 4).reshape(-1, 4)
    ltrb = encode_distances(flat_points, flat_boxes).reshape(num_points, num_gts, 4)

    if center_sampling:
        # Centre region of radius r*stride around the box centre, clipped to the box (FCOS improvements).
        centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2  # [G,2]
        radius = (point_strides * center_sampling_radius)[:, None, None]  # [P,1,1]
        lo = torch.maximum(centers[None] - radius, gt_boxes[None, :, :2])
        hi = torch.minimum(centers[None] + radius, gt_boxes[None, :, 2:])
        region = torch.cat([points[:, None] - lo, hi - points[:, None]], dim=2)
        inside = region.min(dim=2).values > 0
    else:
        inside = ltrb.min(dim=2).values > 0

    max_dist = ltrb.max(dim=2).values
    in_range = (max_dist >= point_ranges[:, None, 0]) & (max_dist <= point_ranges[:, None, 1])

    areas = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
    areas = areas[None].expand(num_points, num_gts).clone()
    areas[~(inside & in_range)] = INF
    min_area, gt_idx = areas.min(dim=1)
    positive = min_area < INF
    labels[positive] = gt_labels[gt_idx[positive]].to(torch.int64)
    box_targets = ltrb[torch.arange(num_points, device=points.device), gt_idx]
    return labels, box_targets


def _flatten_levels(tensors: Sequence[Tensor]) -> Tensor:
    """[B,C,H,W] per level -> [B, sum(H*W), C] (y-major within a level, levels in order)."""
    return torch.cat([t.flatten(2).transpose(1, 2) for t in tensors], dim=1)


class FCOS(DenseDetector):
    """FCOS detector: backbone -> neck (5 levels) -> head; FCOS targets, losses and inference."""

    @classmethod
    def from_config(
        cls,
        cfg: FCOSConfig,
        backbone: nn.Module,
        neck: nn.Module,
        head: nn.Module,
        num_classes: int,
    ) -> FCOS:
        """The detector a `model` section describes, around injected parts.

        Args:
            cfg: the `model` section (target assignment, losses, inference).
            backbone: returns the features `neck` reads.
            neck: returns P3-P7 with `neck.out_channels` channels.
            head: the stock `FCOSHead.from_config(...)` or a searched head with the same outputs.
            num_classes: number of foreground classes.
        """
        return cls(
            backbone,
            neck,
            head,
            num_classes,
            strides=PYRAMID_STRIDES,
            regress_ranges=tuple(tuple(r) for r in cfg.regress_ranges),
            center_sampling=cfg.center_sampling,
            center_sampling_radius=cfg.center_sampling_radius,
            box_loss=cfg.box_loss,
            **loss_and_inference_settings(cfg),
        )

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        head: nn.Module,
        num_classes: int,
        *,
        strides: Sequence[int] = PYRAMID_STRIDES,
        regress_ranges: Sequence[tuple[float, float]] = DEFAULT_REGRESS_RANGES,
        center_sampling: bool = False,
        center_sampling_radius: float = 1.5,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        box_loss: str = "giou",
        score_thresh: float = 0.05,
        nms_thresh: float = 0.6,
        topk_candidates: int = 1000,
        detections_per_img: int = 100,
    ) -> None:
        super().__init__()
        if len(regress_ranges) != len(strides):
            raise NasSearchError(
                f"FCOS: {len(regress_ranges)} regress_ranges for {len(strides)} strides {tuple(strides)}"
            )
        if box_loss not in BOX_LOSSES:
            raise NasSearchError(
                f"FCOS: box_loss={box_loss!r} (use one of {', '.join(BOX_LOSSES)})"
            )
        head_strides = getattr(head, "strides", None)
        if head_strides is not None and tuple(head_strides) != tuple(strides):
            raise NasSearchError(f"FCOS: head strides {tuple(head_strides)} != {tuple(strides)}")
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.num_classes = num_classes
        self.strides = tuple(int(s) for s in strides)
        self.regress_ranges = tuple((float(lo), float(hi)) for lo, hi in regress_ranges)
        self.center_sampling = center_sampling
        self.center_sampling_radius = center_sampling_radius
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.box_loss = box_loss
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.topk_candidates = topk_candidates
        self.detections_per_img = detections_per_img

    def head_outputs(self, feats: Sequence[Tensor]) -> HeadOutputs:
        """Raw per-level (cls_logits, bbox_reg, centerness) from backbone features."""
        levels = self.neck(feats)
        if len(levels) != len(self.strides):
            raise NasSearchError(f"FCOS: neck gave {len(levels)} levels for strides {self.strides}")
        cls_logits, bbox_reg, centerness = self.head(levels)
        return list(cls_logits), list(bbox_reg), list(centerness)

    def points(self, outputs: HeadOutputs) -> list[Tensor]:
        """Per-level point coordinates [H*W,2] for the given head outputs."""
        return [
            level_points(t.shape[-2], t.shape[-1], s, device=t.device)
            for t, s in zip(outputs[0], self.strides, strict=True)
        ]

    def targets(self, points: list[Tensor], targets: list[dict]) -> tuple[Tensor, Tensor]:
        """Stacked per-image (labels [B,P] with -1 background, ltrb [B,P,4]) for all levels."""
        device = points[0].device
        all_points = torch.cat(points)
        strides = torch.cat(
            [
                torch.full((len(p),), float(s), device=device)
                for p, s in zip(points, self.strides, strict=True)
            ]
        )
        ranges = torch.cat(
            [
                torch.tensor(r, device=device).expand(len(p), 2)
                for p, r in zip(points, self.regress_ranges, strict=True)
            ]
        )
        labels, ltrbs = [], []
        for target in targets:
            boxes = target["boxes"].to(device=device, dtype=torch.float32).reshape(-1, 4)
            gt_labels = target["labels"].to(device=device).reshape(-1)
            lab, ltrb = fcos_targets(
                all_points,
                strides,
                ranges,
                boxes,
                gt_labels,
                self.center_sampling,
                self.center_sampling_radius,
            )
            labels.append(lab)
            ltrbs.append(ltrb)
        return torch.stack(labels), torch.stack(ltrbs)

    def loss(
        self, outputs: HeadOutputs, targets: list[dict], image_shape: tuple[int, int]
    ) -> dict[str, Tensor]:
        """Focal cls loss, centerness-weighted IoU box loss, centerness BCE (FCOS Sec. 3)."""
        cls_logits, bbox_reg, centerness = outputs
        points = self.points(outputs)
        labels, ltrb_targets = self.targets(points, targets)  # [B,P], [B,P,4]
        cls_flat = _flatten_levels(cls_logits).float()  # [B,P,C]
        reg_flat = _flatten_levels(bbox_reg).float()  # [B,P,4]
        ctr_flat = _flatten_levels(centerness).float()[..., 0]  # [B,P]
        if cls_flat.shape[-1] != self.num_classes:
            raise NasSearchError(
                f"FCOS: head predicts {cls_flat.shape[-1]} classes, detector has {self.num_classes}"
            )

        positive = labels >= 0
        pos_targets = ltrb_targets[positive]
        ctr_targets = centerness_targets(pos_targets)
        # Both normalisers are entered on every rank (DDP all-reduce), even one without positives.
        normaliser = self.global_count(positive.sum()).clamp(min=1.0)
        ctr_normaliser = self.global_count(ctr_targets.sum()).clamp(min=1e-6)
        cls_targets = torch.zeros_like(cls_flat)
        cls_targets[positive, labels[positive]] = 1.0
        loss_cls = (
            sigmoid_focal_loss(
                cls_flat,
                cls_targets,
                alpha=self.focal_alpha,
                gamma=self.focal_gamma,
                reduction="sum",
            )
            / normaliser
        )

        if pos_targets.shape[0] == 0:
            # Keep the graph connected so backward works on images without boxes.
            zero = reg_flat.sum() * 0.0 + ctr_flat.sum() * 0.0
            return {"loss_cls": loss_cls, "loss_box": zero, "loss_centerness": zero.clone()}

        all_points = torch.cat(points)[None].expand(labels.shape[0], -1, -1)[positive]
        pred_boxes = decode_distances(all_points, reg_flat[positive])
        target_boxes = decode_distances(all_points, pos_targets)
        loss_box = (
            iou_loss(
                pred_boxes, target_boxes, weight=ctr_targets, mode=self.box_loss, reduction="sum"
            )
            / ctr_normaliser
        )
        loss_ctr = (
            F.binary_cross_entropy_with_logits(ctr_flat[positive], ctr_targets, reduction="sum")
            / normaliser
        )
        return {"loss_cls": loss_cls, "loss_box": loss_box, "loss_centerness": loss_ctr}

    @torch.no_grad()
    def postprocess(
        self,
        outputs: HeadOutputs,
        image_shape: tuple[int, int],
        targets: list[dict] | None = None,
    ) -> list[dict]:
        """Per image: threshold, top-k by cls*centerness per level, decode, sqrt score, clip, class-aware NMS."""
        cls_logits, bbox_reg, centerness = outputs
        points = self.points(outputs)
        results = []
        for i in range(cls_logits[0].shape[0]):
            boxes_all, scores_all, labels_all = [], [], []
            for level, pts in enumerate(points):
                scores = cls_logits[level][i].float().flatten(1).t().sigmoid()  # [HW,C]
                ctr = centerness[level][i].float().flatten().sigmoid()  # [HW]
                reg = bbox_reg[level][i].float().flatten(1).t()  # [HW,4]
                point_idx, cls_idx = torch.nonzero(scores > self.score_thresh, as_tuple=True)
                combined = scores[point_idx, cls_idx] * ctr[point_idx]
                k = min(self.topk_candidates, combined.numel())
                combined, order = combined.topk(k)
                point_idx, cls_idx = point_idx[order], cls_idx[order]
                boxes_all.append(decode_distances(pts[point_idx], reg[point_idx]))
                scores_all.append(combined.sqrt())
                labels_all.append(cls_idx)
            boxes = torch.cat(boxes_all)
            scores = torch.cat(scores_all)
            labels = torch.cat(labels_all).to(torch.int64)
            size = targets[i].get("img_size", image_shape) if targets is not None else image_shape
            boxes = clip_boxes(boxes, (int(size[0]), int(size[1])))
            keep = batched_nms(
                boxes, scores, labels, self.nms_thresh, max_keep=self.detections_per_img
            )
            results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return results
