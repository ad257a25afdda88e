"""Datasets from a config: COCO folders, or the embedded synthetic set generated once into a cache."""

from __future__ import annotations

import os
from pathlib import Path

from nassearch.config import DataConfig, ExperimentConfig, InputConfig, SplitConfig
from nassearch.data.coco import CocoDetection
from nassearch.data.synthetic import ensure_synthetic
from nassearch.data.transforms import build_transforms
from nassearch.errors import NasSearchError


def default_cache_dir() -> Path:
    """Where generated synthetic datasets live unless `data.synthetic.cache_dir` says otherwise."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nassearch" / "synthetic"


def synthetic_root(data: DataConfig) -> Path:
    """Generate the synthetic dataset described by `data.synthetic` (once) and return its folder."""
    params = data.synthetic.model_dump()
    cache_dir = Path(params.pop("cache_dir") or default_cache_dir())
    return ensure_synthetic(cache_dir, **params)


def split_paths(data: DataConfig, split: str) -> tuple[Path, Path, SplitConfig]:
    """Image folder and annotation file of `split` (train or val), resolved against the data root."""
    if data.type == "synthetic":
        root = synthetic_root(data)
        return (
            root / split,
            root / "annotations" / f"instances_{split}.json",
            SplitConfig(images=split, annotations=f"annotations/instances_{split}.json"),
        )
    if not data.root:
        raise NasSearchError(
            "data.root: required for COCO data; pass --set data.root=/path/to/coco"
        )
    root = Path(data.root).expanduser()
    if not root.is_dir():
        raise NasSearchError(f"data.root: folder not found: {root}")
    split_cfg: SplitConfig = getattr(data, split)
    images, annotations = root / split_cfg.images, root / split_cfg.annotations
    if not annotations.is_file():
        raise NasSearchError(f"data.{split}.annotations: file not found: {annotations}")
    if not images.is_dir():
        raise NasSearchError(f"data.{split}.images: folder not found: {images}")
    return images, annotations, split_cfg


def build_dataset(
    cfg: ExperimentConfig, split: str, *, train: bool, split_cfg: SplitConfig | None = None
) -> CocoDetection:
    """One dataset: `train=True` gives augmentation and skips empty images (if configured)."""
    images, annotations, default_split = split_paths(cfg.data, split)
    s = split_cfg or default_split
    return CocoDetection(
        images,
        annotations,
        build_input_transforms(cfg.input, train=train),
        train=train,
        skip_empty=cfg.data.skip_empty,
        subset=s.subset,
        subset_seed=s.subset_seed,
        holdout=s.holdout,
        holdout_seed=s.holdout_seed,
        holdout_part=s.holdout_part,
        seed=cfg.seed,
    )


def build_input_transforms(inp: InputConfig, *, train: bool):
    return build_transforms(
        mode=inp.mode,
        train=train,
        short_side=inp.short_side,
        max_size=inp.max_size,
        size=inp.size,
        scale_range=tuple(inp.scale_range),
        flip_prob=inp.flip_prob,
        normalize=inp.normalize,
    )


COCO_CLASSES = 80


def num_classes(
    cfg: ExperimentConfig, dataset: CocoDetection | None = None, *, read_val: bool = False
) -> int:
    """The class count of the config's detector, the one rule for every command.

    With `dataset`, its categories decide and `model.num_classes`, when given, must agree
    (training). Without one, `model.num_classes` when given; otherwise the validation
    annotations' categories when `read_val` (export: the exported head must fit the data),
    else the count needing no data: the synthetic set's shapes, or COCO's 80 (summaries).
    """
    wanted = cfg.model.num_classes
    if dataset is not None:
        found = len(dataset.cat_ids)
        if wanted is not None and wanted != found:
            raise NasSearchError(
                f"model.num_classes: {wanted} given but the dataset has {found} categories"
            )
        return found
    if wanted is not None:
        return wanted
    if read_val:
        try:
            return len(build_dataset(cfg, "val", train=False).cat_ids)
        except NasSearchError as exc:
            raise NasSearchError(
                f"model.num_classes: not set and the validation data cannot be read ({exc}); "
                "give it with --set model.num_classes=N"
            ) from None
    if cfg.data.type == "synthetic":
        from nassearch.data.synthetic import SHAPES

        return len(SHAPES)
    return COCO_CLASSES
