"""What a proxy evaluation trains and scores on: held-out splits, live or as cached backbone features.

The reward images are split off the training set (NAS-FPN held out 7,392 train2017 images), never
taken from the validation set users report on. With a frozen backbone (NAS-FCOS's proxy), the
backbone's features of both splits are computed once per experiment and every trial trains only
neck and head on them (`proxy.feature_cache`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nassearch.config import BackboneConfig, ExperimentConfig
from nassearch.data.build import build_dataset, split_paths
from nassearch.data.coco import CocoDetection
from nassearch.detectors.build import backbone_from_config, backbone_indices
from nassearch.device import resolve_device
from nassearch.errors import NasSearchError
from nassearch.proxy_eval.feature_cache import (
    INDEX_FILE,
    CachedFeatureDataset,
    FeatureCache,
    build_feature_cache,
)

CACHE_SPLITS = ("train", "reward")
# A cached split up to this size (features as float32) is read into memory when a trial opens
# it: a proxy training visits every sample once per epoch, so reading and unpacking it each time
# would repeat the same work (about 1 s of the quickstart's 21 s of training).
PRELOAD_LIMIT_BYTES = 512 * 2**20


def proxy_datasets(
    cfg: ExperimentConfig, *, augment: bool = True
) -> tuple[CocoDetection, CocoDetection]:
    """Proxy-training images and reward images: a seeded holdout split of the training set.

    `proxy.reward_holdout` images go to the reward side (evaluated without augmentation); the
    rest are trained on (augmented unless `augment=False`). Any holdout already set on
    `data.train` is replaced by this one.
    """
    _, _, split = split_paths(cfg.data, "train")
    held = split.model_copy(
        update={"holdout": cfg.proxy.reward_holdout, "holdout_seed": cfg.proxy.reward_holdout_seed}
    )
    train = build_dataset(
        cfg, "train", train=augment, split_cfg=held.model_copy(update={"holdout_part": "rest"})
    )
    reward = build_dataset(
        cfg, "train", train=False, split_cfg=held.model_copy(update={"holdout_part": "held_out"})
    )
    return train, reward


def backbone_is_frozen(backbone: BackboneConfig) -> bool:
    """All stages frozen and normalisation fixed: features depend on the image only."""
    return backbone.frozen_stages == 4 and (backbone.norm_eval or backbone.freeze_norm)


def uses_feature_cache(cfg: ExperimentConfig) -> bool:
    """Whether proxy training runs on cached features (`auto`: whenever the backbone is frozen)."""
    setting = cfg.proxy.feature_cache
    frozen = backbone_is_frozen(cfg.model.backbone)
    if setting is True and not frozen:
        raise NasSearchError(
            "proxy.feature_cache: true needs a frozen backbone (model.backbone.frozen_stages: 4 "
            "and norm_eval: true)"
        )
    return frozen if setting == "auto" else bool(setting)


def proxy_data(
    cfg: ExperimentConfig,
    cache_dir: str | Path | None = None,
    *,
    progress: bool | None = None,
    checked: bool = False,
) -> tuple[Any, Any]:
    """(train, reward) datasets for `evaluate_candidate`: live images, or cached features.

    With `cache_dir` and a cached proxy (`uses_feature_cache`), the features of both splits are
    built under `cache_dir/{train,reward}` the first time and reused afterwards (checked by
    fingerprint; nothing is recomputed). Cached training sees no augmentation. `checked=True`
    (a search trial: the driver built or fingerprint-checked this cache for this config) opens
    complete caches as they are, without building the backbone to fingerprint it again.
    """
    if cache_dir is None or not uses_feature_cache(cfg):
        return proxy_datasets(cfg)
    train, reward = proxy_datasets(cfg, augment=False)
    folders = [Path(cache_dir) / name for name in CACHE_SPLITS]
    if checked and all((f / INDEX_FILE).is_file() for f in folders):
        caches = [FeatureCache.open(f) for f in folders]
        return _cached_split(caches[0], train), _cached_split(caches[1], reward)
    levels = backbone_indices(cfg.search.space)
    # Seeded like `build_detector(seed=cfg.seed)`, which builds the backbone first: the cached
    # features are those of every trial's own (frozen) backbone, and trials agree on the fingerprint.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        backbone = backbone_from_config(cfg.model.backbone, levels)
    backbone.to(resolve_device(cfg.device))
    pad_to = cfg.input.network_size()
    cached = []
    for name, dataset in zip(CACHE_SPLITS, (train, reward), strict=True):
        cache = build_feature_cache(
            backbone,
            dataset,
            Path(cache_dir) / name,
            batch_size=cfg.eval.batch_size,
            size_divisor=cfg.input.size_divisor,
            pad_to=pad_to,
            device=next(backbone.parameters()).device,
            dtype=cfg.proxy.feature_cache_dtype,
            progress=progress,
        )
        cached.append(_cached_split(cache, dataset))
    return cached[0], cached[1]


def _cached_split(cache: FeatureCache, source: CocoDetection) -> CachedFeatureDataset:
    """A cached split as a trainer reads it: packed, with the source's ground truth, preloaded
    when it fits `PRELOAD_LIMIT_BYTES`: as float32, or else in the cache's own dtype (float16:
    half the memory, converted exactly per access; still about 8x faster than reading the file)."""
    stored = cache.dtype
    if cache.nbytes(torch.float32) <= PRELOAD_LIMIT_BYTES:
        return CachedFeatureDataset(cache, packed=True, source=source, preload=True)
    preload = cache.nbytes(stored) <= PRELOAD_LIMIT_BYTES
    return CachedFeatureDataset(
        cache, packed=True, source=source, preload=preload, preload_dtype=stored
    )
