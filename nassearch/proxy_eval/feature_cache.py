"""Frozen-backbone feature cache for proxy training (NAS-FCOS's trick: train only neck + head).

When the backbone is frozen its features are a fixed function of the (non-augmented) input, so
they are computed once per image and stored as one memory-mapped ``.npy`` file per level
([N, C, H, W], float16 by default). Cached proxy training therefore uses NO augmentation (as
NAS-FCOS's cached proxy did with fixed crops); horizontal flips would need flipped copies cached.

Layout of a cache folder: ``level{k}.npy`` per backbone level and ``index.json`` (shapes, dtype,
image ids, targets, fingerprint). The folder is written under a temporary name and renamed into
place, so concurrent trial processes never see a half-written cache.

With the existing `Trainer` (which collates with `collate_detection` and calls
``model(images, targets)``), use ``CachedFeatureDataset(cache, packed=True)`` and
``CachedFeatureDetector``: each sample's levels travel as one flat tensor that the detector splits.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from nassearch.data.collate import collate_detection
from nassearch.errors import NasSearchError

CACHE_FORMAT = "nassearch-feature-cache"
CACHE_VERSION = 1
INDEX_FILE = "index.json"
_DTYPES = {"float16": np.float16, "float32": np.float32}
# Packed samples are [1, _PACK_ROWS, M] with M a multiple of _PACK_ROWS, so collate_detection
# (size_divisor <= 32) adds no padding; any padding it does add is ignored when unpacking.
_PACK_ROWS = 32


def _level_file(k: int) -> str:
    return f"level{k}.npy"


def backbone_fingerprint(backbone: nn.Module) -> str:
    """sha256 over the backbone's class, parameter/buffer names, shapes, dtypes and values."""
    h = hashlib.sha256(type(backbone).__qualname__.encode())
    for name, tensor in backbone.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _transform_repr(dataset: Any) -> str:
    """repr of the dataset's transforms without memory addresses (stable across processes)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(getattr(dataset, "transforms", None)))


def cache_fingerprint(
    backbone: nn.Module,
    dataset: Any,
    *,
    size_divisor: int | None,
    pad_to: tuple[int, int] | None,
    dtype: str,
) -> str:
    """Identity of a cache: backbone weights + dataset image ids + transforms + padding + dtype."""
    ids = [int(i) for i in getattr(dataset, "image_ids", range(len(dataset)))]
    parts = {
        "backbone": backbone_fingerprint(backbone),
        "dataset": f"{type(dataset).__qualname__}:{getattr(dataset, 'ann_file', '')}",
        "image_ids": hashlib.sha256(json.dumps(ids).encode()).hexdigest(),
        "transforms": _transform_repr(dataset),
        "size_divisor": size_divisor,
        "pad_to": list(pad_to) if pad_to is not None else None,
        "dtype": dtype,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _target_to_json(target: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in target.items():
        if isinstance(value, Tensor):
            out[key] = value.detach().cpu().tolist()
        elif isinstance(value, tuple):
            out[key] = list(value)
        else:
            out[key] = value
    return out


def _target_from_json(data: dict[str, Any]) -> dict[str, Any]:
    target: dict[str, Any] = {}
    for key, value in data.items():
        if key == "boxes":
            target[key] = torch.tensor(value, dtype=torch.float32).reshape(-1, 4)
        elif key == "labels":
            target[key] = torch.tensor(value, dtype=torch.int64).reshape(-1)
        elif isinstance(value, list):
            target[key] = tuple(value)
        else:
            target[key] = value
    return target


class FeatureCache:
    """Read-only, memory-mapped backbone features and targets of a dataset (see `build_feature_cache`)."""

    def __init__(self, cache_dir: Path, index: dict[str, Any], levels: list[np.ndarray]) -> None:
        self.cache_dir = cache_dir
        self.index = index
        self.levels = levels
        self._targets = index["targets"]

    @classmethod
    def open(cls, cache_dir: str | os.PathLike) -> FeatureCache:
        """Open a complete cache folder (memory-mapped, read-only)."""
        cache_dir = Path(cache_dir)
        index = _read_index(cache_dir)
        levels = []
        for k, shape in enumerate(index["shapes"]):
            path = cache_dir / _level_file(k)
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise NasSearchError(f"feature cache {path}: cannot read ({exc})") from None
            expected = (index["num_images"], *shape)
            if arr.shape != expected or arr.dtype != np.dtype(index["dtype"]):
                raise NasSearchError(
                    f"feature cache {path}: shape {arr.shape} {arr.dtype} differs from the index "
                    f"({expected} {index['dtype']})"
                )
            levels.append(arr)
        return cls(cache_dir, index, levels)

    def __len__(self) -> int:
        return int(self.index["num_images"])

    @property
    def fingerprint(self) -> str:
        return self.index["fingerprint"]

    @property
    def image_shape(self) -> tuple[int, int]:
        """Padded (H, W) of the images the features were computed from."""
        h, w = self.index["image_shape"]
        return int(h), int(w)

    @property
    def feature_shapes(self) -> list[tuple[int, int, int]]:
        """(C, H, W) of each level."""
        return [tuple(int(x) for x in s) for s in self.index["shapes"]]

    @property
    def image_ids(self) -> list[int]:
        return [int(i) for i in self.index["image_ids"]]

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the features are stored in (`proxy.feature_cache_dtype`)."""
        return getattr(torch, np.dtype(self.index["dtype"]).name)

    def nbytes(self, dtype: torch.dtype = torch.float32) -> int:
        """Bytes every image's features take in `dtype` (what a preloaded dataset keeps)."""
        per_image = sum(c * h * w for c, h, w in self.feature_shapes)
        return len(self) * per_image * torch.empty((), dtype=dtype).element_size()

    def features(self, i: int, dtype: torch.dtype | None = torch.float32) -> list[Tensor]:
        """Levels of image `i` as [C, H, W] tensors (in `dtype`; None keeps the stored dtype)."""
        if not 0 <= i < len(self):
            raise IndexError(f"feature cache index {i} out of range [0, {len(self)})")
        feats = [torch.from_numpy(np.array(level[i])) for level in self.levels]
        return feats if dtype is None else [f.to(dtype) for f in feats]

    def target(self, i: int) -> dict[str, Any]:
        """Target dict of image `i` (boxes/labels tensors, sizes as tuples), as the dataset gave it."""
        return _target_from_json(self._targets[i])


