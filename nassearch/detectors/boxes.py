"""Box operations on plain tensors ([N,4] xyxy float): IoU/GIoU, box coders, clipping and NMS.

NMS has a pure-PyTorch reference implementation; where `torchvision.ops` imports (GPU machines)
its compiled kernel is used as a fast path with the same semantics.
"""

from __future__ import annotations

import functools
import math
from types import ModuleType

import numpy as np
import torch
from torch import Tensor


def box_area(boxes: Tensor) -> Tensor:
    """Area of each box; degenerate (inverted) boxes count as zero."""
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def _inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Intersection and union areas of two broadcastable box tensors."""
    lt = torch.maximum(boxes1[..., :2], boxes2[..., :2])
    rb = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1) + box_area(boxes2) - inter
    return inter, union


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """num / den, with 0 where den is 0 (two zero-area boxes have IoU 0, not NaN)."""
    return torch.where(
        den > 0, num / den.clamp(min=torch.finfo(den.dtype).tiny), torch.zeros_like(num)
    )


def _iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    inter, union = _inter_union(boxes1, boxes2)
    return _safe_div(inter, union)


def _giou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    # GIoU = IoU - |C \ (A u B)| / |C| with C the smallest enclosing box (Rezatofighi et al. 2019).
    inter, union = _inter_union(boxes1, boxes2)
    iou = _safe_div(inter, union)
    lt = torch.minimum(boxes1[..., :2], boxes2[..., :2])
    rb = torch.maximum(boxes1[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - _safe_div(enclosing - union, enclosing)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU matrix [N,M] between boxes1 [N,4] and boxes2 [M,4]."""
    return _iou(boxes1[:, None, :], boxes2[None, :, :])


def box_iou_batched(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Per image b, `box_iou(boxes1[b], boxes2)`: [B, N, M] from boxes1 [B, N, 4], boxes2 [M, 4]."""
    return _iou(boxes1[:, :, None, :], boxes2[None, None, :, :])


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalized IoU matrix [N,M] (in [-1, 1])."""
    return _giou(boxes1[:, None, :], boxes2[None, :, :])


def paired_iou(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise IoU of a[i] and b[i] ([N]); the diagonal of box_iou without the N*M cost."""
    return _iou(a, b)


def paired_giou(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise GIoU of a[i] and b[i] ([N])."""
    return _giou(a, b)


def clip_boxes(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clip boxes to an image of size (h, w)."""
    h, w = size
    x = boxes[..., 0::2].clamp(min=0, max=w)
    y = boxes[..., 1::2].clamp(min=0, max=h)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


class DeltaXYWHCoder:
    """RetinaNet / Faster R-CNN box coder: (dx, dy, dw, dh) of a box relative to an anchor.

    dx = wx * (gx - ax) / aw, dw = ww * log(gw / aw) (same for y, h). `weights` play the role of
    mmdet's 1/target_stds; widths are x2 - x1 (no +1). `clamp` bounds dw, dh before exp (as in
    torchvision) so that early, untrained predictions cannot overflow.
    """

    def __init__(
        self,
        weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
        clamp: float = math.log(1000.0 / 16),
    ) -> None:
        self.weights = tuple(float(w) for w in weights)
        self.clamp = float(clamp)

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """Regression targets [N,4] that turn `anchors` into `boxes`."""
        wx, wy, ww, wh = self.weights
        aw = anchors[..., 2] - anchors[..., 0]
        ah = anchors[..., 3] - anchors[..., 1]
        ax = anchors[..., 0] + 0.5 * aw
        ay = anchors[..., 1] + 0.5 * ah
        # A zero-width GT box would give log(0) = -inf; a tiny floor keeps the target finite.
        gw = (boxes[..., 2] - boxes[..., 0]).clamp(min=1e-6)
        gh = (boxes[..., 3] - boxes[..., 1]).clamp(min=1e-6)
        gx = boxes[..., 0] + 0.5 * (boxes[..., 2] - boxes[..., 0])
        gy = boxes[..., 1] + 0.5 * (boxes[..., 3] - boxes[..., 1])
        dx = wx * (gx - ax) / aw
        dy = wy * (gy - ay) / ah
        dw = ww * torch.log(gw / aw)
        dh = wh * torch.log(gh / ah)
        return torch.stack((dx, dy, dw, dh), dim=-1)

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Boxes from deltas [..., N, 4] and anchors [N, 4] (leading dims broadcast)."""
        wx, wy, ww, wh = self.weights
        anchors = anchors.to(deltas.dtype)
        aw = anchors[..., 2] - anchors[..., 0]
        ah = anchors[..., 3] - anchors[..., 1]
        ax = anchors[..., 0] + 0.5 * aw
        ay = anchors[..., 1] + 0.5 * ah
        dx = deltas[..., 0] / wx
        dy = deltas[..., 1] / wy
        dw = (deltas[..., 2] / ww).clamp(max=self.clamp)
        dh = (deltas[..., 3] / wh).clamp(max=self.clamp)
        cx = dx * aw + ax
        cy = dy * ah + ay
        half_w = 0.5 * torch.exp(dw) * aw
        half_h = 0.5 * torch.exp(dh) * ah
        return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)


def encode_distances(points: Tensor, boxes: Tensor) -> Tensor:
    """FCOS regression targets: distances (left, top, right, bottom) from points [N,2] to box sides."""
    x, y = points[..., 0], points[..., 1]
    return torch.stack(
        (x - boxes[..., 0], y - boxes[..., 1], boxes[..., 2] - x, boxes[..., 3] - y), dim=-1
    )


def decode_distances(points: Tensor, ltrb: Tensor) -> Tensor:
    """Boxes from points [N,2] and (left, top, right, bottom) distances (leading dims broadcast)."""
    x, y = points[..., 0], points[..., 1]
    return torch.stack(
        (x - ltrb[..., 0], y - ltrb[..., 1], x + ltrb[..., 2], y + ltrb[..., 3]), dim=-1
    )


# --------------------------------------------------------------------------------------------- NMS


@functools.lru_cache(maxsize=1)
def _torchvision_ops() -> ModuleType | None:
    """`torchvision.ops` when it imports (with its compiled NMS kernel), else None."""
    try:
        import torchvision.ops

        # Importing can succeed while the C++ op is missing (wheel/torch mismatch): probe it once.
        torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    except Exception:  # any failure means "no fast path"
        return None
    return torchvision.ops


def _overlaps_above(boxes: Tensor, areas: Tensor, rows: Tensor, cols: Tensor, thr: float) -> Tensor:
    """[R, C] bool: IoU(boxes[rows[r]], boxes[cols[c]]) > thr, with few temporaries."""
    a, b = boxes[rows], boxes[cols]
    w = torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0])
    h = torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1])
    inter = w.clamp_(min=0).mul_(h.clamp_(min=0))
    union = areas[rows][:, None] + areas[cols][None, :] - inter
    # 0 / 0 (two zero-area boxes) is NaN, and NaN > thr is False: they never suppress each other.
    return inter.div_(union) > thr


