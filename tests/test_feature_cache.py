"""Feature cache: features match the backbone, reuse, fingerprint, atomic placement, same loss curve."""

from __future__ import annotations

import copy

import pytest
import torch

from nassearch.config import OptimizerConfig, TrainConfig
from nassearch.data.coco import CocoDetection
from nassearch.data.collate import collate_detection
from nassearch.data.synthetic import generate_synthetic
from nassearch.detectors.backbones import build_backbone
from nassearch.detectors.fcos import FCOS, FCOSHead
from nassearch.detectors.necks.fpn import FPN
from nassearch.engine.trainer import Trainer
from nassearch.errors import NasSearchError
from nassearch.proxy_eval.feature_cache import (
    CachedFeatureDataset,
    CachedFeatureDetector,
    FeatureCache,
    build_feature_cache,
    collate_cached_features,
    pack_features,
    unpack_features,
)

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = generate_synthetic(
        tmp_path_factory.mktemp("syn"), num_train=6, num_val=1, image_size=64, max_object_size=40
    )
    return CocoDetection(root / "train", root / "annotations" / "instances_train.json", train=False)


def tiny_fcos(num_classes: int) -> FCOS:
    torch.manual_seed(0)
    backbone = build_backbone(10, frozen_stages=4, norm_eval=True)
    neck = FPN(backbone.out_channels, out_channels=32, num_outs=5, extra_source="output")
    head = FCOSHead(32, num_classes, num_convs=1, feat_channels=32)
    return FCOS(backbone, neck, head, num_classes)