def _read_index(cache_dir: Path) -> dict[str, Any]:
    path = cache_dir / INDEX_FILE
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        raise NasSearchError(
            f"feature cache {cache_dir}: no {INDEX_FILE} (not a feature cache)"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise NasSearchError(f"feature cache {path}: cannot read ({exc})") from None
    if not isinstance(index, dict) or index.get("format") != CACHE_FORMAT:
        raise NasSearchError(f"feature cache {path}: not a {CACHE_FORMAT} index")
    if index.get("version") != CACHE_VERSION:
        raise NasSearchError(
            f"feature cache {path}: version {index.get('version')} (expected {CACHE_VERSION})"
        )
    return index


def _reuse(cache_dir: Path, fingerprint: str) -> FeatureCache:
    cache = FeatureCache.open(cache_dir)
    if cache.fingerprint != fingerprint:
        raise NasSearchError(
            f"feature cache {cache_dir} was built for another backbone/dataset/transform "
            "(fingerprint differs); delete it or use another cache folder"
        )
    return cache


@torch.no_grad()
def build_feature_cache(
    backbone: nn.Module,
    dataset: Any,
    cache_dir: str | os.PathLike,
    *,
    batch_size: int = 4,
    size_divisor: int | None = 32,
    pad_to: tuple[int, int] | None = None,
    device: torch.device | str = "cpu",
    dtype: str = "float16",
    progress: bool | None = None,
) -> FeatureCache:
    """Run the frozen `backbone` once over an eval-mode `dataset` and store its features in `cache_dir`.

    Reuses a complete cache with the same fingerprint (without running the backbone); a cache
    with another fingerprint is an error. Every image must pad to the same size (`pad_to`, or
    equal sizes after rounding to `size_divisor`) so each level is one [N, C, H, W] array.
    """
    cache_dir = Path(cache_dir)
    if dtype not in _DTYPES:
        raise NasSearchError(f"build_feature_cache: dtype={dtype!r} (use float16 or float32)")
    if getattr(dataset, "train", False):
        raise NasSearchError(
            "build_feature_cache: the dataset is in training mode (augmentation); cached "
            "features need an eval-mode dataset (train=False)"
        )
    if len(dataset) == 0:
        raise NasSearchError("build_feature_cache: the dataset is empty")
    fingerprint = cache_fingerprint(
        backbone, dataset, size_divisor=size_divisor, pad_to=pad_to, dtype=dtype
    )
    if (cache_dir / INDEX_FILE).exists():
        return _reuse(cache_dir, fingerprint)
    if cache_dir.exists() and (not cache_dir.is_dir() or any(cache_dir.iterdir())):
        raise NasSearchError(f"feature cache {cache_dir}: exists but is not a feature cache")

    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir.parent / f".{cache_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write_cache(
            backbone,
            dataset,
            tmp,
            fingerprint,
            batch_size,
            size_divisor,
            pad_to,
            device,
            dtype,
            progress,
        )
        try:
            os.rename(tmp, cache_dir)  # atomic; fails if another process placed a cache first
        except OSError:
            if not (cache_dir / INDEX_FILE).exists():
                raise
            return _reuse(cache_dir, fingerprint)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return FeatureCache.open(cache_dir)


