"""The feature cache inside the proxy task and the search: same results, built once, reused."""

from __future__ import annotations

import pytest
import torch
from search_configs import search_config, write

from nassearch.cli import main
from nassearch.config import validate_config
from nassearch.errors import NasSearchError
from nassearch.proxy_eval.feature_cache import CachedFeatureDataset
from nassearch.proxy_eval.proxy_data import proxy_data, uses_feature_cache
from nassearch.proxy_eval.proxy_task import evaluate_candidate
from nassearch.records import read_records
from nassearch.search_spaces import named_genotypes

FROZEN = {"depth": 10, "frozen_stages": 4, "norm_eval": True}


def frozen_config(tmp_path, **proxy) -> dict:
    cfg = search_config(tmp_path)
    cfg["model"]["backbone"] = dict(FROZEN)
    # No augmentation, so live training sees exactly the images the cache was computed from.
    cfg["input"].update(flip_prob=0.0, scale_range=[1.0, 1.0])
    cfg["train"]["epochs"] = 2
    cfg["proxy"].update(reward="neg_loss", **proxy)
    return cfg


def test_cache_is_used_only_for_a_frozen_backbone(tmp_path):
    cfg = validate_config(frozen_config(tmp_path), "test")
    assert uses_feature_cache(cfg)
    live = cfg.model_copy(deep=True)
    live.model.backbone.frozen_stages = 3
    assert not uses_feature_cache(live)
    live.proxy.feature_cache = True
    with pytest.raises(NasSearchError, match="proxy.feature_cache: true needs a frozen backbone"):
        uses_feature_cache(live)
    cfg.proxy.feature_cache = False
    assert not uses_feature_cache(cfg)


def test_cached_trial_matches_live_frozen_trial(tmp_path):
    cfg = validate_config(frozen_config(tmp_path, feature_cache_dtype="float32"), "test")
    genotype = named_genotypes("nasfpn")["PAPER"]
    curves = {}

    def recorder(name):
        def on_epoch_end(epoch, info):
            curves.setdefault(name, []).append(info["loss"])

        return on_epoch_end

    train, reward = proxy_data(cfg, tmp_path / "features", progress=False)
    assert isinstance(train, CachedFeatureDataset) and isinstance(reward, CachedFeatureDataset)
    # A trial opens the driver's cache without building a backbone to fingerprint it: the same
    # samples (preloaded: the quickstart-sized split fits the limit).
    from nassearch.proxy_eval import proxy_data as proxy_data_module

    def no_backbone(*args, **kwargs):
        raise AssertionError("a checked cache must not build the backbone")

    real = proxy_data_module.backbone_from_config
    proxy_data_module.backbone_from_config = no_backbone
    try:
        opened = proxy_data(cfg, tmp_path / "features", progress=False, checked=True)
    finally:
        proxy_data_module.backbone_from_config = real
    for fresh, first in zip(opened, (train, reward), strict=True):
        assert fresh.preloaded and len(fresh) == len(first)
        assert torch.equal(fresh[1][0], first[1][0]) and fresh[1][1].keys() == first[1][1].keys()
        assert fresh.image_ids == first.image_ids
    cached = evaluate_candidate(
        genotype, cfg, datasets=(train, reward), on_epoch_end=recorder("cached")
    )
    live = evaluate_candidate(genotype, cfg, on_epoch_end=recorder("live"))
    assert cached.status == live.status == "ok"
    assert len(curves["cached"]) == len(curves["live"]) == 2
    assert curves["cached"] == pytest.approx(curves["live"], rel=1e-5)
    assert cached.reward == pytest.approx(live.reward, rel=1e-5)
    assert cached.metrics == pytest.approx(live.metrics, abs=1e-6)
    # Costs always count the whole detector, backbone included.
    assert cached.params == live.params and cached.macs == live.macs
    # The frozen backbone's share was measured once, kept beside the cache for the next one.
    assert len(list((tmp_path / "features" / "train").glob("backbone-cost-*.json"))) == 1


@pytest.mark.slow
def test_search_builds_the_cache_once_and_trials_reuse_it(ray_session, tmp_path, capsys):
    cfg = frozen_config(tmp_path)
    assert main(["run", write(tmp_path, cfg)]) == 0
    out = capsys.readouterr().out
    exp = tmp_path / "runs" / "tiny-search"
    assert "features cached in" in out
    index_files = sorted(p.relative_to(exp) for p in exp.glob("feature_cache/*/index.json"))
    assert [str(p) for p in index_files] == [
        "feature_cache/reward/index.json",
        "feature_cache/train/index.json",
    ]
    built = {p: p.stat().st_mtime_ns for p in exp.glob("feature_cache/*/*.npy")}
    records = read_records(exp / "architectures.jsonl")
    assert len(records) == 4 and {r.status for r in records} == {"ok"}
    assert all(r.reward == -r.val_loss for r in records)
    # Trials opened the driver's cache instead of rebuilding it.
    assert {p: p.stat().st_mtime_ns for p in exp.glob("feature_cache/*/*.npy")} == built
    assert not list((exp / "feature_cache").glob(".*tmp*"))
