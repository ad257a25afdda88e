"""FCOS: points, target assignment, losses, inference and a one-image overfit, against hand-made references."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nassearch.detectors.boxes import box_iou
from nassearch.detectors.fcos import (
    FCOS,
    FCOSHead,
    centerness_targets,
    fcos_targets,
    level_points,
)
from nassearch.errors import NasSearchError

INF = float("inf")


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------- helpers


def _one_level_fcos(num_classes: int = 2, **kwargs) -> FCOS:
    """FCOS with a single stride-8 level covering every object size (for hand-made cases)."""
    head = FCOSHead(8, num_classes, num_convs=0, norm=None, num_levels=1, strides=(8,))
    return FCOS(
        nn.Identity(),
        nn.Identity(),
        head,
        num_classes,
        strides=(8,),
        regress_ranges=((-1.0, INF),),
        **kwargs,
    )


def _assign(fcos: FCOS, sizes: list[tuple[int, int]], boxes, labels):
    """Run the detector's target assignment for one image on maps of the given sizes."""
    points = [level_points(h, w, s) for (h, w), s in zip(sizes, fcos.strides, strict=True)]
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }
    lab, ltrb = fcos.targets(points, [target])
    return torch.cat(points), lab[0], ltrb[0]


def _brute_force_targets(points, strides, ranges, boxes, labels, center_sampling, radius):
    """Python-loop reference of FCOS assignment (inside box / centre region, range, min area)."""
    out_labels, out_ltrb = [], []
    for (x, y), s, (lo, hi) in zip(points.tolist(), strides.tolist(), ranges.tolist(), strict=True):
        best, best_area = None, INF
        for g, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
            dl, dt, dr, db = x - x1, y - y1, x2 - x, y2 - y
            if center_sampling:
                cx, cy, rad = (x1 + x2) / 2, (y1 + y2) / 2, radius * s
                rx1, ry1 = max(x1, cx - rad), max(y1, cy - rad)
                rx2, ry2 = min(x2, cx + rad), min(y2, cy + rad)
                inside = rx1 < x < rx2 and ry1 < y < ry2
            else:
                inside = min(dl, dt, dr, db) > 0
            in_range = lo <= max(dl, dt, dr, db) <= hi
            area = (x2 - x1) * (y2 - y1)
            if inside and in_range and area < best_area:
                best, best_area = g, area
        if best is None:
            out_labels.append(-1)
            out_ltrb.append(None)
        else:
            x1, y1, x2, y2 = boxes[best].tolist()
            out_labels.append(int(labels[best]))
            out_ltrb.append((x - x1, y - y1, x2 - x, y2 - y))
    return out_labels, out_ltrb