def _nms_reference(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float,
    block_size: int = 512,
    max_keep: int | None = None,
) -> Tensor:
    """Greedy NMS in plain PyTorch (+ NumPy for the sequential scan); ties keep the lower index.

    Boxes are visited by decreasing score in blocks: the overlaps of a block's still-alive boxes with
    all later alive boxes are computed at once, then resolved in order. Memory is O(block * N).
    With `max_keep` the scan stops once that many boxes are kept: greedy NMS's first k kept
    boxes never depend on lower-scored ones, so this equals keeping all and taking the first k.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes = boxes[order]
    areas = box_area(boxes)
    n = boxes.shape[0]
    if max_keep is not None:  # smaller blocks stop sooner; a few more of them cost little
        block_size = min(block_size, max(64, 2 * max_keep))
    alive = np.ones(n, dtype=bool)  # not suppressed by a kept box (yet)
    keep = []
    for start in range(0, n, block_size):
        if max_keep is not None and len(keep) >= max_keep:
            break
        rows = np.flatnonzero(alive[start : start + block_size]) + start
        if rows.size == 0:
            continue
        cols = np.flatnonzero(alive[start:]) + start
        to_dev = functools.partial(torch.as_tensor, dtype=torch.long, device=boxes.device)
        over = _overlaps_above(boxes, areas, to_dev(rows), to_dev(cols), iou_threshold)
        over = over.cpu().numpy()
        kept = _greedy_within_block(over[:, np.searchsorted(cols, rows)])
        keep.extend(rows[kept].tolist())
        alive[cols[over[kept].any(axis=0)]] = False
    return order[torch.as_tensor(keep[:max_keep], dtype=torch.long, device=order.device)]


def _greedy_within_block(over: np.ndarray) -> np.ndarray:
    """Which of R score-ordered boxes greedy NMS keeps, given their [R, R] overlaps.

    Box i is kept iff no kept box j < i overlaps it. That recurrence has one solution; iterating
    it from "all kept" fixes at least one more leading box per pass, and a pass that changes
    nothing has reached it. So a few vectorised passes replace the scan box by box."""
    earlier = np.triu(over, k=1)  # earlier[j, i]: j comes before i and overlaps it
    kept = np.ones(over.shape[0], dtype=bool)
    while True:
        now = ~(earlier & kept[:, None]).any(axis=0)
        if np.array_equal(now, kept):
            return kept
        kept = now


def nms(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float,
    *,
    max_keep: int | None = None,
    use_torchvision: bool | None = None,
) -> Tensor:
    """Greedy NMS: indices of kept boxes by decreasing score; a box is dropped if IoU > threshold
    with a higher-scored kept box. `max_keep`: only the first that many (the same as slicing the
    full result, found sooner). `use_torchvision=None` uses torchvision's kernel when available."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    boxes, scores = boxes.float(), scores.float()
    ops = _torchvision_ops() if use_torchvision is not False else None
    if use_torchvision and ops is None:
        raise RuntimeError("nms: use_torchvision=True but torchvision.ops is not importable")
    if ops is not None:
        return ops.nms(boxes, scores, float(iou_threshold))[:max_keep]
    return _nms_reference(boxes, scores, float(iou_threshold), max_keep=max_keep)


def batched_nms(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    iou_threshold: float,
    *,
    max_keep: int | None = None,
    use_torchvision: bool | None = None,
) -> Tensor:
    """Class-aware NMS: boxes of different labels never suppress each other (`max_keep` as in
    `nms`)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    boxes = boxes.float()
    # Offset trick: shift each class into its own disjoint coordinate range, then run one NMS.
    # The span (max - min + 1) keeps ranges disjoint even for negative coordinates.
    span = boxes.max() - boxes.min() + 1
    offsets = labels.to(boxes) * span
    return nms(
        boxes + offsets[:, None],
        scores,
        iou_threshold,
        max_keep=max_keep,
        use_torchvision=use_torchvision,
    )
