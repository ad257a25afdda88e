"""COCO-format detection dataset read through pycocotools, with seeded holdout/subset splits."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO

from nassearch.data.transforms import Normalize, make_target
from nassearch.errors import NasSearchError, first_line


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _type_name(x: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string"}.get(type(x), type(x).__name__)


def load_coco_json(ann_file: str | Path) -> dict[str, Any]:
    """Read and validate a COCO instances file; fills the optional `area`/`iscrowd` keys COCOeval needs."""
    path = Path(ann_file)
    if not path.is_file():
        raise NasSearchError(f"annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise NasSearchError(
            f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
        ) from None
    except (UnicodeDecodeError, OSError) as e:
        raise NasSearchError(f"{path}: cannot read annotation file ({e})") from None
    _validate_coco(data, path)
    return data


def _validate_coco(data: Any, path: Path) -> None:
    """One-line errors for anything pycocotools would choke on or silently misread."""
    if not isinstance(data, dict):
        raise NasSearchError(
            f"{path}: not a COCO annotation file (top level is {_type_name(data)}, expected an "
            "object with 'images', 'annotations' and 'categories')"
        )
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise NasSearchError(f"{path}: not a COCO annotation file: missing key '{key}'")
        if not isinstance(data[key], list):
            raise NasSearchError(f"{path}: '{key}' must be a list, got {_type_name(data[key])}")

    image_ids: set[int] = set()
    for k, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not _is_int(img.get("id")):
            raise NasSearchError(f"{path}: images[{k}] has no integer 'id'")
        if not isinstance(img.get("file_name"), str):
            raise NasSearchError(f"{path}: image id {img['id']} has no string 'file_name'")
        if img["id"] in image_ids:
            raise NasSearchError(f"{path}: duplicate image id {img['id']}")
        image_ids.add(img["id"])

    cat_ids: set[int] = set()
    for k, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")):
            raise NasSearchError(f"{path}: categories[{k}] has no integer 'id'")
        if not isinstance(cat.get("name"), str):
            raise NasSearchError(f"{path}: category id {cat['id']} has no string 'name'")
        if cat["id"] in cat_ids:
            raise NasSearchError(f"{path}: duplicate category id {cat['id']}")
        cat_ids.add(cat["id"])

    ann_ids: set[int] = set()
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not _is_int(ann.get("id")):
            raise NasSearchError(f"{path}: annotations[{k}] has no integer 'id'")
        aid = ann["id"]
        if aid in ann_ids:
            raise NasSearchError(f"{path}: duplicate annotation id {aid}")
        ann_ids.add(aid)
        if not _is_int(ann.get("image_id")) or ann["image_id"] not in image_ids:
            raise NasSearchError(
                f"{path}: annotation {aid} has image_id {ann.get('image_id')!r} which is not in 'images'"
            )
        if not _is_int(ann.get("category_id")) or ann["category_id"] not in cat_ids:
            raise NasSearchError(
                f"{path}: annotation {aid} has category_id {ann.get('category_id')!r} "
                "which is not in 'categories'"
            )
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise NasSearchError(
                f"{path}: annotation {aid} needs 'bbox' as 4 finite numbers [x, y, w, h], got {bbox!r}"
            )
        # COCOeval reads both keys; files written by hand often leave them out.
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(bbox[2] * bbox[3]))


def _seeded_permutation(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n)


class CocoDetection(torch.utils.data.Dataset):
    """COCO-format detection dataset: (image [3,H,W] float32, target dict) per the data contract.

    Category ids sorted ascending map to labels 0..C-1. Crowd boxes are left out of the targets
    but stay in `coco` (the ground truth for COCOeval). Augmentation randomness comes from
    ``default_rng([seed, epoch, index])`` so it is independent of DataLoader workers and resumable.
    """

    def __init__(
        self,
        images_dir: str | Path,
        ann_file: str | Path,
        transforms: Any = None,
        *,
        train: bool = True,
        skip_empty: bool = True,
        subset: int | None = None,
        subset_seed: int = 0,
        holdout: int | None = None,
        holdout_seed: int = 0,
        holdout_part: str = "rest",
        seed: int = 0,
        check_files: bool = True,
    ) -> None:
        self.images_dir = Path(images_dir)
        self.ann_file = Path(ann_file)
        # Without a pipeline the image is only normalised (ImageNet statistics), never resized.
        self.transforms = transforms if transforms is not None else Normalize("imagenet")
        self.train = train
        self.seed = seed
        self.epoch = 0

        data = load_coco_json(self.ann_file)
        if not self.images_dir.is_dir():
            raise NasSearchError(f"image folder not found: {self.images_dir}")
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO()
            coco.dataset = data
            coco.createIndex()
        self.coco = coco

        self.cat_ids: list[int] = sorted(coco.cats)
        self.class_names: list[str] = [coco.cats[c]["name"] for c in self.cat_ids]
        self._cat_to_label = {c: i for i, c in enumerate(self.cat_ids)}

        # Training targets: non-crowd boxes with positive size, as xyxy arrays per image.
        self._targets: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for img_id in coco.imgs:
            boxes, labels = [], []
            for ann in coco.imgToAnns.get(img_id, []):
                x, y, w, h = ann["bbox"]
                if ann.get("iscrowd", 0) or w <= 0 or h <= 0:
                    continue
                boxes.append([x, y, x + w, y + h])
                labels.append(self._cat_to_label[ann["category_id"]])
            self._targets[img_id] = (
                np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                np.asarray(labels, dtype=np.int64),
            )

        self.image_ids: list[int] = self._select_ids(
            skip_empty=train and skip_empty,
            subset=subset,
            subset_seed=subset_seed,
            holdout=holdout,
            holdout_seed=holdout_seed,
            holdout_part=holdout_part,
        )
        if check_files:
            for img_id in self.image_ids:
                p = self.image_path(img_id)
                if not p.is_file():
                    raise NasSearchError(f"image file not found: {p} (image id {img_id})")

    def _select_ids(
        self,
        *,
        skip_empty: bool,
        subset: int | None,
        subset_seed: int,
        holdout: int | None,
        holdout_seed: int,
        holdout_part: str,
    ) -> list[int]:
        """Holdout split on the full image list (so train/eval views agree), then filter, then subset."""
        ids = sorted(self.coco.imgs)
        if not ids:
            raise NasSearchError(f"{self.ann_file}: dataset is empty: the file lists no images")
        if holdout is not None:
            if holdout_part not in ("rest", "held_out"):
                raise NasSearchError(
                    f"holdout_part must be 'rest' or 'held_out', got {holdout_part!r}"
                )
            if not _is_int(holdout) or holdout < 0 or holdout > len(ids):
                raise NasSearchError(
                    f"{self.ann_file}: holdout={holdout!r} must be an integer in 0..{len(ids)} "
                    "(the number of images)"
                )
            held = set(
                np.asarray(ids)[_seeded_permutation(len(ids), holdout_seed)[:holdout]].tolist()
            )
            want_held = holdout_part == "held_out"
            ids = [i for i in ids if (i in held) == want_held]
            if not ids:
                raise NasSearchError(
                    f"{self.ann_file}: dataset is empty: holdout={holdout} leaves no images in "
                    f"part {holdout_part!r}"
                )
        if skip_empty:
            n = len(ids)
            ids = [i for i in ids if len(self._targets[i][1]) > 0]
            if not ids:
                raise NasSearchError(
                    f"{self.ann_file}: dataset is empty: all {n} images were skipped as empty "
                    "(no non-crowd boxes); use skip_empty=False to keep them"
                )
        if subset is not None:
            if not _is_int(subset) or subset <= 0 or subset > len(ids):
                raise NasSearchError(
                    f"{self.ann_file}: subset={subset!r} must be an integer in 1..{len(ids)} "
                    "(the number of images left)"
                )
            chosen = np.asarray(ids)[_seeded_permutation(len(ids), subset_seed)[:subset]]
            ids = sorted(chosen.tolist())
        return ids

    # ------------------------------------------------------------------------------ mapping

    @property
    def num_classes(self) -> int:
        return len(self.cat_ids)

    def label_to_cat_id(self, label: int) -> int:
        """Contiguous label -> COCO category id."""
        return self.cat_ids[int(label)]

    def cat_id_to_label(self, cat_id: int) -> int:
        """COCO category id -> contiguous label."""
        return self._cat_to_label[int(cat_id)]

    # ------------------------------------------------------------------------------ loading

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of this epoch (call before iterating, like DistributedSampler)."""
        self.epoch = int(epoch)

    def image_path(self, image_id: int) -> Path:
        return self.images_dir / self.coco.imgs[image_id]["file_name"]

    def load_image(self, image_id: int) -> np.ndarray:
        """Decode one image to an HxWx3 uint8 RGB array."""
        path = self.image_path(image_id)
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except FileNotFoundError:
            raise NasSearchError(f"image file not found: {path} (image id {image_id})") from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise NasSearchError(
                f"cannot decode image {path} (image id {image_id}): {first_line(e)}"
            ) from None

    def load_target(self, image_id: int, image_size: tuple[int, int]) -> dict[str, Any]:
        """Untransformed target; boxes clipped to the image, degenerate ones dropped."""
        h, w = image_size
        boxes, labels = self._targets[image_id]
        boxes = np.clip(boxes, 0, np.array([w, h, w, h], dtype=np.float32))
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return make_target(boxes[keep], labels[keep], (h, w), image_id)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image_id = self.image_ids[index]
        image = self.load_image(image_id)
        target = self.load_target(image_id, image.shape[:2])
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, target = self.transforms(image, target, rng)
        if not isinstance(image, torch.Tensor):
            image = torch.from_numpy(np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1)))
        target["boxes"] = torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)
        target["labels"] = torch.as_tensor(target["labels"], dtype=torch.int64).reshape(-1)
        target["scale"] = (float(target["scale"][0]), float(target["scale"][1]))
        target["offset"] = (float(target["offset"][0]), float(target["offset"][1]))
        target["img_size"] = (int(target["img_size"][0]), int(target["img_size"][1]))
        target["flipped"] = bool(target["flipped"])
        return image.float(), target

    def __repr__(self) -> str:
        return (
            f"CocoDetection({self.ann_file}, images={len(self)}, classes={self.num_classes}, "
            f"train={self.train})"
        )