class TinyBackbone(nn.Module):
    """Three stride-2 stages to stride 8, then C4 and C5 (strides 16, 32)."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        c = channels
        self.c3 = nn.Sequential(
            nn.Conv2d(3, c, 3, 2, 1), nn.ReLU(), nn.Conv2d(c, c, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(c, c, 3, 2, 1), nn.ReLU(),
        )  # fmt: skip
        self.c4 = nn.Sequential(nn.Conv2d(c, c, 3, 2, 1), nn.ReLU())
        self.c5 = nn.Sequential(nn.Conv2d(c, c, 3, 2, 1), nn.ReLU())
        self.out_channels = [c, c, c]
        self.out_strides = [8, 16, 32]

    def forward(self, x):
        c3 = self.c3(x)
        c4 = self.c4(c3)
        return [c3, c4, self.c5(c4)]


class TinyNeck(nn.Module):
    """1x1 laterals for P3-P5 and stride-2 convs for P6, P7 (RetinaNet/FCOS style), equal widths."""

    def __init__(self, in_channels: list[int], out_channels: int = 32) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.p6 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        self.out_channels = out_channels

    def forward(self, feats):
        p3, p4, p5 = (lat(f) for lat, f in zip(self.laterals, feats, strict=True))
        p6 = self.p6(p5)
        return [p3, p4, p5, p6, self.p7(torch.relu(p6))]


def _tiny_fcos(num_classes: int = 3, **kwargs) -> FCOS:
    backbone = TinyBackbone(16)
    neck = TinyNeck(backbone.out_channels, 32)
    # 64 channels: GroupNorm(32) then has 2 channels per group, so a 1x1 P7 map still normalises.
    head = FCOSHead(32, num_classes, num_convs=1, feat_channels=64, norm="gn")
    return FCOS(backbone, neck, head, num_classes, **kwargs)


# ------------------------------------------------------------------------------------ points


def test_level_points_exact_coordinates_y_major():
    pts = level_points(2, 3, 8)
    expected = [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    assert pts.tolist() == expected
    assert level_points(1, 2, 128).tolist() == [[64, 64], [192, 64]]


def test_points_order_matches_flattened_feature_map():
    # Feature value = its own (x, y) index pair; flattening must follow level_points' order.
    h, w, s = 3, 5, 16
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    fmap = torch.stack([xs, ys])[None].float()  # [1,2,H,W]
    flat = fmap.flatten(2).transpose(1, 2)[0]  # [(H*W),2]
    assert torch.equal(flat * s + s // 2, level_points(h, w, s))


# ------------------------------------------------------------------------------------ targets


def test_centerness_formula():
    ltrb = torch.tensor([[2.0, 2.0, 18.0, 10.0], [5.0, 5.0, 5.0, 5.0], [1.0, 3.0, 4.0, 6.0]])
    expected = [
        math.sqrt(2 / 18 * 2 / 10),
        1.0,
        math.sqrt(1 / 4 * 3 / 6),
    ]
    assert centerness_targets(ltrb).tolist() == pytest.approx(expected, rel=1e-6)


def test_single_box_targets_by_hand():
    fcos = _one_level_fcos(num_classes=5)
    # 4x4 map, stride 8: points x, y in {4, 12, 20, 28}; box strictly contains x in {4,12,20}, y in {4,12}.
    pts, labels, ltrb = _assign(fcos, [(4, 4)], [[2, 2, 22, 14]], [3])
    positive = {tuple(p) for p in pts[labels >= 0].tolist()}
    assert positive == {(x, y) for x in (4, 12, 20) for y in (4, 12)}
    assert set(labels[labels >= 0].tolist()) == {3}
    index = {tuple(p): i for i, p in enumerate(pts.tolist())}
    assert ltrb[index[(4, 4)]].tolist() == [2, 2, 18, 10]
    assert ltrb[index[(20, 12)]].tolist() == [18, 10, 2, 2]
    assert ltrb[index[(12, 12)]].tolist() == [10, 10, 10, 2]
    ctr = centerness_targets(ltrb[[index[(4, 4)], index[(12, 12)]]])
    assert ctr.tolist() == pytest.approx([math.sqrt(2 / 18 * 2 / 10), math.sqrt(2 / 10)])


def test_points_on_box_border_are_negative():
    fcos = _one_level_fcos()
    # Box edges pass exactly through x=4 and y=12: those points are not strictly inside.
    pts, labels, _ = _assign(fcos, [(4, 4)], [[4, 0, 32, 12]], [0])
    assert {tuple(p) for p in pts[labels >= 0].tolist()} == {(12, 4), (20, 4), (28, 4)}


def test_regress_range_puts_big_box_on_one_level():
    fcos = FCOS(
        nn.Identity(), nn.Identity(), FCOSHead(32, 2, num_convs=0), 2
    )  # default strides and ranges
    sizes = [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]  # a 256x256 image
    level_of = torch.cat([torch.full((h * w,), i) for i, (h, w) in enumerate(sizes)])
    _, labels, ltrb = _assign(fcos, sizes, [[0, 0, 256, 256]], [1])
    # Every stride-32 point is inside with max distance in [144, 240] (range 128-256); at strides 8/16
    # the max distance exceeds 64/128, at 64/128 it stays below 256/512.
    assert (labels[level_of == 2] == 1).all()
    assert (labels[level_of != 2] == -1).all()
    assert ltrb[labels >= 0].max(dim=1).values.min() == 144
    # A small box inside the same image goes to level 0 only.
    _, labels, _ = _assign(fcos, sizes, [[100, 100, 140, 130]], [0])
    assert (labels >= 0).sum() > 0 and (labels[level_of != 0] == -1).all()


def test_ambiguous_points_take_smaller_box():
    fcos = _one_level_fcos()
    big, small = [0, 0, 60, 60], [10, 10, 30, 30]
    pts, labels, ltrb = _assign(fcos, [(8, 8)], [big, small], [0, 1])
    index = {tuple(p): i for i, p in enumerate(pts.tolist())}
    for x in (12, 20, 28):
        for y in (12, 20, 28):
            assert labels[index[(x, y)]] == 1
    assert ltrb[index[(20, 20)]].tolist() == [10, 10, 10, 10]
    assert labels[index[(44, 44)]] == 0 and ltrb[index[(44, 44)]].tolist() == [44, 44, 16, 16]
    assert labels[index[(4, 20)]] == 0
    assert labels[index[(60, 60)]] == -1
    # Order of the GT list must not matter.
    _, labels_swapped, _ = _assign(fcos, [(8, 8)], [small, big], [1, 0])
    assert torch.equal(labels, labels_swapped)


def test_center_sampling_restricts_positives():
    plain = _one_level_fcos()
    sampled = _one_level_fcos(center_sampling=True, center_sampling_radius=1.5)
    sizes = [(16, 16)]  # points 4, 12, ..., 124
    pts, labels, _ = _assign(plain, sizes, [[0, 0, 100, 100]], [0])
    assert (labels >= 0).sum() == 12 * 12  # 4..92 on each axis
    # Radius 1.5 * 8 = 12 around the centre (50, 50): region (38, 62) -> points 44, 52, 60.
    pts, labels, ltrb = _assign(sampled, sizes, [[0, 0, 100, 100]], [0])
    assert {tuple(p) for p in pts[labels >= 0].tolist()} == {
        (x, y) for x in (44, 52, 60) for y in (44, 52, 60)
    }
    index = {tuple(p): i for i, p in enumerate(pts.tolist())}
    assert ltrb[index[(44, 60)]].tolist() == [44, 60, 56, 40]  # targets still to the full box
    # A thin box: the centre region (-7, 17) is clipped to the box's x-range (0, 10).
    pts, labels, _ = _assign(sampled, sizes, [[0, 0, 10, 100]], [0])
    assert {tuple(p) for p in pts[labels >= 0].tolist()} == {(4, 44), (4, 52), (4, 60)}


@pytest.mark.parametrize("center_sampling", [False, True])
def test_targets_match_brute_force(center_sampling):
    gen = torch.Generator().manual_seed(0)
    strides = (8, 16, 32)
    ranges = ((-1.0, 32.0), (32.0, 64.0), (64.0, INF))
    sizes = [(12, 16), (6, 8), (3, 4)]  # a 96x128 image
    points = torch.cat([level_points(h, w, s) for (h, w), s in zip(sizes, strides, strict=True)])
    point_strides = torch.cat(
        [torch.full((h * w,), float(s)) for (h, w), s in zip(sizes, strides, strict=True)]
    )
    point_ranges = torch.cat(
        [torch.tensor(r).expand(h * w, 2) for (h, w), r in zip(sizes, ranges, strict=True)]
    )
    xy = torch.rand(12, 2, generator=gen) * torch.tensor([128.0, 96.0])
    wh = torch.rand(12, 2, generator=gen) * 90 + 4
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=1)
    labels = torch.randint(0, 4, (12,), generator=gen)
    got_labels, got_ltrb = fcos_targets(
        points, point_strides, point_ranges, boxes, labels, center_sampling, 1.5
    )
    ref_labels, ref_ltrb = _brute_force_targets(
        points, point_strides, point_ranges, boxes, labels, center_sampling, 1.5
    )
    assert got_labels.tolist() == ref_labels
    assert sum(lab >= 0 for lab in ref_labels) > 20  # the case is not trivially empty
    for i, ref in enumerate(ref_ltrb):
        if ref is not None:
            assert got_ltrb[i].tolist() == pytest.approx(ref, abs=1e-4)


def test_no_boxes_gives_all_background():
    fcos = _one_level_fcos()
    _, labels, ltrb = _assign(fcos, [(4, 4)], [], [])
    assert (labels == -1).all() and ltrb.shape == (16, 4)


# --------------------------------------------------------------------------------------- head


def test_head_shapes_and_init():
    torch.manual_seed(0)
    head = FCOSHead(32, 7, num_convs=2, feat_channels=32, norm="gn")
    feats = [torch.randn(2, 32, s, s + 1) for s in (8, 4, 2, 1, 1)]
    cls, reg, ctr = head(feats)
    for f, c, r, n in zip(feats, cls, reg, ctr, strict=True):
        h, w = f.shape[-2:]
        assert c.shape == (2, 7, h, w) and r.shape == (2, 4, h, w) and n.shape == (2, 1, h, w)
        assert (r > 0).all()
    assert torch.allclose(head.cls_logits.bias, torch.full((7,), -math.log(99.0)))
    assert all(s.scale.item() == 1.0 for s in head.scales)
    assert head.cls_logits.weight.std().item() == pytest.approx(0.01, rel=0.2)
    # Tower convs are bias-free with a norm, and carry a bias without one.
    assert head.cls_tower[0].bias is None
    assert FCOSHead(32, 7, num_convs=1, norm=None).cls_tower[0].bias is not None
    # The Scale is applied before exp: doubling it squares the predicted distances.
    with torch.no_grad():
        for s in head.scales:
            s.scale.fill_(2.0)
    _, reg2, _ = head(feats)
    assert torch.allclose(reg2[0], reg[0] ** 2, rtol=1e-5)


def test_head_centerness_branch_choice():
    torch.manual_seed(0)
    head = FCOSHead(32, 2, num_convs=1, feat_channels=32, centerness_on="reg")
    feats = [torch.randn(1, 32, 4, 4) for _ in range(5)]
    _, _, ctr = head(feats)
    ctr[0].sum().backward()
    assert head.reg_tower[0].weight.grad is not None and head.cls_tower[0].weight.grad is None


def test_bad_configuration_raises():
    with pytest.raises(NasSearchError, match="box_loss"):
        _one_level_fcos(box_loss="l1")
    with pytest.raises(NasSearchError, match="regress_ranges"):
        FCOS(nn.Identity(), nn.Identity(), FCOSHead(32, 2), 2, regress_ranges=((-1, INF),))
    with pytest.raises(NasSearchError, match="groups"):
        FCOSHead(32, 2, feat_channels=48, norm="gn")
    with pytest.raises(NasSearchError, match="norm"):
        FCOSHead(32, 2, norm="ln")


# ------------------------------------------------------------------------------------- losses


def _hand_outputs(scale_reg: float = 1.0):
    """Outputs for a 4x4 stride-8 map: zero logits, reg = exact ltrb to box (2,2,22,14) times scale."""
    pts = level_points(4, 4, 8)
    box = torch.tensor([2.0, 2.0, 22.0, 14.0])
    ltrb = torch.stack(
        [pts[:, 0] - box[0], pts[:, 1] - box[1], box[2] - pts[:, 0], box[3] - pts[:, 1]], dim=1
    )
    reg = (ltrb.clamp(min=0.5) * scale_reg).t().reshape(1, 4, 4, 4)
    cls = torch.zeros(1, 2, 4, 4, requires_grad=True)
    ctr = torch.zeros(1, 1, 4, 4, requires_grad=True)
    reg.requires_grad_(True)
    target = {"boxes": box[None], "labels": torch.tensor([1])}
    return ([cls], [reg], [ctr]), [target]


def test_loss_values_by_hand():
    outputs, targets = _hand_outputs()
    losses = _one_level_fcos(num_classes=2, box_loss="giou").loss(outputs, targets, (32, 32))
    assert set(losses) == {"loss_cls", "loss_box", "loss_centerness"}
    # 6 positives; logits 0 -> p = 0.5: a positive element costs alpha * 0.5^2 * log 2, a negative
    # (1 - alpha) * 0.5^2 * log 2; 32 elements, 6 positive; normalised by num_pos = 6.
    log2 = math.log(2.0)
    expected_cls = (6 * 0.25 * 0.25 * log2 + 26 * 0.75 * 0.25 * log2) / 6
    assert losses["loss_cls"].item() == pytest.approx(expected_cls, rel=1e-5)
    assert losses["loss_box"].item() == pytest.approx(0.0, abs=1e-6)  # exact boxes
    assert losses["loss_centerness"].item() == pytest.approx(log2, rel=1e-5)  # BCE(0, t) = log 2


def test_box_loss_is_centerness_weighted_mean():
    outputs, targets = _hand_outputs(scale_reg=2.0)
    losses = _one_level_fcos(box_loss="linear").loss(outputs, targets, (32, 32))
    # Reference: every positive point predicts distances twice too large.
    num, den = 0.0, 0.0
    for x in (4, 12, 20):
        for y in (4, 12):
            dl, dt, dr, db = x - 2, y - 2, 22 - x, 14 - y
            pred = (x - 2 * dl, y - 2 * dt, x + 2 * dr, y + 2 * db)
            gt = (2, 2, 22, 14)
            iw = min(pred[2], gt[2]) - max(pred[0], gt[0])
            ih = min(pred[3], gt[3]) - max(pred[1], gt[1])
            inter = max(iw, 0) * max(ih, 0)
            union = (pred[2] - pred[0]) * (pred[3] - pred[1]) + 20 * 12 - inter
            w = math.sqrt(min(dl, dr) / max(dl, dr) * min(dt, db) / max(dt, db))
            num += w * (1 - inter / union)
            den += w
    assert losses["loss_box"].item() == pytest.approx(num / den, rel=1e-5)


def test_empty_targets_loss_finite_and_backward():
    torch.manual_seed(0)
    model = _tiny_fcos()
    model.train()
    images = torch.randn(2, 3, 64, 64)
    targets = [
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_box"].item() == 0.0 and losses["loss_centerness"].item() == 0.0
    assert losses["loss_cls"].item() > 0
    sum(losses.values()).backward()
    assert model.head.cls_logits.weight.grad is not None
    assert model.head.bbox_pred.weight.grad is not None  # zero-valued, but the graph is connected


def test_loss_works_in_eval_mode_and_mixed_batch():
    torch.manual_seed(0)
    model = _tiny_fcos().eval()
    images = torch.randn(2, 3, 64, 64)
    targets = [
        {"boxes": torch.tensor([[8.0, 8.0, 40.0, 30.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    with torch.no_grad():
        outputs = model.head_outputs(model.backbone(images))
        losses = model.loss(outputs, targets, (64, 64))
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())


# ---------------------------------------------------------------------------------- inference


def test_postprocess_by_hand():
    fcos = _one_level_fcos(num_classes=3, nms_thresh=0.6)
    cls = torch.full((1, 3, 4, 4), -10.0)  # sigmoid(-10) < score_thresh: no candidate
    reg = torch.ones(1, 4, 4, 4)
    ctr = torch.zeros(1, 1, 4, 4)
    # (row 1, col 2) -> point (20, 12): class 1, ltrb (5, 6, 7, 8) -> box (15, 6, 27, 20).
    cls[0, 1, 1, 2], ctr[0, 0, 1, 2] = 2.0, 1.0
    reg[0, :, 1, 2] = torch.tensor([5.0, 6.0, 7.0, 8.0])
    # (row 1, col 1) -> point (12, 12): class 1, box (12, 6, 27, 20), IoU 0.8 with the first: suppressed.
    cls[0, 1, 1, 1] = 1.5
    reg[0, :, 1, 1] = torch.tensor([0.0, 6.0, 15.0, 8.0])
    # Same point, class 2: another class, so NMS keeps it.
    cls[0, 2, 1, 1] = 0.5
    # (row 3, col 0) -> point (4, 28): class 0, box (-6, 18, 14, 38) clipped to the valid region
    # (h, w) = (30, 40) of the target, not to the padded image_shape: (0, 18, 14, 30).
    cls[0, 0, 3, 0] = 1.0
    reg[0, :, 3, 0] = 10.0
    (det,) = fcos.postprocess(([cls], [reg], [ctr]), (64, 64), [{"img_size": (30, 40)}])
    sig = torch.sigmoid
    expected_scores = [
        math.sqrt(sig(torch.tensor(2.0)) * sig(torch.tensor(1.0))),
        math.sqrt(sig(torch.tensor(1.0)) * 0.5),
        math.sqrt(sig(torch.tensor(0.5)) * 0.5),
    ]
    assert det["scores"].tolist() == pytest.approx(expected_scores, rel=1e-5)
    assert det["labels"].tolist() == [1, 0, 2]
    assert det["labels"].dtype == torch.int64
    assert det["boxes"].tolist() == [[15, 6, 27, 20], [0, 18, 14, 30], [12, 6, 27, 20]]
    (det,) = fcos.postprocess(([cls], [reg], [ctr]), (32, 32))  # no targets: clip to image_shape
    assert det["boxes"][1].tolist() == [0, 18, 14, 32]

    # top-k per level by cls*centerness, then the per-image cap.
    fcos.topk_candidates = 2
    (det,) = fcos.postprocess(([cls], [reg], [ctr]), (32, 32))
    assert det["labels"].tolist() == [1]  # top-2 is both class-1 boxes; NMS then drops one
    fcos.topk_candidates, fcos.detections_per_img = 1000, 2
    (det,) = fcos.postprocess(([cls], [reg], [ctr]), (32, 32))
    assert det["labels"].tolist() == [1, 0]


def test_eval_output_format_and_clipping():
    torch.manual_seed(0)
    model = _tiny_fcos(score_thresh=0.0, detections_per_img=7).eval()
    images = torch.randn(2, 3, 64, 64)
    targets = [{"img_size": (20, 24)}, {"img_size": (64, 50)}]
    with torch.no_grad():
        dets = model(images, targets)
        plain = model(images)
    assert len(dets) == 2 and len(plain) == 2
    for det, (h, w) in zip(dets, [(20, 24), (64, 50)], strict=True):
        assert set(det) == {"boxes", "scores", "labels"}
        k = det["boxes"].shape[0]
        assert 0 < k <= 7 and det["boxes"].shape == (k, 4)
        assert det["scores"].shape == (k,) and det["labels"].shape == (k,)
        assert det["labels"].dtype == torch.int64 and det["boxes"].dtype == torch.float32
        assert (det["scores"][:-1] >= det["scores"][1:]).all()
        assert (det["boxes"][:, 0::2] <= w).all() and (det["boxes"][:, 1::2] <= h).all()
        assert (det["boxes"] >= 0).all()
    assert (plain[0]["boxes"] <= 64).all()


# ------------------------------------------------------------------------------------ overfit


def test_tiny_fcos_overfits_one_image():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = _tiny_fcos(num_classes=3)
    image = 0.1 * torch.randn(1, 3, 128, 128, generator=gen)
    gt = torch.tensor([[24.0, 32.0, 80.0, 88.0]])
    image[0, 2, 32:88, 24:80] += 1.0
    targets = [{"boxes": gt, "labels": torch.tensor([2]), "img_size": (128, 128)}]
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    history = []
    for _ in range(100):
        losses = model(image, targets)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(total.item())
    assert history[-1] < 0.5 * history[0]
    model.eval()
    with torch.no_grad():
        (det,) = model(image, targets)
    assert det["labels"][0].item() == 2
    assert box_iou(det["boxes"][:1], gt).item() > 0.5
