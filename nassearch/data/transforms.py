"""Detection transforms on (image HxWx3 ndarray, target dict, numpy Generator) triples.

Every transform moves the boxes with the pixels and keeps the bookkeeping that evaluation needs to
map predictions back to the original image: ``transformed = orig * scale - offset`` (then mirrored
inside the valid width when ``flipped``). ``target["boxes"]`` is a float32 ndarray [N, 4] (xyxy) and
``target["labels"]`` an int64 ndarray [N] until the dataset turns them into tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from nassearch.errors import NasSearchError

Target = dict[str, Any]

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB
IMAGENET_STD = (58.395, 57.12, 57.375)
CAFFE_MEAN = (103.53, 116.28, 123.675)  # BGR, std 1 (Detectron's caffe2 ResNets)


def make_target(
    boxes: Any,
    labels: Any,
    image_size: tuple[int, int],
    image_id: int = -1,
) -> Target:
    """Fresh target for an untransformed image of size (h, w): identity scale, zero offset."""
    h, w = int(image_size[0]), int(image_size[1])
    return {
        "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        "labels": np.asarray(labels, dtype=np.int64).reshape(-1),
        "image_id": int(image_id),
        "orig_size": (h, w),
        "img_size": (h, w),
        "scale": (1.0, 1.0),
        "offset": (0.0, 0.0),
        "flipped": False,
    }


def map_boxes_to_original(boxes: Any, target: Target) -> Any:
    """Map xyxy boxes (ndarray or tensor) from transformed to original image coordinates."""
    sx, sy = target["scale"]
    ox, oy = target["offset"]
    x1, y1, x2, y2 = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    if target["flipped"]:
        w = target["img_size"][1]
        x1, x2 = w - x2, w - x1
    x1, x2 = (x1 + ox) / sx, (x2 + ox) / sx
    y1, y2 = (y1 + oy) / sy, (y2 + oy) / sy
    if isinstance(boxes, torch.Tensor):
        return torch.stack([x1, y1, x2, y2], dim=-1)
    return np.stack([x1, y1, x2, y2], axis=-1).astype(np.asarray(boxes).dtype, copy=False)


# ----------------------------------------------------------------------------- geometric helpers


def _resize_image(image: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
    """Bilinear resize with Pillow; uint8 RGB stays uint8, float images are resized per channel."""
    if image.shape[0] == new_h and image.shape[1] == new_w:
        return image
    if image.dtype == np.uint8:
        return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32)).resize(
                (new_w, new_h), Image.BILINEAR
            )
        )
        for c in range(image.shape[2])
    ]
    return np.stack(channels, axis=-1)


def resize(image: np.ndarray, target: Target, scale: float) -> tuple[np.ndarray, Target]:
    """Resize by `scale` (output size rounded like mmdetection); boxes use the exact per-axis ratio."""
    h, w = image.shape[:2]
    new_h, new_w = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
    rx, ry = new_w / w, new_h / h
    image = _resize_image(image, new_h, new_w)
    target = dict(target)
    target["boxes"] = (target["boxes"] * np.array([rx, ry, rx, ry], dtype=np.float32)).astype(
        np.float32
    )
    sx, sy = target["scale"]
    ox, oy = target["offset"]
    # A mirror inside the old width becomes a mirror inside the new width, so `flipped` is unchanged.
    target["scale"] = (sx * rx, sy * ry)
    target["offset"] = (ox * rx, oy * ry)
    target["img_size"] = (new_h, new_w)
    return image, target


def crop(
    image: np.ndarray, target: Target, x0: int, y0: int, w: int, h: int, min_size: float = 1.0
) -> tuple[np.ndarray, Target]:
    """Crop [y0:y0+h, x0:x0+w]; boxes are clipped and dropped when thinner than `min_size` px."""
    old_h, old_w = image.shape[:2]
    image = image[y0 : y0 + h, x0 : x0 + w]
    h, w = image.shape[:2]
    boxes = target["boxes"] - np.array([x0, y0, x0, y0], dtype=np.float32)
    boxes = np.clip(boxes, 0, np.array([w, h, w, h], dtype=np.float32))
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    target = dict(target)
    target["boxes"] = boxes[keep].astype(np.float32)
    target["labels"] = target["labels"][keep]
    ox, oy = target["offset"]
    if target["flipped"]:
        # The crop happened in mirrored coordinates: in the unmirrored frame it starts at
        # old_w - x0 - w, which is what `offset` must record.
        ox += old_w - x0 - w
    else:
        ox += x0
    target["offset"] = (ox, oy + y0)
    target["img_size"] = (h, w)
    return image, target


def hflip(image: np.ndarray, target: Target) -> tuple[np.ndarray, Target]:
    """Mirror left-right; toggles `flipped` (two flips cancel)."""
    w = image.shape[1]
    image = np.ascontiguousarray(image[:, ::-1])
    boxes = target["boxes"].copy()
    boxes[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
    target = dict(target)
    target["boxes"] = boxes
    target["flipped"] = not target["flipped"]
    return image, target


# ------------------------------------------------------------------------------------ transforms


class Compose:
    """Apply transforms in order, threading the same numpy Generator through all of them."""

    def __init__(self, transforms: Sequence[Any]) -> None:
        self.transforms = list(transforms)

    def __call__(
        self, image: Any, target: Target, rng: np.random.Generator | None = None
    ) -> tuple[Any, Target]:
        for t in self.transforms:
            image, target = t(image, target, rng)
        return image, target

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


def _need_rng(rng: np.random.Generator | None, name: str) -> np.random.Generator:
    if rng is None:
        raise ValueError(f"{name} is random and needs a numpy Generator (rng=None given)")
    return rng


class ResizeKeepRatio:
    """Scale so the short side is `short_side` unless the long side would exceed `max_size` (mmdet)."""

    def __init__(self, short_side: int, max_size: int | None = None) -> None:
        self.short_side = short_side
        self.max_size = max_size

    def get_scale(self, h: int, w: int) -> float:
        scale = self.short_side / min(h, w)
        if self.max_size is not None:
            scale = min(scale, self.max_size / max(h, w))
        return scale

    def __call__(self, image, target, rng=None):
        h, w = image.shape[:2]
        return resize(image, target, self.get_scale(h, w))

    def __repr__(self) -> str:
        return f"ResizeKeepRatio(short_side={self.short_side}, max_size={self.max_size})"


class SquareResize:
    """Fit the image inside size x size keeping its ratio (NAS-FPN eval; padding comes later)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image, target, rng=None):
        h, w = image.shape[:2]
        return resize(image, target, self.size / max(h, w))

    def __repr__(self) -> str:
        return f"SquareResize(size={self.size})"


