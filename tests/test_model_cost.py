"""An architecture's cost behind a frozen backbone: the backbone measured once, the sum exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from search_configs import search_config

from nassearch.config import ExperimentConfig, validate_config
from nassearch.detectors.build import build_detector
from nassearch.proxy_eval import model_cost
from nassearch.proxy_eval.model_cost import BACKBONE_COST_PREFIX, backbone_cost, measure_cost
from nassearch.search_spaces import get_space, named_genotypes

CPU = torch.device("cpu")
FROZEN = {"depth": 10, "frozen_stages": 4, "norm_eval": True}

pytestmark = pytest.mark.usefixtures("one_thread")


def frozen(tmp_path, space: str) -> ExperimentConfig:
    cfg = search_config(tmp_path, space=space)
    cfg["model"]["backbone"] = dict(FROZEN)
    if space == "nasfcos":  # GroupNorm(32) on 1x1 maps needs 2 channels per group
        cfg["model"].update(type="fcos", feat_channels=64, neck={"out_channels": 64})
    return validate_config(cfg, "test")


def genotypes(space: str):
    if space == "nasfpn":
        return [named_genotypes("nasfpn")["PAPER"], named_genotypes("nasfpn")["FPN"]]
    rng = np.random.default_rng(0)
    return [get_space("nasfcos").sample(rng) for _ in range(3)]


@pytest.mark.parametrize("space", ["nasfpn", "nasfcos"])
def test_split_cost_counts_exactly_the_whole_detector(tmp_path, space):
    cfg = frozen(tmp_path, space)
    for genotype in genotypes(space):
        model = build_detector(cfg.candidate_model(genotype.space), 3, genotype, seed=0)
        whole = measure_cost(model, cfg, CPU)
        backbone = backbone_cost(model, cfg, CPU, tmp_path)
        split = measure_cost(model, cfg, CPU, backbone=backbone)
        assert (split.params, split.macs) == (whole.params, whole.macs)
        assert backbone.macs < split.macs and backbone.params < split.params
        assert split.latency_ms > backbone.latency_ms > 0
        with torch.no_grad():
            feats = model.backbone(torch.zeros(1, 3, *cfg.input.network_size()))
        assert backbone.feature_shapes == tuple(tuple(f.shape[1:]) for f in feats)
        assert model.training  # measuring leaves the train/eval mode as it was


def test_backbone_is_measured_once_per_folder_and_setting(tmp_path, monkeypatch):
    cfg = frozen(tmp_path, "nasfpn")
    model = build_detector(cfg.candidate_model("nasfpn"), 3, genotypes("nasfpn")[0], seed=0)
    calls = []
    real = model_cost._measure_backbone

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(model_cost, "_measure_backbone", counted)
    first = backbone_cost(model, cfg, CPU, tmp_path)
    again = backbone_cost(model, cfg, CPU, tmp_path)
    assert again == first and len(calls) == 1
    files = list(tmp_path.glob(f"{BACKBONE_COST_PREFIX}*.json"))
    assert len(files) == 1

    # What the latency depends on names the file: another latency batch is measured anew.
    batch4 = cfg.model_copy(deep=True)
    batch4.proxy.latency_batch = 4
    backbone_cost(model, batch4, CPU, tmp_path)
    assert len(calls) == 2 and len(list(tmp_path.glob(f"{BACKBONE_COST_PREFIX}*.json"))) == 2

    # A damaged file is measured again and replaced; a folder that cannot be written is no error.
    files[0].write_text("{not json")
    assert backbone_cost(model, cfg, CPU, tmp_path).macs == first.macs and len(calls) == 3
    assert backbone_cost(model, cfg, CPU, tmp_path).macs == first.macs and len(calls) == 3
    missing = tmp_path / "no-such-folder"
    assert backbone_cost(model, cfg, CPU, missing).macs == first.macs and len(calls) == 4
    assert not missing.exists()
