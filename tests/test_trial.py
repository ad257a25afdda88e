"""The search trainable inside a real Ray Tune run: per-epoch reports, then the scored architecture."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ray import tune
from search_configs import search_config

from nassearch.config import validate_config
from nassearch.controllers import build_controller
from nassearch.controllers.tune_searcher import ControllerSearcher
from nassearch.proxy_eval.trial import proxy_trial
from nassearch.search_spaces import get_space


@pytest.mark.slow
def test_trials_report_epochs_and_scored_architectures(ray_session, tmp_path):
    raw = search_config(tmp_path)
    raw["model"]["neck"].update(type="nasfpn")
    raw["model"]["genotype"] = "FPN"
    raw["train"]["epochs"] = 2
    del raw["search"]
    experiment = validate_config(raw)
    controller = build_controller("random", get_space("nasfpn"), seed=3)
    searcher = ControllerSearcher(controller, max_candidates=2)
    tuner = tune.Tuner(
        tune.with_parameters(proxy_trial, experiment=json.loads(experiment.model_dump_json())),
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=2, max_concurrent_trials=2),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), name="trial", verbose=0),
    )
    grid = tuner.fit()
    assert grid.num_errors == 0 and len(grid) == 2
    keys = set()
    for result in grid:
        final = result.metrics
        assert final["final"] is True and final["status"] == "ok", final["message"]
        assert final["reward"] == final["ap"] == final["coco"]["AP"]
        assert final["genotype_key"] == result.config["genotype_key"]
        history = result.metrics_dataframe
        epochs = history[~history["final"].astype(bool)]["epoch"].tolist()
        assert epochs == [1, 2]  # 8 training images, batch 4: two reports before the final one
        keys.add(final["genotype_key"])
    assert len(keys) == 2
    # The driver-side controller was told both rewards.
    assert controller.unique_architectures == 2 and searcher.num_completed == 2


def test_a_restored_checkpoint_brings_back_the_finished_repeats(tmp_path):
    from nassearch.proxy_eval.trial import CHECKPOINT_FILE, _restore_checkpoint, _write_repeats
    from nassearch.proxy_result import ProxyResult

    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / CHECKPOINT_FILE).write_bytes(b"trainer state of repeat 1")
    first = ProxyResult(
        reward=-2.5,
        scores=[-2.5],
        genotype_key="abc",
        ap=0.1,
        ap50=0.2,
        val_loss=2.5,
        latency_ms=3.0,
    )
    _write_repeats(saved, [first])
    work = tmp_path / "work"
    done, resume = _restore_checkpoint(tune.Checkpoint.from_directory(str(saved)), work)
    assert done == [first] and resume
    # The trainer state belongs to the next repeat, the one evaluate_repeated runs in repeat-1/.
    assert (work / "repeat-1" / "checkpoints" / CHECKPOINT_FILE).read_bytes() == (
        b"trainer state of repeat 1"
    )
    assert _restore_checkpoint(None, work) == ([], False)


def test_a_trial_parses_its_genotype_once(tmp_path, monkeypatch):
    """The genotype travels as an argument from the trial to the detector builder: one parse of
    the searcher's mapping, however many modules need it."""
    from types import SimpleNamespace

    from nassearch.search_spaces import nasfpn

    raw = search_config(tmp_path)
    raw["train"].update(epochs=1, max_iters=1)
    experiment = validate_config(raw)
    genotype = get_space("nasfpn", num_cells=5).sample(np.random.default_rng(0))
    counts = {"spaces": 0, "parses": 0}
    real_init, real_parse = nasfpn.NASFPNSpace.__init__, nasfpn.NASFPNGenotype.from_dict

    def counting_init(self, *args, **kwargs):
        counts["spaces"] += 1
        real_init(self, *args, **kwargs)

    def counting_parse(cls, data):
        counts["parses"] += 1
        return real_parse.__func__(cls, data)

    monkeypatch.setattr(nasfpn.NASFPNSpace, "__init__", counting_init)
    monkeypatch.setattr(nasfpn.NASFPNGenotype, "from_dict", classmethod(counting_parse))
    reports = []
    monkeypatch.setattr(tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "t0"))
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: reports.append(metrics))
    proxy_trial(
        {"genotype": genotype.to_dict(), "genotype_key": genotype.key()},
        json.loads(experiment.model_dump_json()),
    )
    final = reports[-1]
    assert final["final"] and final["status"] == "ok", final["message"]
    assert final["genotype_key"] == genotype.key()
    # One parse of the genotype and one space object (the one that parses it): the driver
    # validated search.space_options already, and the builders need no space.
    assert counts == {"spaces": 1, "parses": 1}


@pytest.mark.parametrize(
    ("every_s", "expected"), [(0.0, [True, True, True]), (3600.0, [False] * 3)]
)
def test_trial_checkpoints_follow_checkpoint_every_s(tmp_path, monkeypatch, every_s, expected):
    """Every epoch reports a checkpoint at the default (0 s); with a spacing longer than the
    training, no epoch does, while every epoch is still reported and the reward is the same."""
    from types import SimpleNamespace

    raw = search_config(tmp_path)
    raw["train"].update(epochs=3, max_iters=None)
    raw["proxy"]["checkpoint_every_s"] = every_s
    experiment = validate_config(raw)
    genotype = get_space("nasfpn", num_cells=5).sample(np.random.default_rng(0))
    reports = []
    monkeypatch.setattr(tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "t0"))
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(
        tune, "report", lambda metrics, checkpoint=None: reports.append((metrics, checkpoint))
    )
    proxy_trial(
        {"genotype": genotype.to_dict(), "genotype_key": genotype.key()},
        json.loads(experiment.model_dump_json()),
    )
    epochs = [(m, c) for m, c in reports if not m["final"]]
    assert [m["epoch"] for m, _ in epochs] == [1, 2, 3]
    assert [c is not None for _, c in epochs] == expected
    final = reports[-1][0]
    assert final["status"] == "ok" and set(final["timings"]) >= {"setup", "step", "reward"}
