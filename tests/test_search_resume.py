"""Resuming a search: a SIGKILLed driver, `nassearch run --resume`, and resumed proxy training."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from search_configs import search_config, write

from nassearch.cli import EXIT_BAD_INPUT, main
from nassearch.config import validate_config
from nassearch.proxy_eval.proxy_task import evaluate_candidate
from nassearch.records import read_records
from nassearch.search_spaces import named_genotypes


def _searched(path) -> int:
    if not path.is_file():
        return 0
    return sum(1 for r in read_records(path) if not r.baseline)


def _reported_epochs(trial_dir) -> list[int]:
    """Epochs a trial reported, in order, across every run of it (Tune appends on restore)."""
    lines = (trial_dir / "result.json").read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines if '"final": false' in line]


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["fifo", "asha"])
def test_sigkilled_search_resumes_without_losing_or_retraining(ray_session, tmp_path, scheduler):
    # Two trials at a time (one REINFORCE batch): two are in flight when the driver is killed.
    # With ASHA some are stopped at a rung, and the kill may fall mid-rung.
    asha = {"scheduler": "asha", "grace_epochs": 1, "reduction_factor": 2}
    cfg = search_config(tmp_path, num_architectures=6, **(asha if scheduler == "asha" else {}))
    cfg["train"]["epochs"] = 3  # trials have mid-way checkpoints to resume from
    path = write(tmp_path, cfg)
    exp = tmp_path / "runs" / "tiny-search"
    records_path = exp / "architectures.jsonl"
    address = ray_session.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    command = [sys.executable, "-m", "nassearch", "run", path, "--address", address]

    driver = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 300
    while _searched(records_path) < 2:
        if driver.poll() is not None:
            pytest.fail(f"driver exited early ({driver.returncode}):\n{driver.stdout.read()}")
        if time.monotonic() > deadline:
            driver.kill()
            pytest.fail("no two architectures recorded within 300 s")
        time.sleep(0.2)
    time.sleep(1.0)  # let the next two trials get under way, so they may be cut off mid-training
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    driver.stdout.close()
    before = records_path.read_text()
    searched_before = _searched(records_path)
    assert 2 <= searched_before < 6
    # What a driver killed between a trial's start and Tune's next snapshot leaves behind: a trial
    # folder (with reported epochs) that the saved experiment state does not know.
    started = sorted(d for d in (exp / "tune").glob("trial_*") if (d / "result.json").is_file())
    orphan = exp / "tune" / "trial_orphan0"
    shutil.copytree(started[0], orphan)

    resumed = subprocess.run(
        [sys.executable, "-m", "nassearch", "run", str(exp), "--resume", "--address", address],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = records_path.read_text()
    assert after.startswith(before)  # nothing written before the kill changed
    records = [json.loads(line) for line in after.splitlines()]  # every line parses
    baselines = [r for r in records if r["baseline"]]
    searched = [r for r in records if not r["baseline"]]
    assert [r["trial_id"] for r in baselines] == ["baseline-FPN"]  # not evaluated again
    assert len(searched) == 6
    assert len({r["trial_id"] for r in searched}) == 6
    assert len({r["candidate_id"] for r in searched}) == 6
    statuses = {r["status"] for r in searched}
    assert statuses == {"ok"} if scheduler == "fifo" else statuses <= {"ok", "stopped"}
    # REINFORCE with batches of 2: the policy version keeps counting across the resume.
    assert sorted(r["controller_step"] for r in searched) == [0, 0, 1, 1, 2, 2]
    # No trial trained an epoch twice: a resumed trial continues after its last checkpoint and a
    # recorded one re-reports its record without training.
    assert not orphan.exists()  # removed once the resumed stage has run
    trial_dirs = [d for d in (exp / "tune").iterdir() if (d / "result.json").is_file()]
    assert len(trial_dirs) == 6
    for trial_dir in trial_dirs:
        epochs = _reported_epochs(trial_dir)
        assert epochs == sorted(set(epochs)), (trial_dir.name, epochs)
        assert set(epochs) <= {1, 2, 3}
    assert "searched architectures evaluated" in resumed.stdout


def test_resume_needs_an_experiment_and_the_same_config(ray_session, tmp_path, capsys):
    cfg = search_config(tmp_path)
    path = write(tmp_path, cfg)
    assert main(["run", path, "--resume"]) == EXIT_BAD_INPUT
    assert "no experiment to resume" in capsys.readouterr().err
    assert main(["run", str(tmp_path), "--resume"]) == EXIT_BAD_INPUT
    assert "not an experiment folder" in capsys.readouterr().err

    exp = tmp_path / "runs" / "tiny-search"
    exp.mkdir(parents=True)
    (exp / "config.yaml").write_text(Path(path).read_text())
    changed = write(tmp_path, {**cfg, "proxy": {"reward_holdout": 5}})
    assert main(["run", changed, "--resume"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "proxy.reward_holdout: 5 differs from 4" in err and "--resume continues" in err
    assert main(["run", path]) == EXIT_BAD_INPUT  # an existing experiment is not overwritten
    assert "continue it with --resume" in capsys.readouterr().err


def test_interrupted_proxy_training_resumes_to_the_same_result(tmp_path):
    cfg = validate_config(search_config(tmp_path), "test")
    cfg = cfg.model_copy(
        update={
            "train": cfg.train.model_copy(update={"epochs": 2}),
            "proxy": cfg.proxy.model_copy(update={"reward": "neg_loss"}),  # a sensitive reward
        }
    )
    genotype = named_genotypes("nasfpn")["FPN"]
    whole = evaluate_candidate(genotype, cfg, work_dir=tmp_path / "whole")

    def stop_after_first_epoch(epoch, info):
        raise RuntimeError("killed")

    cut = evaluate_candidate(
        genotype, cfg, work_dir=tmp_path / "cut", on_epoch_end=stop_after_first_epoch
    )
    assert cut.status == "error" and "killed" in cut.message
    assert (tmp_path / "cut" / "checkpoints" / "last.pth").is_file()
    assert not list((tmp_path / "cut" / "checkpoints").glob("epoch_*.pth"))  # last.pth only
    resumed = evaluate_candidate(genotype, cfg, work_dir=tmp_path / "cut", resume=True)
    assert whole.status == resumed.status == "ok"
    assert resumed.reward == whole.reward == -whole.val_loss
    assert resumed.metrics == whole.metrics


def test_a_candidate_recorded_under_another_trial_id_is_not_trained_or_written_again(tmp_path):
    """A trial that finished and was recorded just before the killed driver's last snapshot: the
    resumed searcher hands its candidate out again under a new trial id."""
    from types import SimpleNamespace

    from nassearch.proxy_eval.trial import recorded_result
    from nassearch.proxy_result import ProxyResult
    from nassearch.records import ArchitectureRecord, RecordWriter
    from nassearch.search import RecordCallback
    from nassearch.trial_spec import TrialSpec

    genotype = named_genotypes("nasfpn")["PAPER"]
    spec = TrialSpec(genotype.to_dict(), genotype.key(), controller_step=0, candidate_id=3)
    path = tmp_path / "architectures.jsonl"
    result = ProxyResult(reward=0.25, genotype_key=genotype.key(), status="ok")
    with RecordWriter(path) as writer:
        writer.append(ArchitectureRecord.from_result(result, spec, trial_id="old", stage="fpn"))

    assert recorded_result(path, "new", spec, "fpn").reward == 0.25
    assert recorded_result(path, "old").reward == 0.25  # by trial id, as before
    other = TrialSpec(genotype.to_dict(), "another-key", controller_step=0, candidate_id=3)
    assert recorded_result(path, "new", other, "fpn") is None  # same id, other architecture
    assert recorded_result(path, "new", spec, "head") is None  # another stage's candidate 3
    assert recorded_result(path, "new") is None

    callback = RecordCallback(path, total=3, quiet=True, stage="fpn")
    callback.setup()
    report = {**result.to_report(), "final": True, "from_record": True}
    trial = SimpleNamespace(trial_id="new", config=spec.to_config(), last_result=report)
    callback.on_trial_complete(0, [], trial)
    fresh = SimpleNamespace(trial_id="next", config=other.to_config(), last_result=report)
    callback.on_trial_complete(0, [], fresh)
    assert [r.trial_id for r in read_records(path)] == ["old", "next"]