def _write_cache(
    backbone: nn.Module,
    dataset: Any,
    out: Path,
    fingerprint: str,
    batch_size: int,
    size_divisor: int | None,
    pad_to: tuple[int, int] | None,
    device: torch.device | str,
    dtype: str,
    progress: bool | None,
) -> None:
    device = torch.device(device)
    was_training = backbone.training
    backbone.eval()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=lambda b: collate_detection(b, size_divisor=size_divisor, pad_to=pad_to),
    )
    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(dataset), desc="feature cache", dynamic_ncols=True)
    n = len(dataset)
    arrays: list[np.ndarray] = []
    targets: list[dict[str, Any]] = []
    image_shape: tuple[int, int] | None = None
    start = 0
    try:
        for images, batch_targets in loader:
            shape = (int(images.shape[-2]), int(images.shape[-1]))
            if image_shape is None:
                image_shape = shape
            elif shape != image_shape:
                raise NasSearchError(
                    f"build_feature_cache: images pad to {shape[0]}x{shape[1]} and "
                    f"{image_shape[0]}x{image_shape[1]}; pass a fixed pad_to so all features "
                    "have one shape"
                )
            feats = backbone(images.to(device))
            if not arrays:
                arrays = [
                    np.lib.format.open_memmap(
                        out / _level_file(k),
                        mode="w+",
                        dtype=_DTYPES[dtype],
                        shape=(n, *f.shape[1:]),
                    )
                    for k, f in enumerate(feats)
                ]
            b = images.shape[0]
            for arr, f in zip(arrays, feats, strict=True):
                arr[start : start + b] = f.float().cpu().numpy().astype(arr.dtype)
            targets.extend(_target_to_json(t) for t in batch_targets)
            start += b
            if bar is not None:
                bar.update(b)
    finally:
        if bar is not None:
            bar.close()
        backbone.train(was_training)
    for arr in arrays:
        arr.flush()
    shapes = [list(arr.shape[1:]) for arr in arrays]
    del arrays
    index = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "fingerprint": fingerprint,
        "num_images": n,
        "dtype": dtype,
        "shapes": shapes,
        "image_shape": list(image_shape),
        "size_divisor": size_divisor,
        "pad_to": list(pad_to) if pad_to is not None else None,
        "image_ids": [int(t.get("image_id", i)) for i, t in enumerate(targets)],
        "targets": targets,
    }
    # The index is written last: a folder with index.json is complete.
    (out / INDEX_FILE).write_text(json.dumps(index))


# ----------------------------------------------------------------------------- training on the cache


