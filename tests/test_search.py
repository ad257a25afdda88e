"""`nassearch run` end to end on tiny synthetic data: baselines first, one record per architecture."""

from __future__ import annotations

import pytest
from search_configs import search_config, write

from nassearch.cli import EXIT_BAD_INPUT, main
from nassearch.jsonl import read_jsonl
from nassearch.records import read_records


@pytest.mark.slow
def test_run_records_baseline_and_architectures(ray_session, tmp_path, capsys, monkeypatch):
    import torch

    from nassearch import search

    threads, real = [], search.evaluate_repeated

    def evaluate(*args, **kwargs):
        threads.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(search, "evaluate_repeated", evaluate)
    before = torch.get_num_threads()
    assert main(["run", write(tmp_path, search_config(tmp_path))]) == 0
    # The driver trains the baseline on a trial's threads (cpus_per_trial 1), then restores its own.
    assert threads == [1] and torch.get_num_threads() == before
    out = capsys.readouterr().out
    exp = tmp_path / "runs" / "tiny-search"
    records = read_records(exp / "architectures.jsonl")
    baselines = [r for r in records if r.baseline]
    searched = [r for r in records if not r.baseline]
    assert [r.trial_id for r in baselines] == ["baseline-FPN"] and records[0].baseline
    assert len(searched) == 3
    assert {r.status for r in records} == {"ok"}
    assert all(r.genotype["space"] == "nasfpn" and len(r.key) == 16 for r in records)
    assert sorted(r.controller_step for r in searched) == [0, 0, 1]  # batches of 2
    assert all(r.reward == r.ap for r in records)
    # Every searched record carries its phases (profile_trial reads them): the Ray start and
    # the driver's record are measured around the trial, the rest inside it; they add up to
    # no more than the whole.
    from nassearch.proxy_result import TIMING_PHASES

    for r in searched:
        assert set(r.timings) == set(TIMING_PHASES), r.timings
        assert all(v >= 0 for v in r.timings.values())
        assert r.timings["step"] > 0 and r.timings["reward"] > 0
        inside = ("data", "step", "checkpoint", "evaluation", "callback")
        assert sum(r.timings[k] for k in inside) <= r.train_seconds + 1e-6
    assert set(baselines[0].timings) >= {"build", "measure", "step", "reward"}
    # One concise line per architecture, then the table with the baseline row.
    assert out.count("[baseline FPN] ok") == 1 and out.count("/3] ok") == 3
    assert "\nFPN " in out and "3 searched architectures evaluated" in out
    assert (exp / "config.yaml").is_file() and (exp / "tensorboard").is_dir()
    # TensorBoard: every trial's epochs and final metrics (Tune's logger), short folder names.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trial_dirs = sorted((exp / "tune").glob("trial_*"))
    assert len(trial_dirs) == 3
    events = EventAccumulator(str(trial_dirs[0]))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"ray/tune/loss_cls", "ray/tune/reward", "ray/tune/coco/AP"} <= tags
    # The controller's one update (a batch of 2): controller.jsonl, TensorBoard, the last line.
    updates = read_jsonl(exp / "controller.jsonl")
    assert len(updates) == 1 and updates[0]["update"] == 1 and updates[0]["batch_size"] == 2
    first_two = [r.reward for r in searched if r.controller_step == 0]
    assert updates[0]["batch_reward_mean"] == pytest.approx(sum(first_two) / 2)
    assert 0 < updates[0]["best_probability"] <= 1 and updates[0]["entropy"] > 0
    events = EventAccumulator(str(exp / "tensorboard"))
    events.Reload()
    assert {"update/batch_reward_mean", "update/best_probability"} <= set(events.Tags()["scalars"])
    assert "learning: reinforce: 1 update, too few" in out


@pytest.mark.parametrize(
    ("search", "needle"),
    [
        ({"baselines": ["NOPE"]}, "search.baselines: 'NOPE'"),
        ({"controller_options": {"lrr": 1}}, "controller reinforce"),
        ({"gpus_per_trial": 1}, "search.gpus_per_trial"),
        ({"space": "yolo"}, "search.space"),
    ],
)
def test_bad_search_settings_fail_before_any_trial(ray_session, tmp_path, capsys, search, needle):
    path = write(tmp_path, search_config(tmp_path, **search))
    assert main(["run", path]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
    assert err.startswith(f"error: {path}: search.")
    records = tmp_path / "runs" / "tiny-search" / "architectures.jsonl"
    assert not records.exists()


def test_a_training_config_without_a_search_section_is_refused(tmp_path, capsys):
    cfg = search_config(tmp_path)
    del cfg["search"]
    path = write(tmp_path, cfg)
    assert main(["run", path]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}: search: missing;")
    assert not (tmp_path / "runs").exists()
    # A search section given on the command line is one.
    assert main(["run", path, "--set", "search.num_architectures=0"]) == EXIT_BAD_INPUT
    assert "search: missing" not in capsys.readouterr().err


def test_existing_experiment_is_not_overwritten(tmp_path, capsys):
    exp = tmp_path / "runs" / "tiny-search"
    exp.mkdir(parents=True)
    (exp / "architectures.jsonl").write_text('{"key": "x"}\n')
    assert main(["run", write(tmp_path, search_config(tmp_path))]) == EXIT_BAD_INPUT
    assert "already holds an experiment" in capsys.readouterr().err
    assert (exp / "architectures.jsonl").read_text() == '{"key": "x"}\n'


def test_unwritable_storage_and_missing_data_fail_before_any_trial(tmp_path, capsys):
    path = write(tmp_path, search_config(tmp_path))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["run", path, "--storage", str(blocker / "runs")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: --storage {blocker / 'runs'}: not writable")
        and err.count("\n") == 1
    )

    coco = search_config(tmp_path)
    coco["data"] = {"type": "coco", "root": str(tmp_path / "no-coco")}
    assert main(["run", write(tmp_path, coco)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "data.root: folder not found" in err and err.count("\n") == 1
    assert not (tmp_path / "runs" / "tiny-search").exists()  # nothing half-made left behind
