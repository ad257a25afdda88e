"""RetinaNet: assignment, loss against a hand computation, head structure, contract, overfitting."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nassearch.detectors.anchors import AnchorGenerator
from nassearch.detectors.boxes import box_iou
from nassearch.detectors.retinanet import (
    IGNORE,
    NEGATIVE,
    RetinaNet,
    RetinaNetHead,
    assign_max_iou,
    assign_max_iou_batched,
)
from nassearch.errors import NasSearchError

STRIDES = (8, 16, 32, 64, 128)


class TinyBackbone(nn.Module):
    """C3, C4, C5 at strides 8, 16, 32."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1), nn.ReLU(), nn.Conv2d(width, width, 3, 2, 1), nn.ReLU()
        )
        self.c3 = nn.Sequential(nn.Conv2d(width, width, 3, 2, 1), nn.ReLU())
        self.c4 = nn.Sequential(nn.Conv2d(width, width, 3, 2, 1), nn.ReLU())
        self.c5 = nn.Sequential(nn.Conv2d(width, width, 3, 2, 1), nn.ReLU())
        self.out_channels = [width] * 3
        self.out_strides = [8, 16, 32]

    def forward(self, x):
        c3 = self.c3(self.stem(x))
        c4 = self.c4(c3)
        return [c3, c4, self.c5(c4)]


class TinyNeck(nn.Module):
    """P3-P5 by 1x1 laterals, P6-P7 by stride-2 convs: five levels."""

    def __init__(self, in_channels: list[int], out_channels: int = 16) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.p6 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        self.out_channels = out_channels

    def forward(self, feats):
        outs = [lat(f) for lat, f in zip(self.laterals, feats, strict=True)]
        outs.append(self.p6(outs[-1]))
        outs.append(self.p7(torch.relu(outs[-1])))
        return outs


def tiny_retinanet(num_classes: int = 3, **kwargs) -> RetinaNet:
    backbone = TinyBackbone()
    neck = TinyNeck(backbone.out_channels)
    head_kwargs = kwargs.pop("head_kwargs", {"num_convs": 1, "feat_channels": 16})
    return RetinaNet(backbone, neck, num_classes, head_kwargs=head_kwargs, **kwargs)


# ---------------------------------------------------------------------------------- assignment


def test_assignment_on_hand_made_anchors():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 130.0, 130.0]])
    anchors = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # IoU 1 with GT 0 -> positive
            [0.0, 0.0, 10.0, 20.0],  # IoU 0.5 -> positive (>= pos_iou_thr)
            [0.0, 0.0, 10.0, 22.0],  # IoU 0.4545 -> ignored
            [0.0, 0.0, 10.0, 30.0],  # IoU 0.333 -> negative
            [50.0, 50.0, 60.0, 60.0],  # no overlap -> negative
            [100.0, 100.0, 110.0, 110.0],  # IoU 1/9 with GT 1, its best (tied) -> low-quality pos
            [120.0, 120.0, 130.0, 130.0],  # IoU 1/9, tied best -> low-quality positive
            [100.0, 100.0, 105.0, 105.0],  # IoU 1/36 -> negative
        ]
    )
    got = assign_max_iou(anchors, gt, 0.5, 0.4, 0.0, True)
    assert got.tolist() == [0, 0, IGNORE, NEGATIVE, NEGATIVE, 1, 1, NEGATIVE]
    no_low = assign_max_iou(anchors, gt, 0.5, 0.4, 0.0, False)
    assert no_low.tolist() == [0, 0, IGNORE, NEGATIVE, NEGATIVE, NEGATIVE, NEGATIVE, NEGATIVE]
    # min_pos_iou above 1/9: GT 1 gets no low-quality match.
    strict = assign_max_iou(anchors, gt, 0.5, 0.4, 0.2, True)
    assert strict.tolist() == no_low.tolist()
    # A GT box whose best IoU equals min_pos_iou exactly still gets its low-quality match.
    one_gt, two_anchors = torch.tensor([[0.0, 0.0, 20.0, 20.0]]), anchors[[0, 4]]  # IoU 0.25, 0
    assert assign_max_iou(two_anchors, one_gt, 0.5, 0.4, 0.25, True).tolist() == [0, NEGATIVE]
    assert assign_max_iou(two_anchors, one_gt, 0.5, 0.4, 0.26, True).tolist() == [NEGATIVE] * 2
    empty = assign_max_iou(anchors, torch.zeros(0, 4), 0.5, 0.4, 0.0, True)
    assert empty.tolist() == [NEGATIVE] * 8