class CountingBackbone(torch.nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.inner = backbone
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_features_match_backbone_and_targets(dataset, tmp_path):
    det = tiny_fcos(dataset.num_classes)
    cache = build_feature_cache(det.backbone, dataset, tmp_path / "c", batch_size=4, progress=False)
    assert len(cache) == len(dataset) == 6
    assert cache.image_shape == (64, 64)
    det.backbone.eval()
    for i in range(len(dataset)):
        image, target = dataset[i]
        with torch.no_grad():
            ref = det.backbone(image[None])
        feats = cache.features(i)
        assert [tuple(f.shape) for f in feats] == [tuple(r.shape[1:]) for r in ref]
        for f, r in zip(feats, ref, strict=True):
            assert f.dtype == torch.float32
            torch.testing.assert_close(f, r[0], rtol=1e-3, atol=2e-3)  # float16 storage
        assert cache.features(i, dtype=None)[0].dtype == torch.float16
        got = cache.target(i)
        assert torch.equal(got["boxes"], target["boxes"])
        assert torch.equal(got["labels"], target["labels"])
        assert got["image_id"] == target["image_id"]
        assert got["img_size"] == target["img_size"]
        assert got["scale"] == target["scale"]
    # Reopening gives the same memory-mapped data.
    again = FeatureCache.open(tmp_path / "c")
    assert torch.equal(again.features(3)[1], cache.features(3)[1])


def test_reuse_does_not_run_backbone_and_mismatch_raises(dataset, tmp_path):
    counting = CountingBackbone(tiny_fcos(dataset.num_classes).backbone)
    build_feature_cache(counting, dataset, tmp_path / "c", batch_size=4, progress=False)
    assert counting.calls == 2  # 6 images in batches of 4
    build_feature_cache(counting, dataset, tmp_path / "c", batch_size=4, progress=False)
    assert counting.calls == 2
    with torch.no_grad():
        counting.inner.conv1.weight.add_(0.1)
    with pytest.raises(NasSearchError, match=str(tmp_path / "c")):
        build_feature_cache(counting, dataset, tmp_path / "c", progress=False)
    with pytest.raises(NasSearchError, match="fingerprint"):
        build_feature_cache(counting, dataset, tmp_path / "c", pad_to=(96, 96), progress=False)
    assert counting.calls == 2


def test_atomic_placement(dataset, tmp_path, monkeypatch):
    backbone = tiny_fcos(dataset.num_classes).backbone
    seen = []

    def spy_forward(x, _orig=backbone.forward):
        # While features are computed, the target folder must not exist (work goes to a temp dir).
        seen.append((tmp_path / "c").exists())
        return _orig(x)

    monkeypatch.setattr(backbone, "forward", spy_forward)
    build_feature_cache(backbone, dataset, tmp_path / "c", progress=False)
    assert seen and not any(seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temp dir left behind

    # A failure mid-build leaves neither a cache nor a temp folder.
    def boom(x):
        raise RuntimeError("backbone failed")

    monkeypatch.setattr(backbone, "forward", boom)
    with pytest.raises(RuntimeError):
        build_feature_cache(backbone, dataset, tmp_path / "d", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_race_loser_reuses_winner(dataset, tmp_path, monkeypatch):
    """If another process places the cache while we compute, our rename fails and we reuse theirs."""
    backbone = tiny_fcos(dataset.num_classes).backbone
    other = tmp_path / "other"
    build_feature_cache(backbone, dataset, other, progress=False)
    import os
    import shutil

    real_rename = os.rename

    def racing_rename(src, dst):
        shutil.copytree(other, dst)  # the winner lands first
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", racing_rename)
    cache = build_feature_cache(backbone, dataset, tmp_path / "c", progress=False)
    assert len(cache) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "other"]


def test_unequal_sizes_refused(tmp_path, dataset):
    class Mixed(torch.utils.data.Dataset):
        train = False

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return dataset[i][0][:, : 64 - 40 * i], dataset[i][1]

    backbone = tiny_fcos(dataset.num_classes).backbone
    with pytest.raises(NasSearchError, match="pad_to"):
        build_feature_cache(backbone, Mixed(), tmp_path / "c", batch_size=1, progress=False)
    assert not (tmp_path / "c").exists()
    cache = build_feature_cache(
        backbone, Mixed(), tmp_path / "p", batch_size=1, pad_to=(64, 64), progress=False
    )
    assert cache.image_shape == (64, 64)


def test_pack_roundtrip_and_collate():
    feats = [torch.randn(3, 5, 7), torch.randn(4, 2, 2), torch.randn(2, 1, 1)]
    shapes = [tuple(f.shape) for f in feats]
    batch = [(pack_features(feats), {"i": 0}), (pack_features([f * 2 for f in feats]), {"i": 1})]
    images, _ = collate_detection(batch, size_divisor=64)  # padding must be ignored
    for got, f in zip(unpack_features(images, shapes), feats, strict=True):
        assert torch.equal(got[0], f) and torch.equal(got[1], f * 2)
    stacked, targets = collate_cached_features([(feats, {"i": 0}), (feats, {"i": 1})])
    assert [tuple(s.shape) for s in stacked] == [(2, *s) for s in shapes]
    assert [t["i"] for t in targets] == [0, 1]


def test_wrapper_exposes_only_neck_and_head(dataset, tmp_path):
    det = tiny_fcos(dataset.num_classes)
    cache = build_feature_cache(det.backbone, dataset, tmp_path / "c", progress=False)
    wrapped = CachedFeatureDetector.from_cache(det, cache)
    names = {n.split(".")[0] for n, _ in wrapped.named_parameters()}
    assert names == {"neck", "head"}
    full = {k for k in det.state_dict() if not k.startswith("backbone.")}
    assert set(wrapped.state_dict()) == full
    wrapped.eval()
    assert not det.training and not det.head.training
    wrapped.train()
    assert det.training and det.neck.training
    # Eval forward from cached features equals the live detector's detections (float32 cache).
    c32 = build_feature_cache(
        det.backbone, dataset, tmp_path / "c32", dtype="float32", progress=False
    )
    wrapped = CachedFeatureDetector.from_cache(det, c32).eval()
    ds = CachedFeatureDataset(c32)
    feats, targets = collate_cached_features([ds[0], ds[1]])
    images, live_targets = collate_detection([dataset[0], dataset[1]])
    with torch.no_grad():
        got = wrapped(feats, targets)
        ref = det(images, live_targets)
    for g, r in zip(got, ref, strict=True):
        torch.testing.assert_close(g["scores"], r["scores"])
        torch.testing.assert_close(g["boxes"], r["boxes"])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cached_training_matches_live_training(dataset, tmp_path, dtype):
    """The must-show: same seed and data order -> the same loss curve as the live frozen backbone."""
    cfg = TrainConfig(
        epochs=2,
        batch_size=2,
        optimizer=OptimizerConfig(lr=0.01),
        log_interval=100,
        tensorboard=False,
        amp="off",
        channels_last="off",
    )
    live = tiny_fcos(dataset.num_classes)
    cached_det = copy.deepcopy(live)
    cache = build_feature_cache(
        cached_det.backbone, dataset, tmp_path / "c", dtype=dtype, progress=False
    )
    torch.manual_seed(1)
    live_result = Trainer(live, dataset, cfg, device=CPU, seed=3, progress=False, log=None).fit()
    model = CachedFeatureDetector.from_cache(cached_det, cache)
    torch.manual_seed(1)
    cached_result = Trainer(
        model,
        CachedFeatureDataset(cache, packed=True),
        cfg,
        device=CPU,
        seed=3,
        progress=False,
        log=None,
    ).fit()
    live_losses = torch.tensor(live_result.loss_history)
    cached_losses = torch.tensor(cached_result.loss_history)
    assert len(live_losses) == 6 and live_result.status == cached_result.status == "ok"
    # The neck/head really learn: the curve is not flat.
    assert not torch.allclose(live_losses[0], live_losses[-1], rtol=1e-3)
    if dtype == "float32":
        assert torch.equal(cached_losses, live_losses), (cached_losses, live_losses)
        for k, v in live.head.state_dict().items():
            torch.testing.assert_close(cached_det.head.state_dict()[k], v, rtol=1e-4, atol=1e-5)
    else:
        assert torch.allclose(cached_losses, live_losses, rtol=1e-2)
    # A different data order gives a different curve (the comparison is sensitive to order).
    other = tiny_fcos(dataset.num_classes)
    torch.manual_seed(1)
    other_result = Trainer(
        CachedFeatureDetector.from_cache(other, cache),
        CachedFeatureDataset(cache, packed=True),
        cfg,
        device=CPU,
        seed=4,
        progress=False,
        log=None,
    ).fit()
    assert not torch.allclose(torch.tensor(other_result.loss_history), live_losses, rtol=1e-3)


@pytest.mark.parametrize("preload", [False, True])
def test_cached_training_matches_live_training_nasfcos_r50(dataset, tmp_path, preload):
    """The NAS-FCOS-like setting at a small size: frozen ResNet-50, a sampled NAS-FCOS FPN
    decoder, FCOS head. Live images and cached features (read per step or preloaded) give the
    same float32 loss curve for the same seed and data order."""
    import numpy as np

    from nassearch.config import validate_config
    from nassearch.detectors.build import build_detector
    from nassearch.search_spaces import get_space

    cfg = validate_config(
        {
            "data": {"type": "synthetic"},
            "input": {"mode": "square", "size": 64},
            "model": {
                "type": "fcos",
                "backbone": {"depth": 50, "weights": None, "frozen_stages": 4, "norm_eval": True},
                "neck": {"out_channels": 16},
                "num_convs": 1,
                "feat_channels": 32,
            },
            "search": {"space": "nasfcos", "space_options": {"part": "fpn"}},
        }
    )
    genotype = get_space("nasfcos", part="fpn").sample(np.random.default_rng(2))
    live = build_detector(cfg.candidate_model("nasfcos"), dataset.num_classes, genotype, seed=0)
    cached_det = copy.deepcopy(live)
    cache = build_feature_cache(
        cached_det.backbone, dataset, tmp_path / "c", dtype="float32", progress=False
    )
    train_cfg = TrainConfig(
        epochs=2,
        batch_size=2,
        optimizer=OptimizerConfig(lr=0.01),
        tensorboard=False,
        amp="off",
        channels_last="off",
    )
    torch.manual_seed(1)
    live_result = Trainer(
        live, dataset, train_cfg, device=CPU, seed=3, progress=False, log=None
    ).fit()
    cached_set = CachedFeatureDataset(cache, packed=True, preload=preload)
    assert cached_set.preloaded is preload
    torch.manual_seed(1)
    cached_result = Trainer(
        CachedFeatureDetector.from_cache(cached_det, cache),
        cached_set,
        train_cfg,
        device=CPU,
        seed=3,
        progress=False,
        log=None,
    ).fit()
    live_losses = torch.tensor(live_result.loss_history)
    assert live_result.status == cached_result.status == "ok" and len(live_losses) == 6
    assert not torch.allclose(live_losses[0], live_losses[-1], rtol=1e-3)
    assert torch.equal(torch.tensor(cached_result.loss_history), live_losses)
    assert sum(p.numel() for p in live.backbone.parameters()) > 20_000_000  # really a ResNet-50


def test_float16_preload_gives_the_float32_samples_and_proxy_data_picks_it(
    dataset, tmp_path, monkeypatch
):
    """A split too big to preload as float32 is kept in the cache's float16 and converted on
    access: bit-identical samples to reading the file, in half the memory."""
    from nassearch.proxy_eval import proxy_data as proxy_data_module

    cache = build_feature_cache(
        tiny_fcos(dataset.num_classes).backbone, dataset, tmp_path / "c", progress=False
    )
    assert cache.dtype == torch.float16
    read = CachedFeatureDataset(cache, packed=True)
    kept = CachedFeatureDataset(cache, packed=True, preload=True, preload_dtype=torch.float16)
    assert kept.preloaded and kept._samples[0][0].dtype == torch.float16
    for i in range(len(cache)):
        (want, want_target), (got, got_target) = read[i], kept[i]
        assert got.dtype == torch.float32 and torch.equal(got, want)
        assert torch.equal(got_target["boxes"], want_target["boxes"])

    # proxy_data's choice: float32 when it fits the limit, else float16, else read per step.
    for limit, preloaded, dtype in (
        (cache.nbytes(torch.float32), True, torch.float32),
        (cache.nbytes(torch.float16), True, torch.float16),
        (cache.nbytes(torch.float16) - 1, False, torch.float16),
    ):
        monkeypatch.setattr(proxy_data_module, "PRELOAD_LIMIT_BYTES", limit)
        split = proxy_data_module._cached_split(cache, dataset)
        assert (split.preloaded, split.preload_dtype) == (preloaded, dtype)
        assert torch.equal(split[0][0], read[0][0])


def test_one_pass_reward_equals_separate_detections_and_loss(dataset, tmp_path):
    """NAS-FCOS's reward needs AP and the validation loss; `evaluate_with_loss` gets both from one
    forward pass per batch, equal to `evaluate_detector` and `validation_loss` (live RetinaNet and
    FCOS, and FCOS on cached features)."""
    from search_configs import search_config

    from nassearch.config import validate_config
    from nassearch.detectors.build import build_detector
    from nassearch.engine.evaluate import evaluate_detector, evaluate_with_loss, validation_loss
    from nassearch.search_spaces import named_genotypes

    fcos = tiny_fcos(dataset.num_classes)
    cfg = validate_config(search_config(tmp_path))
    paper = named_genotypes("nasfpn")["PAPER"]
    retinanet = build_detector(cfg.candidate_model("nasfpn"), dataset.num_classes, paper, seed=0)
    cache = build_feature_cache(fcos.backbone, dataset, tmp_path / "c", progress=False)
    cached = CachedFeatureDetector.from_cache(fcos, cache)
    cached_set = CachedFeatureDataset(cache, packed=True, source=dataset)
    fcos.score_thresh = retinanet.score_thresh = 0.0  # untrained: keep every candidate box
    kwargs = {"batch_size": 4, "size_divisor": 32}
    boxes = 0
    for model, data in ((fcos, dataset), (retinanet, dataset), (cached, cached_set)):
        model.train()
        metrics, losses = evaluate_with_loss(model, data, **kwargs)
        assert model.training  # restored
        assert metrics == evaluate_detector(model, data, **kwargs)
        assert losses == validation_loss(model, data, **kwargs)
        assert losses["loss"] > 0
        # The detections themselves, not only their (untrained, near-zero) AP.
        images, targets = collate_detection([data[i] for i in range(2)], size_divisor=32)
        model.eval()
        with torch.no_grad():
            detections, _ = model.detections_and_losses(images, targets)
            for got, want in zip(detections, model(images, targets), strict=True):
                boxes += len(got["boxes"])
                for key in ("boxes", "scores", "labels"):
                    assert torch.equal(got[key], want[key])
    assert boxes > 0
