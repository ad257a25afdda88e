"""Synthetic dataset: determinism, COCO validity, size range, tight boxes, caching."""

from __future__ import annotations

import contextlib
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from nassearch.data import synthetic
from nassearch.data.coco import CocoDetection
from nassearch.data.synthetic import (
    SHAPES,
    SyntheticSpec,
    ensure_synthetic,
    generate_synthetic,
    shape_mask,
    split_paths,
)
from nassearch.errors import NasSearchError

SMALL = {
    "num_train": 6,
    "num_val": 3,
    "image_size": 64,
    "min_object_size": 4,
    "max_object_size": 48,
}


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_deterministic_for_a_seed(tmp_path):
    a = _files(generate_synthetic(tmp_path / "a", **SMALL, seed=0))
    b = _files(generate_synthetic(tmp_path / "b", **SMALL, seed=0))
    c = _files(generate_synthetic(tmp_path / "c", **SMALL, seed=1))
    assert len(a) == 6 + 3 + 2
    assert a == b
    assert a.keys() == c.keys()
    assert a["annotations/instances_train.json"] != c["annotations/instances_train.json"]
    assert all(a[k] != c[k] for k in a if k.endswith(".png"))


def test_layout_loads_in_pycocotools_and_dataset(tmp_path):
    root = generate_synthetic(tmp_path / "s", **SMALL)
    for split, n in (("train", 6), ("val", 3)):
        images_dir, ann_file = split_paths(root, split)
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(ann_file))
        assert len(coco.imgs) == n and len(coco.anns) >= n  # every image has an object
        names = [c["name"] for c in coco.loadCats(coco.getCatIds())]
        assert len(set(names)) == len(names) >= 5
        for img in coco.imgs.values():
            with Image.open(images_dir / img["file_name"]) as im:
                assert im.size == (img["width"], img["height"]) == (64, 64)
                assert im.mode == "RGB"
        for ann in coco.anns.values():
            x, y, w, h = ann["bbox"]
            assert min(x, y) >= 0 and max(x + w, y + h) <= 64
            assert 0 < ann["area"] <= w * h and ann["iscrowd"] == 0
        ds = CocoDetection(images_dir, ann_file, train=(split == "train"))
        image, target = ds[0]
        assert image.shape == (3, 64, 64) and len(target["boxes"]) > 0


def test_default_spec_spans_16x():
    spec = SyntheticSpec()
    assert spec.max_object_size / spec.min_object_size >= 16
    assert (spec.num_train, spec.num_val, spec.image_size, spec.max_objects) == (400, 100, 160, 6)


def test_object_sizes_span_16x_and_cover_every_octave(tmp_path):
    # Same code path as the default set, at a smaller image size to keep the test fast.
    root = generate_synthetic(
        tmp_path / "s",
        num_train=400,
        num_val=0,
        image_size=64,
        min_object_size=4,
        max_object_size=64,
        max_objects=2,
        background="plain",
    )
    anns = json.loads(split_paths(root, "train")[1].read_text())["annotations"]
    long_side = np.array([max(a["bbox"][2:]) for a in anns])
    assert long_side.min() == 4 and long_side.max() == 64
    octaves = np.histogram(np.log2(long_side), bins=[2, 3, 4, 5, 6.01])[0]
    assert (octaves > 0.1 * len(anns)).all(), octaves  # roughly log-uniform
    cats = np.bincount([a["category_id"] for a in anns], minlength=len(SHAPES) + 1)[1:]
    assert (cats > 0).all()


def _pixel_bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [
        int(xs.min()),
        int(ys.min()),
        int(xs.max() - xs.min() + 1),
        int(ys.max() - ys.min() + 1),
    ]


def test_boxes_tight_to_drawn_single_objects(tmp_path):
    """One object on a black canvas: the annotated box equals the box of the non-black pixels."""
    root = generate_synthetic(
        tmp_path / "s",
        num_train=60,
        num_val=0,
        image_size=96,
        min_object_size=3,
        max_object_size=96,
        max_objects=1,
        background="plain",
    )
    images_dir, ann_file = split_paths(root, "train")
    data = json.loads(ann_file.read_text())
    assert len(data["annotations"]) == 60
    for ann in data["annotations"]:
        img = np.asarray(Image.open(images_dir / f"{ann['image_id'] - 1:06d}.png"))
        assert ann["bbox"] == _pixel_bbox(img.max(axis=2) > 0)
        assert ann["area"] == int((img.max(axis=2) > 0).sum())