def test_assignment_matches_brute_force_rule():
    gen = torch.Generator().manual_seed(0)
    anchors = torch.cat(
        [
            (xy := torch.rand(200, 2, generator=gen) * 80),
            xy + 8 + torch.rand(200, 2, generator=gen) * 30,
        ],
        1,
    )
    gt = torch.cat(
        [
            (g := torch.rand(6, 2, generator=gen) * 80),
            g + 10 + torch.rand(6, 2, generator=gen) * 30,
        ],
        1,
    )
    got = assign_max_iou(anchors, gt, 0.5, 0.4, 0.0, True).tolist()
    iou = box_iou(gt, anchors).tolist()
    for j in range(200):
        col = [iou[i][j] for i in range(6)]
        best = max(col)
        best_for = [i for i in range(6) if iou[i][j] == max(iou[i]) and max(iou[i]) > 0]
        if best_for:  # low-quality match: the GT (among those) it overlaps most
            expected = max(best_for, key=lambda i: col[i])
        elif best >= 0.5:
            expected = col.index(best)
        elif best < 0.4:
            expected = NEGATIVE
        else:
            expected = IGNORE
        assert got[j] == expected, j


@pytest.mark.parametrize("low_quality", [True, False])
def test_batched_assignment_equals_per_image_assignment(low_quality):
    """Images with different GT counts (none, duplicates that tie, boxes on the grid) assigned
    at once give exactly the per-image assignments, tie rule included."""
    gen = torch.Generator().manual_seed(1)
    anchors = AnchorGenerator(strides=(8, 16)).all_anchors([(8, 8), (4, 4)])
    images = []
    for count in (0, 3, 7, 1):
        xy = torch.rand(count, 2, generator=gen) * 48
        images.append(torch.cat([xy, xy + 8 + torch.rand(count, 2, generator=gen) * 24], 1))
    images[2][4] = images[2][1]  # identical boxes: every IoU ties
    images[3][0] = anchors[40]  # exactly one anchor: IoU 1
    batched = assign_max_iou_batched(anchors, images, 0.5, 0.4, 0.0, low_quality)
    for i, gt in enumerate(images):
        expected = assign_max_iou(anchors, gt, 0.5, 0.4, 0.0, low_quality)
        assert torch.equal(batched[i], expected), i
    assert (batched[0] == NEGATIVE).all() and batched[3, 40] == 0
    assert (batched[2] == 4).sum() == 0  # a tie goes to the first of the identical boxes


