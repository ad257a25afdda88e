"""The shipped search configs: the quickstart's budget, the papers' proxy settings, required keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from nassearch.cli import EXIT_BAD_INPUT, main
from nassearch.config import load_config
from nassearch.proxy_eval.proxy_data import uses_feature_cache
from nassearch.search_spaces import named_genotypes

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
# Stand-ins for what a user gives on their machine (data on disk, weights), so the rest validates.
LOCAL = ["data.type=synthetic", "data.root=null", "model.backbone.weights=null"]


def test_quickstart_is_a_cpu_search_of_at_least_20_architectures_plus_fpn():
    cfg = load_config(EXPERIMENTS / "quickstart.yaml")
    assert cfg.data.type == "synthetic" and cfg.device == "auto"
    assert cfg.search.space == "nasfpn" and cfg.search.num_architectures >= 20
    assert cfg.search.baselines == ["FPN"] and cfg.search.gpus_per_trial == 0
    assert cfg.search.cpus_per_trial * cfg.search.max_concurrent <= 2  # this 2-core machine
    # The proxy the README's grid chose: frozen random backbone on cached features, AP50, 2 seeds.
    assert cfg.proxy.reward == "ap50" and cfg.proxy.repeats == 2 and uses_feature_cache(cfg)
    assert cfg.model.backbone.weights is None and cfg.model.backbone.frozen_stages == 4


@pytest.mark.parametrize("name", ["demo_cpu.yaml", "demo_cpu_96px.yaml"])
def test_demo_cpu_is_a_trained_backbone_proxy_searched_longer_and_reevaluated(name):
    demo = load_config(EXPERIMENTS / name)
    quick = load_config(EXPERIMENTS / "quickstart.yaml")
    # The quickstart's detector and training, with a trained backbone (the end-to-end retraining
    # starts from the search config) at the grid's input size and reward.
    assert (demo.input.size, demo.proxy.reward) == (
        (64, "ap50") if name == "demo_cpu.yaml" else (96, "ap")
    )
    assert not uses_feature_cache(demo) and demo.model.backbone.frozen_stages == -1
    assert demo.model.neck == quick.model.neck and demo.train == quick.train
    assert demo.search.num_architectures >= 100 and demo.search.controller_options == {}
    assert (demo.search.reevaluate_top.k, demo.search.reevaluate_top.seeds) == (5, 2)
    assert demo.search.cpus_per_trial * demo.search.max_concurrent <= 2
    assert demo.data.synthetic.num_val >= 200  # retrained models are compared on these


def test_nasfpn_config_is_the_papers_proxy():
    cfg = load_config(EXPERIMENTS / "nasfpn.yaml", LOCAL)
    assert (cfg.model.type, cfg.model.backbone.depth) == ("retinanet", 10)
    assert (cfg.input.mode, cfg.input.size) == ("square", 512)
    neck = cfg.searched_neck()
    assert (neck.type, neck.stacks, neck.style, neck.out_channels) == (
        "nasfpn",
        3,
        "tensorflow",
        256,
    )
    assert cfg.model.neck.type == "fpn" and cfg.model.neck.out_channels == 256
    assert cfg.train.epochs == 10 and cfg.train.schedule.milestones == [8]
    assert (cfg.proxy.reward, cfg.proxy.reward_holdout) == ("ap", 7392)
    assert cfg.search.gpus_per_trial == 1 and cfg.search.baselines == ["FPN"]
    assert "FPN" in named_genotypes("nasfpn")


def test_nasfcos_config_is_the_papers_proxy():
    cfg = load_config(EXPERIMENTS / "nasfcos.yaml", LOCAL)
    assert (cfg.model.type, cfg.model.backbone.depth) == ("fcos", 50)
    assert uses_feature_cache(cfg)  # frozen R-50, cached features
    assert (cfg.input.mode, cfg.input.size) == ("square", 384)
    assert cfg.proxy.reward == "neg_loss"
    assert cfg.search.space == "nasfcos" and cfg.search.progressive


@pytest.mark.parametrize("name", ["nasfpn", "nasfcos"])
def test_paper_configs_name_what_is_missing(name, capsys):
    path = str(EXPERIMENTS / f"{name}.yaml")
    assert main(["run", path]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err == f"error: {path}: data.root: required; give it with --set data.root=VALUE\n"
    assert main(["run", path, "--set", "data.root=/coco"]) == EXIT_BAD_INPUT
    assert "model.backbone.weights: required" in capsys.readouterr().err
    args = ["data.root=/no/such/coco", "model.backbone.weights=null"]
    assert main(["run", path, "--set", *args]) == EXIT_BAD_INPUT
    assert "data.root: folder not found: /no/such/coco" in capsys.readouterr().err
