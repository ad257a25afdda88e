"""Detection losses: sigmoid focal loss, (smooth) L1 and IoU-family box losses.

Every loss takes `reduction` in {"none", "sum", "mean"}; detectors use "sum" and divide by the
number of positives themselves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from nassearch.detectors.boxes import paired_giou, paired_iou
from nassearch.errors import NasSearchError

_REDUCTIONS = ("none", "sum", "mean")
_IOU_MODES = ("log", "linear", "giou")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    raise NasSearchError(f"losses: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def sigmoid_focal_loss(
    logits: Tensor,
    targets: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "sum",
) -> Tensor:
    """Focal loss (Lin et al. 2017, eq. 5): -alpha_t (1 - p_t)^gamma log(p_t), element-wise.

    `targets` has the logits' shape (one-hot or soft in [0, 1]); alpha < 0 disables alpha weighting.
    """
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return _reduce(loss, reduction)


def smooth_l1_loss(
    pred: Tensor, target: Tensor, beta: float = 1.0 / 9, reduction: str = "sum"
) -> Tensor:
    """Huber-style smooth L1: 0.5 d^2 / beta for |d| < beta, else |d| - 0.5 beta (beta=0 is L1)."""
    diff = (pred - target).abs()
    if beta <= 0:
        return _reduce(diff, reduction)
    loss = torch.where(diff < beta, 0.5 * diff**2 / beta, diff - 0.5 * beta)
    return _reduce(loss, reduction)


def l1_loss(pred: Tensor, target: Tensor, reduction: str = "sum") -> Tensor:
    """Element-wise absolute error."""
    return _reduce((pred - target).abs(), reduction)


def iou_loss(
    pred_boxes: Tensor,
    target_boxes: Tensor,
    weight: Tensor | None = None,
    mode: str = "log",
    reduction: str = "sum",
    eps: float = 1e-6,
) -> Tensor:
    """IoU loss per box pair: "log" = -log(IoU) (UnitBox, official FCOS), "linear" = 1 - IoU,
    "giou" = 1 - GIoU. `weight` [N] scales each pair (e.g. FCOS centerness) before reduction."""
    if mode == "log":
        loss = -torch.log(paired_iou(pred_boxes, target_boxes).clamp(min=eps))
    elif mode == "linear":
        loss = 1 - paired_iou(pred_boxes, target_boxes)
    elif mode == "giou":
        loss = 1 - paired_giou(pred_boxes, target_boxes)
    else:
        raise NasSearchError(f"losses: iou_loss mode must be one of {_IOU_MODES}, got {mode!r}")
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


def giou_loss(
    pred_boxes: Tensor,
    target_boxes: Tensor,
    weight: Tensor | None = None,
    reduction: str = "sum",
) -> Tensor:
    """1 - GIoU per box pair (Rezatofighi et al. 2019)."""
    return iou_loss(pred_boxes, target_boxes, weight=weight, mode="giou", reduction=reduction)