def test_anchors_are_cached_per_size_and_equal_a_fresh_computation():
    gen = AnchorGenerator()
    first = gen.all_anchors([(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)])
    assert gen.all_anchors([(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]) is first
    fresh = AnchorGenerator().grid_anchors([(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)])
    assert torch.equal(first, torch.cat(fresh))
    other = gen.all_anchors([(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)])
    assert other.shape[0] == 9 * (16 + 4 + 1 + 1 + 1)


# ---------------------------------------------------------------------------------------- loss


def _focal(x: float, t: float, alpha: float = 0.25, gamma: float = 2.0) -> float:
    p = 1 / (1 + math.exp(-x))
    p_t = p if t else 1 - p
    return -(alpha if t else 1 - alpha) * (1 - p_t) ** gamma * math.log(p_t)


def _smooth_l1(d: float, beta: float = 1 / 9) -> float:
    d = abs(d)
    return 0.5 * d * d / beta if d < beta else d - 0.5 * beta


def _expected_box_loss(kind: str) -> float:
    pred, target = [0.05, -0.2, 0.3, 0.0], [0.0, -0.125, 0.0, 0.0]
    if kind == "smooth_l1":
        return sum(_smooth_l1(p - t) for p, t in zip(pred, target, strict=True))
    if kind == "l1":
        return sum(abs(p - t) for p, t in zip(pred, target, strict=True))
    # giou: a3 decoded with the deltas -> centre (8.8, 4.8), size 16 e^0.3 x 16; GT [0,-2,16,14].
    w = 16 * math.exp(0.3)
    box = [8.8 - w / 2, 4.8 - 8, 8.8 + w / 2, 4.8 + 8]
    gt = [0.0, -2.0, 16.0, 14.0]
    inter = (min(box[2], gt[2]) - max(box[0], gt[0])) * (min(box[3], gt[3]) - max(box[1], gt[1]))
    union = w * 16 + 16 * 16 - inter
    hull = (max(box[2], gt[2]) - min(box[0], gt[0])) * (max(box[3], gt[3]) - min(box[1], gt[1]))
    return 1 - (inter / union - (hull - union) / hull)


@pytest.mark.parametrize("box_loss", ["smooth_l1", "l1", "giou"])
def test_loss_matches_hand_computation(box_loss):
    """One level, one square anchor per location on a 2x2 map: every term computed by hand."""
    anchor_gen = AnchorGenerator(
        strides=(8,), octave_base_scale=2, scales_per_octave=1, ratios=(1.0,)
    )
    neck = nn.Identity()
    neck.out_channels = 4
    model = RetinaNet(
        nn.Identity(), neck, 2, head=nn.Identity(), anchor_generator=anchor_gen, box_loss=box_loss
    )
    # Anchors: a0 [-8,-8,8,8], a1 [0,-8,16,8], a2 [-8,0,8,16], a3 [0,0,16,16].
    # GT [0,-2,16,14]: IoU a3 = 224/288 (positive), a1 = 160/352 (ignored), a0, a2 < 0.4 (negative).
    logits = torch.tensor([0.3, -1.0, 2.0, -0.5, 0.1, 0.7, -2.0, 1.5]).view(1, 2, 2, 2)  # [A*C=2]
    logits = logits.permute(0, 3, 1, 2).contiguous()  # channel c at (y, x) = value [y, x, c]
    deltas = torch.full((1, 4, 2, 2), 0.1)
    deltas[0, :, 1, 1] = torch.tensor([0.05, -0.2, 0.3, 0.0])
    outputs = ([logits.repeat(2, 1, 1, 1)], [deltas.repeat(2, 1, 1, 1)])
    targets = [
        {"boxes": torch.tensor([[0.0, -2.0, 16.0, 14.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    losses = model.loss(outputs, targets, (16, 16))
    vals = [0.3, -1.0, 2.0, -0.5, 0.1, 0.7, -2.0, 1.5]  # anchor k, class c -> vals[2k + c]
    cls_img0 = sum(_focal(vals[2 * k + c], k == 3 and c == 1) for k in (0, 2, 3) for c in (0, 1))
    cls_img1 = sum(_focal(v, False) for v in vals)
    # Target deltas for a3 (centre (8,8), 16x16) -> GT (centre (8,6), 16x16): (0, -1/8, 0, 0).
    box = _expected_box_loss(box_loss)
    assert set(losses) == {"loss_cls", "loss_box"}
    assert losses["loss_cls"].item() == pytest.approx(cls_img0 + cls_img1, rel=1e-5)  # / 1 pos
    assert losses["loss_box"].item() == pytest.approx(box, rel=1e-5)


def test_loss_with_empty_targets_is_finite_and_has_no_box_term():
    torch.manual_seed(0)
    model = tiny_retinanet()
    images = torch.randn(2, 3, 64, 64)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    losses = model(images, [empty, dict(empty)])
    assert torch.isfinite(losses["loss_cls"]) and losses["loss_cls"] > 0
    assert losses["loss_box"].item() == 0.0
    sum(losses.values()).backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("box_loss", ["l1", "giou"])
def test_other_box_losses_run(box_loss):
    torch.manual_seed(0)
    model = tiny_retinanet(box_loss=box_loss)
    target = {"boxes": torch.tensor([[10.0, 12.0, 40.0, 50.0]]), "labels": torch.tensor([2])}
    losses = model(torch.randn(1, 3, 64, 64), [target])
    assert losses["loss_box"] > 0 and torch.isfinite(losses["loss_box"])
    with pytest.raises(NasSearchError, match="box_loss"):
        tiny_retinanet(box_loss="diou")


# ---------------------------------------------------------------------------------------- head


def test_head_shapes_init_and_per_level_norms():
    head = RetinaNetHead(
        16, 5, num_anchors=9, num_convs=2, feat_channels=32, norm="bn", separate_norm_per_level=True
    )
    feats = [torch.randn(2, 16, s, s) for s in (8, 4, 2, 1, 1)]
    cls, box = head(feats)
    assert [c.shape for c in cls] == [(2, 45, s, s) for s in (8, 4, 2, 1, 1)]
    assert [b.shape for b in box] == [(2, 36, s, s) for s in (8, 4, 2, 1, 1)]
    # Conv weights shared (one conv per tower depth, no bias before BN); BN per level and depth.
    assert len(head.cls_convs) == 2 and head.cls_convs[0].bias is None
    bns = [m for m in head.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 2 * 5 * 2 and len({id(m) for m in bns}) == 20
    # One training forward: every level's BN (both towers, all depths) saw exactly one batch.
    tracked = [
        bn.num_batches_tracked.item()
        for tower in (head.cls_norms, head.box_norms)
        for lvl in tower
        for bn in lvl
    ]
    assert tracked == [1] * 20
    torch.testing.assert_close(head.cls_logits.bias, torch.full((45,), -math.log(99.0)))
    assert head.box_deltas.bias.abs().sum() == 0
    shared = RetinaNetHead(16, 5, num_convs=2, feat_channels=32, norm="gn")
    assert len([m for m in shared.modules() if isinstance(m, nn.GroupNorm)]) == 4
    plain = RetinaNetHead(16, 5, num_convs=4, feat_channels=32)
    assert plain.cls_convs[0].bias is not None
    assert sum(isinstance(m, nn.Conv2d) for m in plain.modules()) == 10
    with pytest.raises(NasSearchError, match="norm"):
        RetinaNetHead(16, 5, norm="ln")
    with pytest.raises(NasSearchError, match="levels"):
        head(feats[:3])


# ---------------------------------------------------------------------------------- contract


def test_eval_returns_contract_format_and_clips_to_img_size():
    torch.manual_seed(0)
    model = tiny_retinanet(score_thresh=0.0, detections_per_img=7).eval()
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        dets = model(images)
        clipped = model(images, [{"img_size": (40, 50)}, {"img_size": (64, 96)}])
    assert len(dets) == 2
    for d in dets:
        assert set(d) == {"boxes", "scores", "labels"}
        assert (
            d["boxes"].shape == (7, 4)
            and d["scores"].shape == (7,)
            and d["labels"].dtype == torch.int64
        )
        assert (d["scores"].diff() <= 0).all() and (d["labels"] < 3).all()
        assert (d["boxes"][:, 0::2] <= 96).all() and (d["boxes"][:, 1::2] <= 64).all()
    assert (clipped[0]["boxes"][:, 0::2] <= 50).all() and (clipped[0]["boxes"][:, 1::2] <= 40).all()
    outputs = model.head_outputs(model.backbone(images))
    assert len(outputs) == 2 and len(outputs[0]) == 5
    # Val loss works in eval mode; training mode without targets is an error.
    target = {"boxes": torch.tensor([[1.0, 2.0, 30.0, 40.0]]), "labels": torch.tensor([0])}
    assert torch.isfinite(model.loss(outputs, [target, target], (64, 96))["loss_cls"])
    with pytest.raises(NasSearchError, match="targets"):
        model.train()(images)


def test_postprocess_decodes_the_right_anchor_and_class():
    """A single confident (level, location, anchor, class) channel becomes one detection."""
    neck = nn.Identity()
    neck.out_channels = 4
    num_classes, gen = 3, AnchorGenerator()
    model = RetinaNet(
        nn.Identity(), neck, num_classes, head=nn.Identity(), anchor_generator=gen
    ).eval()
    shapes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    cls = [torch.full((1, 9 * num_classes, h, w), -10.0) for h, w in shapes]
    box = [torch.zeros(1, 9 * 4, h, w) for h, w in shapes]
    level, y, x, a, c = 1, 3, 2, 7, 2
    cls[level][0, a * num_classes + c, y, x] = 3.0  # channel layout (A, C), like torchvision/mmdet
    box[level][0, a * 4 : a * 4 + 4, y, x] = torch.tensor([0.1, 0.2, 0.0, math.log(0.5)])
    (det,) = model.postprocess((cls, box), (1000, 1000))
    assert det["labels"].tolist() == [c]
    assert det["scores"].item() == pytest.approx(1 / (1 + math.exp(-3.0)))
    # Anchor 7 = ratio 2.0 (h/w), scale index 1 at stride 16: w = 64 * 2**(1/3) / sqrt(2), h = 2w.
    w = 64 * 2 ** (1 / 3) / math.sqrt(2)
    h = 2 * w
    cx, cy = 2 * 16 + 0.1 * w, 3 * 16 + 0.2 * h
    expected = [cx - w / 2, cy - h / 4, cx + w / 2, cy + h / 4]  # dh = log(1/2): half height
    assert min(expected) > 0  # nothing clipped
    torch.testing.assert_close(det["boxes"][0], torch.tensor(expected))


def test_high_threshold_gives_empty_detections():
    torch.manual_seed(0)
    model = tiny_retinanet(score_thresh=0.5).eval()  # prior 0.01 << 0.5
    with torch.no_grad():
        (det,) = model(torch.randn(1, 3, 64, 64))
    assert (
        det["boxes"].shape == (0, 4) and det["scores"].shape == (0,) and det["labels"].shape == (0,)
    )


def test_tiny_retinanet_overfits_one_image():
    torch.manual_seed(0)
    model = tiny_retinanet(num_classes=3)
    image = torch.zeros(1, 3, 64, 64)
    gt = torch.tensor([[14.0, 18.0, 46.0, 50.0]])
    image[0, :, 18:50, 14:46] = torch.tensor([1.0, -1.0, 0.5])[:, None, None]
    target = {"boxes": gt, "labels": torch.tensor([2])}
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    history = []
    for _ in range(60):
        losses = model(image, [target])
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert sum(history[-5:]) / 5 < 0.25 * sum(history[:5]) / 5, history[::10]
    model.eval()
    with torch.no_grad():
        (det,) = model(image)
    assert det["boxes"].shape[0] >= 1
    assert det["labels"][0].item() == 2
    assert box_iou(det["boxes"][:1], gt).item() > 0.5
