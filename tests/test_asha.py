"""search.scheduler: asha: trials stopped at a rung are recorded as stopped with their partial
metrics, never ranked, never trained again, and the controller learns from a comparable reward."""

from __future__ import annotations

import json

import pytest
from search_configs import search_config, write

from nassearch.cli import EXIT_BAD_INPUT, main
from nassearch.controllers.rung_reward import rung_quantile, stopped_reward
from nassearch.export import export_top
from nassearch.jsonl import read_jsonl
from nassearch.records import read_records
from nassearch.status import Status


def asha_config(tmp_path, **search):
    options = {"scheduler": "asha", "grace_epochs": 1, "reduction_factor": 2, **search}
    cfg = search_config(tmp_path, num_architectures=6, **options)
    cfg["train"]["epochs"] = 3
    cfg["proxy"]["reward"] = "neg_loss"  # distinct rewards on a 3-epoch tiny proxy
    return cfg


def test_rung_quantile_and_mapping():
    peers = [3.0, 1.0, 2.0, 2.0, 5.0]
    assert [rung_quantile(v, peers) for v in (1.0, 2.0, 3.0, 5.0)] == [0.0, 0.375, 0.75, 1.0]
    assert rung_quantile(0.3, [0.3]) == 0.5
    finished = [0.1, 0.4, 0.3]
    assert stopped_reward(0.0, finished) == 0.4 and stopped_reward(1.0, finished) == 0.1
    assert stopped_reward(0.5, finished) == pytest.approx(0.3)
    assert stopped_reward(0.5, []) is None


@pytest.mark.parametrize(
    ("search", "train", "needle"),
    [
        ({"grace_epochs": 3}, {}, "search.grace_epochs: 3 is not below max_epochs 3"),
        ({"reduction_factor": 1}, {}, "search.reduction_factor: 1 keeps every trial"),
        ({"max_epochs": 5}, {}, "search.max_epochs: 5 differs from train.epochs 3"),
        ({}, {"epochs": 2.5}, "asha counts whole epochs, but train.epochs is 2.5"),
    ],
)
def test_bad_asha_settings_are_one_line_errors(tmp_path, capsys, search, train, needle):
    cfg = asha_config(tmp_path, **search)
    cfg["train"].update(train)
    assert main(["run", write(tmp_path, cfg)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "runs").exists()


def test_asha_needs_a_single_repeat(tmp_path, capsys):
    cfg = asha_config(tmp_path)
    cfg["proxy"]["repeats"] = 2
    assert main(["run", write(tmp_path, cfg)]) == EXIT_BAD_INPUT
    assert "asha needs proxy.repeats 1 (got 2)" in capsys.readouterr().err


@pytest.mark.slow
def test_an_asha_search_records_stopped_trials_and_never_ranks_them(ray_session, tmp_path, capsys):
    assert main(["run", write(tmp_path, asha_config(tmp_path))]) == 0
    out = capsys.readouterr().out
    exp = tmp_path / "runs" / "tiny-search"
    records = [r for r in read_records(exp / "architectures.jsonl") if not r.baseline]
    assert len(records) == 6 and len({r.key for r in records}) == 6
    stopped = [r for r in records if r.status == Status.STOPPED]
    finished = [r for r in records if r.status == Status.OK]
    assert stopped and finished and len(stopped) + len(finished) == 6
    for r in stopped:  # the rung, the partial metric, no reward
        assert r.rung in (1, 2) and r.val_loss > 0 and r.reward is None and r.all_scores == []
        assert f"stopped at epoch {r.rung}" in out
    # Every trial reported its per-epoch validation loss; stopped ones stopped at their rung.
    for r in stopped:
        result = exp / "tune" / f"trial_{r.trial_id}" / "result.json"
        lines = [json.loads(line) for line in result.read_text().splitlines()]
        assert [line["epoch"] for line in lines] == list(range(1, r.rung + 1))
        assert all(line["epoch_val_loss"] > 0 for line in lines)
    # The controller was told a reward for every architecture, on the finished ones' scale.
    updates = read_jsonl(exp / "controller.jsonl")
    assert sum(u["batch_size"] for u in updates) == 6
    low, high = min(r.reward for r in finished), max(r.reward for r in finished)
    assert all(low - 1e-9 <= u["batch_reward_mean"] <= high + 1e-9 for u in updates)
    assert f"{len(stopped)} stopped early" in out
    exported = export_top(exp, 10, recipe="search", log=None)
    assert {e.key for e in exported} == {r.key for r in finished}  # stopped: never ranked
    board = (exp / "export" / "leaderboard.md").read_text()
    assert f"{len(stopped)} stopped early, never ranked" in board


def test_a_trial_ended_without_its_final_report_is_a_failure_that_says_why(tmp_path):
    """A trial cut by the time budget completes with an epoch report as its last result."""
    from types import SimpleNamespace

    from nassearch.search import RecordCallback
    from nassearch.search_spaces.nasfpn import FPN

    path = tmp_path / "architectures.jsonl"
    callback = RecordCallback(path, total=2, quiet=True)
    config = {"genotype": FPN.to_dict(), "genotype_key": FPN.key()}
    trial = SimpleNamespace(trial_id="t1", config=config, last_result={"epoch": 2, "final": False})
    callback.on_trial_complete(0, [], trial)
    [record] = read_records(path)
    assert record.status == Status.ERROR and record.reward is None
    assert record.message.startswith("ended after epoch 2 without its final report")