def pack_features(feats: Sequence[Tensor]) -> Tensor:
    """One sample's levels [C, H, W] as a flat [1, 32, M] tensor that `collate_detection` keeps intact."""
    flat = torch.cat([f.reshape(-1) for f in feats])
    block = _PACK_ROWS * _PACK_ROWS
    padded = flat.new_zeros(-(-flat.numel() // block) * block)
    padded[: flat.numel()] = flat
    return padded.view(1, _PACK_ROWS, -1)


def unpack_features(packed: Tensor, feature_shapes: Sequence[tuple[int, int, int]]) -> list[Tensor]:
    """Inverse of `pack_features` for a collated batch [B, 1, >=32, >=M] (padding ignored)."""
    sizes = [c * h * w for c, h, w in feature_shapes]
    total = sum(sizes)
    cols = -(-total // (_PACK_ROWS * _PACK_ROWS)) * _PACK_ROWS
    flat = packed[:, 0, :_PACK_ROWS, :cols].reshape(packed.shape[0], -1)[:, :total]
    return [
        part.reshape(packed.shape[0], *shape)
        for part, shape in zip(flat.split(sizes, dim=1), feature_shapes, strict=True)
    ]


class CachedFeatureDataset(Dataset):
    """(features, target) samples from a `FeatureCache`; features are a list of [C, H, W] float32.

    With `packed=True` the features come as one `pack_features` tensor, so the unchanged `Trainer`
    (collate_detection + ``model(images, targets)``) can train a `CachedFeatureDetector`.
    `source`, the dataset the cache was built from, lends its COCO ground truth (`coco`,
    `cat_ids`, `image_ids`) so COCO evaluation works on cached features too.
    `preload=True` reads every sample once, up front (the same tensors, kept in memory): a
    proxy training that visits each sample many times then skips the per-step reads, dtype
    conversions, packing and target parsing. `preload_dtype` (default `dtype`) is the dtype they
    are kept in, e.g. the cache's own float16 for half the memory: each access then only
    converts (exactly) to `dtype`.
    """

    def __init__(
        self,
        cache: FeatureCache,
        *,
        packed: bool = False,
        dtype: torch.dtype = torch.float32,
        source: Any = None,
        preload: bool = False,
        preload_dtype: torch.dtype | None = None,
    ) -> None:
        self.cache = cache
        self.packed = packed
        self.dtype = dtype
        self.preload_dtype = dtype if preload_dtype is None else preload_dtype
        self._samples = (
            [self._read(i, self.preload_dtype) for i in range(len(cache))] if preload else None
        )
        if source is not None:
            if [int(i) for i in source.image_ids] != cache.image_ids:
                raise NasSearchError(
                    f"feature cache {cache.cache_dir}: its images are not those of the dataset"
                )
            self.coco, self.cat_ids, self.image_ids = source.coco, source.cat_ids, source.image_ids
            self.num_classes = len(source.cat_ids)

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int) -> tuple[Any, dict[str, Any]]:
        if self._samples is None:
            return self._read(i)
        features, target = self._samples[i]
        if self.preload_dtype != self.dtype:
            features = (
                features.to(self.dtype) if self.packed else [f.to(self.dtype) for f in features]
            )
        return features, dict(target)  # callers may add keys; the stored target stays as read

    def _read(self, i: int, dtype: torch.dtype | None = None) -> tuple[Any, dict[str, Any]]:
        feats = self.cache.features(i, dtype=self.dtype if dtype is None else dtype)
        return (pack_features(feats) if self.packed else feats), self.cache.target(i)

    @property
    def preloaded(self) -> bool:
        return self._samples is not None


def collate_cached_features(
    batch: Sequence[tuple[Sequence[Tensor], dict[str, Any]]],
) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """Stack unpacked samples per level: ([B, C, H, W] per level, list of targets)."""
    if len(batch) == 0:
        raise ValueError("collate_cached_features got an empty batch")
    feats = [torch.stack(level) for level in zip(*(f for f, _ in batch), strict=True)]
    return feats, [t for _, t in batch]


class CachedFeatureDetector(nn.Module):
    """Runs a dense detector's neck + head on cached backbone features (the backbone is never run).

    Only `neck` and `head` are registered, under the detector's own names, so `parameters()` and
    `state_dict()` hold exactly the trainable part and load into the full detector with
    ``strict=False``. `to()`/`train()`/`eval()` also reach the wrapped detector.
    """

    def __init__(
        self,
        detector: nn.Module,
        image_shape: tuple[int, int],
        feature_shapes: Sequence[tuple[int, int, int]],
    ) -> None:
        super().__init__()
        self.neck = detector.neck
        self.head = detector.head
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.feature_shapes = [tuple(int(x) for x in s) for s in feature_shapes]
        object.__setattr__(self, "_detector", detector)  # not a submodule: keeps the backbone out

    @classmethod
    def from_cache(cls, detector: nn.Module, cache: FeatureCache) -> CachedFeatureDetector:
        return cls(detector, cache.image_shape, cache.feature_shapes)

    @property
    def detector(self) -> nn.Module:
        return self._detector

    def train(self, mode: bool = True) -> CachedFeatureDetector:
        super().train(mode)
        self._detector.train(mode)
        return self

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001 (nn.Module's signature)
        self._detector._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def _levels(self, features: Tensor | Sequence[Tensor]) -> list[Tensor]:
        if isinstance(features, Tensor):
            return unpack_features(features, self.feature_shapes)
        return list(features)

    def forward(self, features: Tensor | Sequence[Tensor], targets: list[dict] | None = None):
        """Losses (training) or detections (eval) from per-level [B, C, H, W] or packed features."""
        return self._detector.forward_features(self._levels(features), self.image_shape, targets)

    def detections_and_losses(
        self, features: Tensor | Sequence[Tensor], targets: list[dict]
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Detections and the loss dict from one pass of neck and head (see the detector's)."""
        return self._detector.detections_and_losses_from(
            self._levels(features), self.image_shape, targets
        )

    def compute_losses(
        self, features: Tensor | Sequence[Tensor], targets: list[dict]
    ) -> dict[str, Tensor]:
        """The detector's loss dict in any mode (validation loss, NAS-FCOS's reward)."""
        outputs = self._detector.head_outputs(self._levels(features))
        return self._detector.loss(outputs, targets, self.image_shape)
