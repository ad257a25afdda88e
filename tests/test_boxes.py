"""Box ops against brute-force Python references: IoU/GIoU, coders, clipping, NMS."""

from __future__ import annotations

import math

import pytest
import torch

from nassearch.detectors import boxes as B


def _random_boxes(n: int, gen: torch.Generator, size: float = 50.0) -> torch.Tensor:
    """Random xyxy boxes, some of them zero-width/height, many disjoint."""
    xy = torch.rand(n, 2, generator=gen) * size
    wh = torch.rand(n, 2, generator=gen) * size / 3
    wh[torch.rand(n, generator=gen) < 0.15, 0] = 0.0  # degenerate: zero width
    wh[torch.rand(n, generator=gen) < 0.10] = 0.0  # degenerate: a point
    return torch.cat([xy, xy + wh], dim=1)


def _py_area(b) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _py_iou_giou(a, b) -> tuple[float, float]:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = _py_area(a) + _py_area(b) - inter
    iou = inter / union if union > 0 else 0.0
    c = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    giou = iou - ((c - union) / c if c > 0 else 0.0)
    return iou, giou


def test_iou_and_giou_match_brute_force():
    gen = torch.Generator().manual_seed(0)
    b1 = _random_boxes(40, gen).double()
    b2 = _random_boxes(30, gen).double()
    # Hand-made extremes: identical, disjoint, contained, both degenerate at the same point.
    b1[0] = b2[0] = torch.tensor([1.0, 1.0, 5.0, 5.0])
    b1[1], b2[1] = torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.tensor([10.0, 10.0, 12.0, 12.0])
    b1[2], b2[2] = torch.tensor([3.0, 3.0, 3.0, 3.0]), torch.tensor([3.0, 3.0, 3.0, 3.0])
    iou = B.box_iou(b1, b2)
    giou = B.generalized_box_iou(b1, b2)
    assert iou.shape == (40, 30)
    for i in range(40):
        for j in range(30):
            ref_iou, ref_giou = _py_iou_giou(b1[i].tolist(), b2[j].tolist())
            assert iou[i, j].item() == pytest.approx(ref_iou, abs=1e-9)
            assert giou[i, j].item() == pytest.approx(ref_giou, abs=1e-9)
    assert iou[0, 0] == 1 and giou[0, 0] == 1
    assert iou[1, 1] == 0 and giou[1, 1] < 0  # disjoint: GIoU is negative
    assert iou[2, 2] == 0 and giou[2, 2] == 0  # two points: no NaN
    assert torch.isfinite(giou).all() and (giou >= -1).all() and (giou <= iou + 1e-12).all()


def test_paired_versions_are_the_diagonal():
    gen = torch.Generator().manual_seed(1)
    a, b = _random_boxes(25, gen), _random_boxes(25, gen)
    torch.testing.assert_close(B.paired_iou(a, b), B.box_iou(a, b).diagonal())
    torch.testing.assert_close(B.paired_giou(a, b), B.generalized_box_iou(a, b).diagonal())


def test_box_area_and_clip():
    boxes = torch.tensor([[-5.0, 2.0, 30.0, 50.0], [1.0, 1.0, 3.0, 4.0], [5.0, 5.0, 4.0, 8.0]])
    assert B.box_area(boxes).tolist() == [35.0 * 48.0, 6.0, 0.0]
    clipped = B.clip_boxes(boxes, (40, 20))  # (h, w)
    assert clipped.tolist() == [[0.0, 2.0, 20.0, 40.0], [1.0, 1.0, 3.0, 4.0], [5.0, 5.0, 4.0, 8.0]]


def test_delta_coder_round_trip_and_known_values():
    gen = torch.Generator().manual_seed(2)
    anchors = _random_boxes(50, gen) + torch.tensor([0.0, 0.0, 1.0, 1.0])  # positive sizes
    boxes = _random_boxes(50, gen) + torch.tensor([0.0, 0.0, 2.0, 2.0])
    for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 5.0, 2.0, 1.0)]:
        coder = B.DeltaXYWHCoder(weights)
        deltas = coder.encode(boxes, anchors)
        torch.testing.assert_close(coder.decode(deltas, anchors), boxes, atol=1e-4, rtol=1e-5)
    # By hand: anchor centre (5,5) size 10x10, box centre (7,4) size 20x5.
    coder = B.DeltaXYWHCoder((10.0, 5.0, 2.0, 3.0))
    d = coder.encode(torch.tensor([[-3.0, 1.5, 17.0, 6.5]]), torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    expected = [10 * 2 / 10, 5 * -1 / 10, 2 * math.log(2.0), 3 * math.log(0.5)]
    torch.testing.assert_close(d[0], torch.tensor(expected))


def test_delta_decode_broadcasts_and_clamps():
    coder = B.DeltaXYWHCoder()
    anchors = torch.tensor([[0.0, 0.0, 16.0, 16.0], [10.0, 10.0, 20.0, 30.0]])
    deltas = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(3))
    out = coder.decode(deltas, anchors)
    assert out.shape == (3, 2, 4)
    for k in range(3):
        torch.testing.assert_close(out[k], coder.decode(deltas[k], anchors))
    # Huge dw/dh are clamped at log(1000/16): the box is at most 1000/16 times the anchor.
    big = coder.decode(torch.tensor([[0.0, 0.0, 50.0, 50.0]]), anchors[:1])
    assert torch.isfinite(big).all()
    torch.testing.assert_close(big[0, 2] - big[0, 0], torch.tensor(16.0 * 1000 / 16))
    # Negative deltas are not clamped (they shrink the box, never overflow).
    small = coder.decode(torch.tensor([[0.0, 0.0, -2.0, 0.0]]), anchors[:1])
    torch.testing.assert_close(small[0, 2] - small[0, 0], torch.tensor(16 * math.exp(-2.0)))