class RandomScaleSquareCrop:
    """NAS-FPN / RetinaNet-TF training recipe: random scale jitter, then a random square crop.

    j ~ U(scale_range); resize keeping ratio so the image fits inside (size*j) x (size*j); crop a
    random window of at most size x size. Batches are padded to size x size by the collate function.
    """

    def __init__(self, size: int, scale_range: tuple[float, float] = (0.8, 1.2)) -> None:
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise NasSearchError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.size = size
        self.scale_range = (float(lo), float(hi))

    def __call__(self, image, target, rng=None):
        rng = _need_rng(rng, "RandomScaleSquareCrop")
        h, w = image.shape[:2]
        j = rng.uniform(*self.scale_range)
        image, target = resize(image, target, self.size * j / max(h, w))
        h, w = image.shape[:2]
        ch, cw = min(h, self.size), min(w, self.size)
        y0 = int(rng.integers(0, h - ch + 1))
        x0 = int(rng.integers(0, w - cw + 1))
        return crop(image, target, x0, y0, cw, ch)

    def __repr__(self) -> str:
        return f"RandomScaleSquareCrop(size={self.size}, scale_range={self.scale_range})"


class RandomHorizontalFlip:
    """Mirror left-right with probability p."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image, target, rng=None):
        rng = _need_rng(rng, "RandomHorizontalFlip")
        if rng.random() < self.p:
            return hflip(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Normalize:
    """HxWx3 RGB ndarray -> normalised float32 tensor [3, H, W] (imagenet: RGB/std; caffe: BGR, std 1)."""

    def __init__(self, style: str = "imagenet") -> None:
        if style == "imagenet":
            mean, std, self.bgr = IMAGENET_MEAN, IMAGENET_STD, False
        elif style == "caffe":
            mean, std, self.bgr = CAFFE_MEAN, (1.0, 1.0, 1.0), True
        else:
            raise NasSearchError(
                f"unknown normalize style {style!r} (expected 'imagenet' or 'caffe')"
            )
        self.style = style
        self.mean = np.array(mean, dtype=np.float32)
        self.std = np.array(std, dtype=np.float32)

    def __call__(self, image, target, rng=None):
        img = np.asarray(image, dtype=np.float32)
        if self.bgr:
            img = img[..., ::-1]
        img = (img - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), target

    def __repr__(self) -> str:
        return f"Normalize(style={self.style!r})"


class Pad:
    """Pad one image bottom/right with zeros to a multiple of `size_divisor` or to a fixed (h, w).

    Works on HxWx3 ndarrays and on [3, H, W] tensors; `img_size` keeps the valid region.
    """

    def __init__(
        self, size_divisor: int | None = None, size: tuple[int, int] | None = None
    ) -> None:
        if (size_divisor is None) == (size is None):
            raise ValueError("Pad needs exactly one of size_divisor or size")
        self.size_divisor = size_divisor
        self.size = size

    def __call__(self, image, target, rng=None):
        is_tensor = isinstance(image, torch.Tensor)
        h, w = image.shape[-2:] if is_tensor else image.shape[:2]
        if self.size is not None:
            ph, pw = self.size
            if ph < h or pw < w:
                raise NasSearchError(f"Pad: image {h}x{w} is larger than the pad size {ph}x{pw}")
        else:
            d = self.size_divisor
            ph, pw = -(-h // d) * d, -(-w // d) * d
        if is_tensor:
            out = image.new_zeros((*image.shape[:-2], ph, pw))
            out[..., :h, :w] = image
        else:
            out = np.zeros((ph, pw, *image.shape[2:]), dtype=image.dtype)
            out[:h, :w] = image
        return out, target

    def __repr__(self) -> str:
        return f"Pad(size_divisor={self.size_divisor}, size={self.size})"


def build_transforms(
    *,
    mode: str,
    train: bool,
    short_side: int = 800,
    max_size: int = 1333,
    size: int = 640,
    scale_range: tuple[float, float] = (0.8, 1.2),
    flip_prob: float = 0.5,
    normalize: str = "imagenet",
) -> Compose:
    """Standard pipelines: `resize` (keep ratio, mmdet 1333x800) or `square` (NAS-FPN crops).

    Evaluation pipelines never flip, jitter or crop, so predictions map back exactly.
    """
    if mode == "resize":
        steps: list[Any] = [ResizeKeepRatio(short_side, max_size)]
    elif mode == "square":
        steps = [RandomScaleSquareCrop(size, scale_range) if train else SquareResize(size)]
    else:
        raise NasSearchError(f"unknown transform mode {mode!r} (expected 'resize' or 'square')")
    if train and flip_prob > 0:
        steps.append(RandomHorizontalFlip(flip_prob))
    steps.append(Normalize(normalize))
    return Compose(steps)