def test_multi_object_pixels_inside_boxes(tmp_path):
    root = generate_synthetic(tmp_path / "s", **{**SMALL, "num_train": 10}, background="plain")
    images_dir, ann_file = split_paths(root, "train")
    data = json.loads(ann_file.read_text())
    for im in data["images"]:
        img = np.asarray(Image.open(images_dir / im["file_name"])).max(axis=2) > 0
        covered = np.zeros_like(img)
        for ann in data["annotations"]:
            if ann["image_id"] == im["id"]:
                x, y, w, h = ann["bbox"]
                assert img[y : y + h, x : x + w].any()
                covered[y : y + h, x : x + w] = True
        assert not (img & ~covered).any()


@pytest.mark.parametrize("name", SHAPES)
def test_shape_masks_fill_their_size(name):
    rng = np.random.default_rng(0)
    for _ in range(20):
        size = int(rng.integers(3, 100))
        m = shape_mask(name, size, aspect=rng.uniform(0.75, 1.33), angle=rng.uniform(0, 6.3))
        assert max(m.shape) == size
        assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()


def test_shapes_are_distinct():
    masks = [shape_mask(name, 40) for name in SHAPES]
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            a, b = masks[i], masks[j]
            h, w = max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1])
            pa, pb = np.zeros((h, w), bool), np.zeros((h, w), bool)
            pa[: a.shape[0], : a.shape[1]], pb[: b.shape[0], : b.shape[1]] = a, b
            iou = (pa & pb).sum() / (pa | pb).sum()
            assert iou < 0.85, (SHAPES[i], SHAPES[j], iou)


def test_ensure_synthetic_generates_once(tmp_path, monkeypatch):
    calls = []
    real = synthetic.generate_synthetic

    def counting(out_dir, **kw):
        calls.append(kw)
        return real(out_dir, **kw)

    monkeypatch.setattr(synthetic, "generate_synthetic", counting)
    params = {**SMALL, "num_train": 2, "num_val": 1}
    first = ensure_synthetic(tmp_path, **params)
    mtime = split_paths(first, "train")[1].stat().st_mtime_ns
    second = ensure_synthetic(tmp_path, **params)
    assert first == second and len(calls) == 1
    assert split_paths(first, "train")[1].stat().st_mtime_ns == mtime
    assert first.name == f"synthetic-{SyntheticSpec(**params).key()}"
    third = ensure_synthetic(tmp_path, **{**params, "seed": 5})
    assert third != first and len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, third.name])


def test_ensure_synthetic_concurrent_callers(tmp_path, monkeypatch):
    barrier = threading.Barrier(2)
    real = synthetic.generate_synthetic

    def synchronised(out_dir, **kw):
        barrier.wait(timeout=30)  # both callers generate, so one of them loses the rename
        return real(out_dir, **kw)

    monkeypatch.setattr(synthetic, "generate_synthetic", synchronised)
    params = {**SMALL, "num_train": 2, "num_val": 1}
    results, errors = [], []

    def worker():
        try:
            results.append(ensure_synthetic(tmp_path, **params))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2 and results[0] == results[1]
    assert [p.name for p in tmp_path.iterdir()] == [results[0].name]  # temp folders cleaned up
    assert len(list(split_paths(results[0], "train")[0].glob("*.png"))) == 2


@pytest.mark.parametrize(
    "params, match",
    [
        ({"colour": 1}, "colour"),
        ({"min_object_size": 20, "max_object_size": 10}, "max_object_size"),
        ({"max_object_size": 200}, "image_size"),
        ({"num_train": -1}, "num_train"),
        ({"background": "sky"}, "sky"),
    ],
)
def test_bad_params(tmp_path, params, match):
    with pytest.raises(NasSearchError, match=match):
        ensure_synthetic(tmp_path, **params)
