"""CocoDetection: label mapping, crowd/empty handling, seeded splits, determinism, input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nassearch.data.coco import CocoDetection
from nassearch.data.collate import collate_detection
from nassearch.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms
from nassearch.errors import NasSearchError

CATS = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 7, "name": "train"}]


def _image_array(image_id: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(image_id)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def write_coco(root: Path, images, annotations, categories=CATS, write_images=True):
    """Write PNGs for `images` (dicts with id/width/height) and a COCO json; return (dir, file)."""
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    imgs = []
    for im in images:
        entry = {"file_name": f"{im['id']:04d}.png", **im}
        imgs.append(entry)
        if write_images:
            arr = _image_array(im["id"], im["height"], im["width"])
            Image.fromarray(arr).save(img_dir / entry["file_name"])
    ann_file = root / "instances.json"
    data = {"images": imgs, "annotations": annotations, "categories": categories}
    ann_file.write_text(json.dumps(data))
    return img_dir, ann_file


def _ann(aid, image_id, cat, bbox, iscrowd=0):
    return {"id": aid, "image_id": image_id, "category_id": cat, "bbox": bbox, "iscrowd": iscrowd}


@pytest.fixture
def small_coco(tmp_path):
    images = [
        {"id": 1, "width": 40, "height": 30},
        {"id": 2, "width": 32, "height": 48},
        {"id": 3, "width": 24, "height": 24},  # no annotations
        {"id": 4, "width": 20, "height": 20},  # only a crowd box
        {"id": 5, "width": 20, "height": 20},  # only a zero-width box
    ]
    anns = [
        _ann(10, 1, 90, [2.0, 3.0, 10.0, 5.0]),
        _ann(11, 1, 7, [20.5, 1.0, 4.0, 8.0]),
        _ann(12, 1, 1, [0.0, 0.0, 40.0, 30.0], iscrowd=1),
        _ann(13, 2, 1, [5.0, 6.0, 7.0, 8.0]),
        _ann(14, 4, 7, [1.0, 1.0, 5.0, 5.0], iscrowd=1),
        _ann(15, 5, 7, [1.0, 1.0, 0.0, 5.0]),
    ]
    return write_coco(tmp_path, images, anns)


def test_label_mapping_non_contiguous_round_trip(small_coco):
    ds = CocoDetection(*small_coco)
    assert ds.cat_ids == [1, 7, 90]
    assert ds.class_names == ["person", "train", "toothbrush"]
    assert ds.num_classes == 3
    for label, cat in enumerate([1, 7, 90]):
        assert ds.label_to_cat_id(label) == cat
        assert ds.cat_id_to_label(cat) == label
    _, target = ds[ds.image_ids.index(1)]
    # annotation 10 is category 90 -> label 2, annotation 11 is category 7 -> label 1
    assert target["labels"].tolist() == [2, 1]
    assert target["labels"].dtype == torch.int64


def test_sample_matches_contract(small_coco):
    ds = CocoDetection(*small_coco)
    image, target = ds[ds.image_ids.index(1)]
    assert image.dtype == torch.float32 and image.shape == (3, 30, 40)
    raw = _image_array(1, 30, 40).astype(np.float32)
    expected = (raw - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert torch.allclose(image, torch.from_numpy(expected.transpose(2, 0, 1)).float(), atol=1e-5)
    assert target["boxes"].dtype == torch.float32
    assert target["boxes"].tolist() == [[2.0, 3.0, 12.0, 8.0], [20.5, 1.0, 24.5, 9.0]]
    assert target["image_id"] == 1
    assert target["orig_size"] == (30, 40) and target["img_size"] == (30, 40)
    assert target["scale"] == (1.0, 1.0) and target["offset"] == (0.0, 0.0)
    assert target["flipped"] is False


def test_crowd_excluded_from_targets_but_kept_in_coco(small_coco):
    ds = CocoDetection(*small_coco)
    _, target = ds[ds.image_ids.index(1)]
    assert len(target["boxes"]) == 2  # crowd annotation 12 is not a training target
    assert 12 in ds.coco.getAnnIds(imgIds=[1], iscrowd=None)
    assert ds.coco.anns[12]["iscrowd"] == 1


def test_skip_empty_train_vs_eval(small_coco):
    # 3: no annotations, 4: only crowd, 5: only a zero-width box -> all "empty" for training
    assert CocoDetection(*small_coco, train=True).image_ids == [1, 2]
    assert CocoDetection(*small_coco, train=True, skip_empty=False).image_ids == [1, 2, 3, 4, 5]
    eval_ds = CocoDetection(*small_coco, train=False)
    assert eval_ds.image_ids == [1, 2, 3, 4, 5]
    for i in range(len(eval_ds)):
        image, target = eval_ds[i]
        if target["image_id"] in (3, 4, 5):
            assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    # zero-size boxes are dropped, and the dataset fills COCOeval's optional keys
    assert eval_ds.coco.anns[10]["area"] == 50.0


def _many_images(tmp_path, n=30, empty=(3, 7)):
    images = [{"id": 100 + i, "width": 8, "height": 8} for i in range(n)]
    anns = [_ann(i + 1, 100 + i, 1, [1, 1, 4, 4]) for i in range(n) if i not in empty]
    return write_coco(tmp_path, images, anns)


def test_holdout_parts_disjoint_cover_and_deterministic(tmp_path):
    paths = _many_images(tmp_path)
    all_ids = set(range(100, 130))

    def part(name, seed=0, train=False):
        ds = CocoDetection(*paths, train=train, holdout=9, holdout_seed=seed, holdout_part=name)
        return ds.image_ids

    held, rest = part("held_out"), part("rest")
    assert len(held) == 9 and len(rest) == 21
    assert set(held).isdisjoint(rest) and set(held) | set(rest) == all_ids
    assert part("held_out") == held  # deterministic
    assert part("held_out", seed=1) != held  # seed-dependent
    # the split is made before empty images are filtered, so train and eval views agree
    assert set(part("rest", train=True)) == set(rest) - {103, 107}


def test_subset_deterministic_and_seed_dependent(tmp_path):
    paths = _many_images(tmp_path)
    a = CocoDetection(*paths, subset=6, subset_seed=0).image_ids
    assert len(a) == 6 and len(set(a)) == 6
    assert CocoDetection(*paths, subset=6, subset_seed=0).image_ids == a
    assert CocoDetection(*paths, subset=6, subset_seed=1).image_ids != a
    assert not {103, 107} & set(a)  # subset is drawn from the filtered (non-empty) images
    rest = set(CocoDetection(*paths, holdout=10).image_ids)
    assert set(CocoDetection(*paths, holdout=10, subset=5).image_ids) <= rest


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"holdout": 31}, "holdout=31"),
        ({"holdout": -1}, "holdout=-1"),
        ({"holdout": 30}, "leaves no images"),
        ({"holdout": 5, "holdout_part": "both"}, "holdout_part"),
        ({"subset": 0}, "subset=0"),
        ({"subset": 29}, "subset=29"),  # 28 non-empty training images
    ],
)
def test_bad_holdout_and_subset(tmp_path, kwargs, match):
    with pytest.raises(NasSearchError, match=match):
        CocoDetection(*_many_images(tmp_path), **kwargs)


def test_augmentation_depends_only_on_seed_epoch_index(small_coco):
    tf = build_transforms(mode="square", train=True, size=16, scale_range=(0.5, 2.0))

    def sample(ds, i):
        img, t = ds[i]
        return img, t["boxes"], t["offset"], t["flipped"]

    def epoch_samples(ds):
        return [sample(ds, i) for i in range(len(ds))]

    ds = CocoDetection(*small_coco, tf, seed=3)
    first = epoch_samples(ds)
    again = epoch_samples(CocoDetection(*small_coco, tf, seed=3))
    for x, y in zip(first, again, strict=True):
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) and x[2:] == y[2:]
    ds.set_epoch(1)
    other = epoch_samples(ds)
    assert any(
        x[0].shape != y[0].shape or not torch.equal(x[0], y[0])
        for x, y in zip(first, other, strict=True)
    )
    # Worker processes see the same stream as in-process indexing.
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, collate_fn=_first)
    for (img, t), ref in zip(loader, other, strict=True):
        assert torch.equal(img, ref[0]) and torch.equal(t["boxes"], ref[1])


def _first(batch):
    return batch[0]


def test_collate_of_real_samples(small_coco):
    ds = CocoDetection(*small_coco, train=False)
    images, targets = collate_detection([ds[0], ds[1]], size_divisor=32)
    assert images.shape == (2, 3, 64, 64)
    assert [t["image_id"] for t in targets] == ds.image_ids[:2]
    assert torch.equal(images[1, :, :48, :32], ds[1][0])


# ------------------------------------------------------------------------------------ errors


def _one_line_error(fn, *needles):
    with pytest.raises(NasSearchError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert str(needle) in msg, (needle, msg)
    return msg


def test_error_missing_annotation_file(small_coco, tmp_path):
    img_dir, _ = small_coco
    missing = tmp_path / "nope.json"
    _one_line_error(lambda: CocoDetection(img_dir, missing), missing, "not found")


def test_error_malformed_json(small_coco):
    img_dir, ann_file = small_coco
    ann_file.write_text('{"images": [,]}')
    _one_line_error(lambda: CocoDetection(img_dir, ann_file), ann_file, "not valid JSON", "line 1")


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_error_missing_key(small_coco, key):
    img_dir, ann_file = small_coco
    data = json.loads(ann_file.read_text())
    del data[key]
    ann_file.write_text(json.dumps(data))
    _one_line_error(lambda: CocoDetection(img_dir, ann_file), ann_file, f"missing key '{key}'")


def test_error_not_coco(small_coco):
    img_dir, ann_file = small_coco
    ann_file.write_text("[1, 2]")
    _one_line_error(lambda: CocoDetection(img_dir, ann_file), ann_file, "not a COCO")
    ann_file.write_text(json.dumps({"images": {}, "annotations": [], "categories": []}))
    _one_line_error(lambda: CocoDetection(img_dir, ann_file), ann_file, "'images' must be a list")


def test_error_unknown_category(small_coco):
    img_dir, ann_file = small_coco
    data = json.loads(ann_file.read_text())
    data["annotations"][1]["category_id"] = 55
    ann_file.write_text(json.dumps(data))
    _one_line_error(
        lambda: CocoDetection(img_dir, ann_file), ann_file, "annotation 11", "category_id 55"
    )


def test_error_unknown_image_id(small_coco):
    img_dir, ann_file = small_coco
    data = json.loads(ann_file.read_text())
    data["annotations"][0]["image_id"] = 999
    ann_file.write_text(json.dumps(data))
    _one_line_error(lambda: CocoDetection(img_dir, ann_file), ann_file, "annotation 10", "999")


def test_error_missing_image_file(small_coco):
    img_dir, ann_file = small_coco
    (img_dir / "0002.png").unlink()
    _one_line_error(lambda: CocoDetection(img_dir, ann_file), img_dir / "0002.png", "image id 2")
    # Without the check the dataset builds, and loading names the file.
    ds = CocoDetection(img_dir, ann_file, check_files=False)
    _one_line_error(lambda: ds[ds.image_ids.index(2)], img_dir / "0002.png")


def test_error_missing_image_dir(small_coco, tmp_path):
    _, ann_file = small_coco
    _one_line_error(lambda: CocoDetection(tmp_path / "nodir", ann_file), tmp_path / "nodir")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_error_corrupt_image_at_load(small_coco, damage):
    img_dir, ann_file = small_coco
    path = img_dir / "0001.png"
    data = path.read_bytes()
    path.write_bytes(b"this is not an image" if damage == "garbage" else data[: len(data) // 2])
    ds = CocoDetection(img_dir, ann_file)  # construction only checks existence
    _one_line_error(lambda: ds[ds.image_ids.index(1)], path, "cannot decode")


def test_error_empty_dataset(tmp_path):
    img_dir, ann_file = write_coco(tmp_path / "a", [], [])
    _one_line_error(lambda: CocoDetection(img_dir, ann_file), ann_file, "no images")
    images = [{"id": 1, "width": 8, "height": 8}, {"id": 2, "width": 8, "height": 8}]
    anns = [_ann(1, 1, 1, [0, 0, 4, 4], iscrowd=1)]
    img_dir, ann_file = write_coco(tmp_path / "b", images, anns)
    _one_line_error(
        lambda: CocoDetection(img_dir, ann_file), ann_file, "all 2 images were skipped as empty"
    )
    assert len(CocoDetection(img_dir, ann_file, train=False)) == 2
