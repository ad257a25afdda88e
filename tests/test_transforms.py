"""Transforms and collation: boxes follow the pixels, bookkeeping maps predictions back exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nassearch.data.collate import collate_detection
from nassearch.data.transforms import (
    Compose,
    Normalize,
    Pad,
    RandomHorizontalFlip,
    RandomScaleSquareCrop,
    ResizeKeepRatio,
    SquareResize,
    build_transforms,
    crop,
    make_target,
    map_boxes_to_original,
)
from nassearch.errors import NasSearchError


def _blocks_image(h: int, w: int, boxes) -> np.ndarray:
    """Black image with each (integer) box filled white."""
    img = np.zeros((h, w, 3), dtype=np.uint8)
    for x1, y1, x2, y2 in boxes:
        img[int(y1) : int(y2), int(x1) : int(x2)] = 255
    return img


def _random_boxes(rng, h, w, n=8):
    xy = rng.uniform(0, [w, h], size=(n, 2))
    wh = rng.uniform(2, [w / 2, h / 2], size=(n, 2))
    x2y2 = np.minimum(xy + wh, [w, h])
    return np.concatenate([xy, x2y2], axis=1).astype(np.float32)


# ------------------------------------------------------------------------------------- resize


@pytest.mark.parametrize(
    "hw, short, max_size, scale",
    [
        ((100, 200), 50, 80, 0.4),  # long side limits: min(50/100, 80/200)
        ((100, 200), 50, 1000, 0.5),  # short side limits
        ((300, 150), 75, None, 0.5),
    ],
)
def test_resize_keep_ratio_scale_and_boxes(hw, short, max_size, scale):
    h, w = hw
    boxes = np.array([[10, 20, 30, 60], [0, 0, w, h]], dtype=np.float32)
    img, t = ResizeKeepRatio(short, max_size)(
        np.zeros((h, w, 3), np.uint8), make_target(boxes, [0, 1], hw)
    )
    assert img.shape == (round(h * scale), round(w * scale), 3)
    assert t["img_size"] == img.shape[:2]
    assert t["scale"] == pytest.approx((scale, scale))
    np.testing.assert_allclose(t["boxes"], boxes * scale, rtol=1e-6)
    assert t["labels"].tolist() == [0, 1]


def test_resize_rounding_uses_exact_axis_ratios():
    boxes = np.array([[0, 0, 47, 33], [4, 6, 20, 10]], dtype=np.float32)
    img, t = ResizeKeepRatio(16, 100)(
        np.zeros((33, 47, 3), np.uint8), make_target(boxes, [0, 0], (33, 47))
    )
    # scale = 16/33; sizes int(x * s + 0.5): 33 -> 16, 47 -> 23
    assert img.shape[:2] == (16, 23)
    sx, sy = 23 / 47, 16 / 33
    assert t["scale"] == pytest.approx((sx, sy))
    np.testing.assert_allclose(t["boxes"][0], [0, 0, 23, 16], rtol=1e-6)
    np.testing.assert_allclose(t["boxes"][1], [4 * sx, 6 * sy, 20 * sx, 10 * sy], rtol=1e-6)


def test_resize_moves_pixels_with_boxes():
    boxes = np.array([[10, 8, 30, 16]], dtype=np.float32)
    img = _blocks_image(40, 40, boxes)
    out, t = ResizeKeepRatio(80, 1000)(img, make_target(boxes, [0], (40, 40)))
    x1, y1, x2, y2 = t["boxes"][0].astype(int)
    assert (x1, y1, x2, y2) == (20, 16, 60, 32)
    assert out[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1].min() == 255  # inside stays white
    assert out[y1 - 2].max() == 0 and out[y2 + 1].max() == 0  # rows outside stay black
    assert out[:, x1 - 2].max() == 0 and out[:, x2 + 1].max() == 0


def test_square_resize_fits_inside():
    boxes = np.array([[5, 5, 50, 20]], dtype=np.float32)
    img, t = SquareResize(64)(np.zeros((60, 120, 3), np.uint8), make_target(boxes, [3], (60, 120)))
    assert img.shape[:2] == (32, 64)
    np.testing.assert_allclose(t["boxes"], boxes * (64 / 120), rtol=1e-6)


def test_resize_float_image():
    img = np.random.default_rng(0).random((20, 30, 3)).astype(np.float32)
    out, _ = ResizeKeepRatio(10, 100)(img, make_target(np.zeros((0, 4)), [], (20, 30)))
    assert out.shape == (10, 15, 3) and out.dtype == np.float32
    assert abs(float(out.mean()) - float(img.mean())) < 0.02


# --------------------------------------------------------------------------------------- flip


def test_flip_boxes_and_pixels():
    boxes = np.array([[10, 20, 30, 40], [0, 0, 5, 5]], dtype=np.float32)
    img = _blocks_image(50, 100, boxes)
    out, t = RandomHorizontalFlip(1.0)(
        img, make_target(boxes, [0, 1], (50, 100)), np.random.default_rng(0)
    )
    np.testing.assert_array_equal(t["boxes"], [[70, 20, 90, 40], [95, 0, 100, 5]])
    np.testing.assert_array_equal(out, img[:, ::-1])
    assert out[25, 75].min() == 255 and out[25, 15].max() == 0
    assert t["flipped"] is True
    np.testing.assert_allclose(map_boxes_to_original(t["boxes"], t), boxes)


def test_flip_probability():
    rng = np.random.default_rng(0)
    t0 = make_target(np.array([[1, 1, 2, 2]]), [0], (4, 4))
    img = np.zeros((4, 4, 3), np.uint8)
    assert not any(RandomHorizontalFlip(0.0)(img, t0, rng)[1]["flipped"] for _ in range(50))
    assert all(RandomHorizontalFlip(1.0)(img, t0, rng)[1]["flipped"] for _ in range(50))
    n = sum(RandomHorizontalFlip(0.5)(img, t0, rng)[1]["flipped"] for _ in range(400))
    assert 150 < n < 250


# --------------------------------------------------------------------------------------- crop


def test_crop_clips_and_drops_boxes():
    boxes = np.array(
        [
            [10, 10, 20, 20],  # inside
            [0, 0, 15, 40],  # partly inside -> clipped
            [50, 50, 60, 60],  # outside -> dropped
            [11, 5, 11.5, 30],  # thinner than 1 px -> dropped
            [29.5, 12, 40, 18],  # only 0.5 px inside -> dropped
        ],
        dtype=np.float32,
    )
    img = np.arange(40 * 40 * 3, dtype=np.float32).reshape(40, 40, 3)
    out, t = crop(img, make_target(boxes, [0, 1, 2, 3, 4], (40, 40)), x0=5, y0=8, w=25, h=20)
    np.testing.assert_array_equal(out, img[8:28, 5:30])
    np.testing.assert_array_equal(t["boxes"], [[5, 2, 15, 12], [0, 0, 10, 20]])
    assert t["labels"].tolist() == [0, 1]
    assert t["offset"] == (5, 8) and t["img_size"] == (20, 25)


def test_random_scale_square_crop_is_consistent_with_plain_resize():
    rng = np.random.default_rng(0)
    h, w, size = 60, 100, 48
    img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    boxes = _random_boxes(rng, h, w, n=12)
    tf = RandomScaleSquareCrop(size, scale_range=(0.6, 2.0))
    offsets = set()
    for seed in range(40):
        out, t = tf(img, make_target(boxes, np.arange(12), (h, w)), np.random.default_rng(seed))
        sx, sy = t["scale"]
        ox, oy = t["offset"]
        assert out.shape[0] <= size and out.shape[1] <= size and t["img_size"] == out.shape[:2]
        # the image was scaled to fit inside (size*j)^2 for some j in the range
        assert 0.6 * size - 1 <= max(h * sy, w * sx) <= 2.0 * size + 1
        # pixels equal a plain Pillow resize of the original, cropped at the recorded offset
        rh, rw = round(h * sy), round(w * sx)
        ref = np.asarray(Image.fromarray(img).resize((rw, rh), Image.BILINEAR))
        oy_i, ox_i = int(oy), int(ox)
        np.testing.assert_array_equal(
            out, ref[oy_i : oy_i + out.shape[0], ox_i : ox_i + out.shape[1]]
        )
        # boxes: scale, shift, clip, drop < 1 px, computed independently
        exp = boxes * np.array([sx, sy, sx, sy], np.float32) - np.array(
            [ox, oy, ox, oy], np.float32
        )
        exp = np.clip(exp, 0, [out.shape[1], out.shape[0]] * 2)
        keep = ((exp[:, 2] - exp[:, 0]) >= 1) & ((exp[:, 3] - exp[:, 1]) >= 1)
        np.testing.assert_allclose(t["boxes"], exp[keep], atol=1e-4)
        assert t["labels"].tolist() == np.arange(12)[keep].tolist()
        offsets.add((ox_i, oy_i))
    assert len(offsets) > 10  # the crop window really moves


@pytest.mark.parametrize("flip_first", [False, True])
def test_train_pipeline_maps_back_to_clipped_originals(flip_first):
    """After scale + crop + flip (in either order), kept boxes map back to original boxes
    intersected with the crop window; this checks offset bookkeeping under flips."""
    rng = np.random.default_rng(1)
    h, w = 50, 90
    boxes = _random_boxes(rng, h, w, n=10)
    steps = [RandomScaleSquareCrop(32, (1.0, 2.5)), RandomHorizontalFlip(1.0)]
    tf = Compose(steps[::-1] if flip_first else steps)
    for seed in range(20):
        _, t = tf(
            np.zeros((h, w, 3), np.uint8),
            make_target(boxes, np.arange(10), (h, w)),
            np.random.default_rng(seed),
        )
        assert t["flipped"]
        back = map_boxes_to_original(t["boxes"], t)
        # crop window in original coordinates
        win = map_boxes_to_original(
            np.array([[0, 0, t["img_size"][1], t["img_size"][0]]], np.float32), t
        )[0]
        ref = boxes[t["labels"]]
        ref = np.concatenate(
            [np.maximum(ref[:, :2], win[:2]), np.minimum(ref[:, 2:], win[2:])], axis=1
        )
        np.testing.assert_allclose(back, ref, atol=1e-3)


@pytest.mark.parametrize("mode", ["square", "resize"])
def test_eval_pipeline_maps_back_exactly(mode):
    rng = np.random.default_rng(2)
    tf = build_transforms(mode=mode, train=False, size=64, short_side=40, max_size=70)
    for h, w in [(37, 91), (120, 45), (64, 64)]:
        boxes = _random_boxes(rng, h, w)
        _, t = tf(np.zeros((h, w, 3), np.uint8), make_target(boxes, np.zeros(8), (h, w)), None)
        assert not t["flipped"] and len(t["boxes"]) == 8
        np.testing.assert_allclose(map_boxes_to_original(t["boxes"], t), boxes, atol=1e-4)
        back = map_boxes_to_original(torch.from_numpy(t["boxes"]), t)
        assert isinstance(back, torch.Tensor)
        np.testing.assert_allclose(back.numpy(), boxes, atol=1e-4)


# ---------------------------------------------------------------------------------- normalise


def test_normalize_imagenet_and_caffe_known_pixel():
    img = np.zeros((2, 3, 3), dtype=np.uint8)
    img[1, 2] = (10, 20, 30)  # R, G, B
    t = make_target(np.zeros((0, 4)), [], (2, 3))
    out, _ = Normalize("imagenet")(img, t)
    assert out.dtype == torch.float32 and out.shape == (3, 2, 3)
    expected = [(10 - 123.675) / 58.395, (20 - 116.28) / 57.12, (30 - 103.53) / 57.375]
    assert out[:, 1, 2].tolist() == pytest.approx(expected, abs=1e-5)
    assert out[:, 0, 0].tolist() == pytest.approx(
        [-123.675 / 58.395, -116.28 / 57.12, -103.53 / 57.375], abs=1e-5
    )
    out, _ = Normalize("caffe")(img, t)
    # BGR channel order, BGR means, std 1
    assert out[:, 1, 2].tolist() == pytest.approx(
        [30 - 103.53, 20 - 116.28, 10 - 123.675], abs=1e-4
    )
    with pytest.raises(NasSearchError, match="bgr"):
        Normalize("bgr")


# ------------------------------------------------------------------------------------- builder


def test_build_transforms_train_vs_eval():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(50, 80, 3), dtype=np.uint8)
    boxes = _random_boxes(rng, 50, 80)
    ev = build_transforms(mode="square", train=False, size=64)
    assert [type(s) for s in ev.transforms] == [SquareResize, Normalize]
    a, ta = ev(img, make_target(boxes, np.zeros(8), (50, 80)), np.random.default_rng(1))
    b, tb = ev(img, make_target(boxes, np.zeros(8), (50, 80)), np.random.default_rng(2))
    assert torch.equal(a, b) and a.shape == (3, 40, 64)
    tr = build_transforms(mode="square", train=True, size=64, flip_prob=0.5)
    assert [type(s) for s in tr.transforms] == [
        RandomScaleSquareCrop,
        RandomHorizontalFlip,
        Normalize,
    ]
    shapes = {
        tuple(tr(img, make_target(boxes, np.zeros(8), (50, 80)), np.random.default_rng(s))[0].shape)
        for s in range(10)
    }
    assert len(shapes) > 1  # scale jitter
    rs = build_transforms(mode="resize", train=True, short_side=32, max_size=64, flip_prob=0.0)
    assert [type(s) for s in rs.transforms] == [ResizeKeepRatio, Normalize]
    with pytest.raises(NasSearchError, match="'crop'"):
        build_transforms(mode="crop", train=True)


def test_pad_single_image():
    img = np.ones((30, 50, 3), np.uint8)
    t = make_target(np.zeros((0, 4)), [], (30, 50))
    out, t2 = Pad(size_divisor=32)(img, t)
    assert out.shape == (32, 64, 3) and out[:30, :50].min() == 1 and out[30:].max() == 0
    assert t2["img_size"] == (30, 50)
    out, _ = Pad(size=(40, 60))(torch.ones(3, 30, 50), t)
    assert out.shape == (3, 40, 60) and out[:, :30, :50].min() == 1 and out[:, :, 50:].max() == 0
    with pytest.raises(NasSearchError):
        Pad(size=(20, 60))(img, t)


# ------------------------------------------------------------------------------------- collate


def _sample(h, w, value):
    return torch.full((3, h, w), float(value)), {"boxes": torch.zeros(0, 4), "image_id": value}


def test_collate_pads_to_divisor_top_left():
    batch = [_sample(50, 70, 1), _sample(64, 33, 2)]
    images, targets = collate_detection(batch, size_divisor=32)
    assert images.shape == (2, 3, 64, 96)
    assert [t["image_id"] for t in targets] == [1, 2]
    assert torch.equal(images[0, :, :50, :70], batch[0][0])
    assert images[0, :, 50:].abs().sum() == 0 and images[0, :, :, 70:].abs().sum() == 0
    assert torch.equal(images[1, :, :64, :33], batch[1][0])
    assert images[1, :, :, 33:].abs().sum() == 0
    assert collate_detection(batch, size_divisor=1)[0].shape == (2, 3, 64, 70)
    assert collate_detection(batch, size_divisor=128)[0].shape == (2, 3, 128, 128)


def test_collate_fixed_pad_size():
    images, _ = collate_detection([_sample(50, 70, 1)], pad_to=(80, 96))
    assert images.shape == (1, 3, 80, 96)
    assert torch.equal(images[0, :, :50, :70], torch.ones(3, 50, 70))
    with pytest.raises(NasSearchError, match="64x64"):
        collate_detection([_sample(50, 70, 1)], pad_to=(64, 64))