def test_distance_coder_round_trip_and_values():
    gen = torch.Generator().manual_seed(4)
    boxes = _random_boxes(30, gen)
    # Points inside the boxes (centres) and arbitrary points (negative distances allowed).
    points = torch.cat(
        [(boxes[:15, :2] + boxes[:15, 2:]) / 2, torch.rand(15, 2, generator=gen) * 60]
    )
    ltrb = B.encode_distances(points, boxes)
    torch.testing.assert_close(B.decode_distances(points, ltrb), boxes)
    got = B.encode_distances(torch.tensor([[4.0, 5.0]]), torch.tensor([[1.0, 2.0, 10.0, 20.0]]))
    assert got.tolist() == [[3.0, 3.0, 6.0, 15.0]]


def _py_nms(boxes: list, scores: list, thr: float) -> list[int]:
    """Textbook greedy NMS; equal scores are visited lower index first."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep: list[int] = []
    for i in order:
        if all(_py_iou_giou(boxes[i], boxes[k])[0] <= thr for k in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("thr", [0.0, 0.3, 0.5, 0.7])
def test_nms_matches_brute_force(thr):
    gen = torch.Generator().manual_seed(int(thr * 10) + 5)
    boxes = _random_boxes(120, gen, size=40.0)
    # Quantised scores give many ties, which must resolve to the lower index.
    scores = torch.randint(0, 10, (120,), generator=gen).float() / 10
    keep = B.nms(boxes, scores, thr, use_torchvision=False)
    assert keep.dtype == torch.long
    assert keep.tolist() == _py_nms(boxes.tolist(), scores.tolist(), thr)
    assert (scores[keep].diff() <= 0).all()


@pytest.mark.parametrize("block_size", [7, 64, 512])
def test_nms_blocks_and_suppression_chains_match_brute_force(block_size):
    """Many crowded boxes (long chains: a suppresses b, so b cannot suppress c) scanned in
    blocks of any size keep exactly what textbook greedy NMS keeps."""
    gen = torch.Generator().manual_seed(block_size)
    xy = torch.rand(300, 2, generator=gen) * 30
    boxes = torch.cat([xy, xy + 12 + torch.rand(300, 2, generator=gen) * 6], 1)
    scores = torch.randint(0, 20, (300,), generator=gen).float() / 20
    for thr in (0.3, 0.6):
        got = B._nms_reference(boxes, scores, thr, block_size=block_size)
        expected = _py_nms(boxes.tolist(), scores.tolist(), thr)
        assert got.tolist() == expected
        for k in (1, 5, len(expected) - 1, len(expected) + 3):  # the scan stops early
            got = B._nms_reference(boxes, scores, thr, block_size=block_size, max_keep=k)
            assert got.tolist() == expected[:k]


@pytest.mark.parametrize("thr", [0.2, 0.5])
def test_batched_nms_matches_per_class_brute_force(thr):
    gen = torch.Generator().manual_seed(11)
    boxes = _random_boxes(150, gen, size=30.0) - 10.0  # negative coordinates too
    scores = torch.rand(150, generator=gen)
    labels = torch.randint(0, 4, (150,), generator=gen)
    keep = B.batched_nms(boxes, scores, labels, thr, use_torchvision=False)
    expected = []
    for c in range(4):
        idx = (labels == c).nonzero().flatten().tolist()
        kept = _py_nms([boxes[i].tolist() for i in idx], [scores[i].item() for i in idx], thr)
        expected += [idx[k] for k in kept]
    expected.sort(key=lambda i: -scores[i].item())
    assert keep.tolist() == expected
    # Classes really are separate: the same box twice with two labels survives twice.
    same = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 2)
    both = B.batched_nms(same, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5)
    assert both.tolist() == [0, 1]
    assert B.nms(same, torch.tensor([0.9, 0.8]), 0.5, use_torchvision=False).tolist() == [0]
    # Negative coordinates: an offset of labels * (max + 1) alone would make these two overlap.
    neg = torch.tensor([[-10.0, -10.0, 0.0, 0.0], [-9.0, -9.0, 1.0, 1.0]])
    kept = B.batched_nms(
        neg, torch.tensor([0.9, 0.8]), torch.tensor([1, 0]), 0.5, use_torchvision=False
    )
    assert kept.tolist() == [0, 1]


def test_nms_empty_input():
    empty = torch.zeros(0, 4)
    assert B.nms(empty, torch.zeros(0), 0.5).numel() == 0
    assert B.batched_nms(empty, torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).numel() == 0


def test_torchvision_fast_path_keeps_the_same_boxes():
    if B._torchvision_ops() is None:
        pytest.skip("torchvision.ops is not importable here")
    gen = torch.Generator().manual_seed(12)
    boxes = _random_boxes(300, gen, size=60.0)
    scores = torch.rand(300, generator=gen)  # distinct scores: kernels may order ties differently
    labels = torch.randint(0, 5, (300,), generator=gen)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        b, s, lab = boxes.to(device), scores.to(device), labels.to(device)
        for thr in (0.3, 0.5):
            fast = B.nms(b, s, thr, use_torchvision=True)
            slow = B.nms(b, s, thr, use_torchvision=False)
            assert fast.tolist() == slow.tolist()
            fast = B.batched_nms(b, s, lab, thr, use_torchvision=True)
            slow = B.batched_nms(b, s, lab, thr, use_torchvision=False)
            assert fast.tolist() == slow.tolist()
