"""`nassearch train --resume` after a hard kill: the resumed run reproduces the uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from search_configs import train_config

from nassearch.cli import EXIT_BAD_INPUT, main

EPOCHS = 4
NUM_TRAIN = 16
BATCH = 2
TOTAL_ITERS = EPOCHS * NUM_TRAIN // BATCH
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def resume_config(tmp_path: Path) -> dict:
    """Augmentation on: crops, jitter and flips draw from the RNGs a resume must restore."""
    return train_config(
        tmp_path,
        name="resume-cli",
        seed=5,
        num_train=NUM_TRAIN,
        input={"scale_range": [0.7, 1.3], "flip_prob": 0.5},
        train={
            "epochs": EPOCHS,
            "batch_size": BATCH,
            "optimizer": {"lr": 0.01},
            "schedule": {"type": "cosine", "warmup_iters": 3},
        },
    )


def train_cmd(config: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nassearch", "train", str(config), "--name", name, *extra]


def train(config: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        train_cmd(config, name, *extra), capture_output=True, text=True, timeout=300, env=ENV
    )


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def kill_after_first_epoch(config: Path, run_dir: Path) -> None:
    """Start a run and SIGKILL it as soon as its epoch-1 checkpoint (and last.pth) are on disk."""
    ckpts = run_dir / "checkpoints"
    log = config.with_name(f"{run_dir.name}.log")
    with log.open("wb") as out:  # a file, not a pipe: a full pipe would stall the run
        proc = subprocess.Popen(
            train_cmd(config, run_dir.name), stdout=out, stderr=subprocess.STDOUT, env=ENV
        )
    try:
        deadline = time.monotonic() + 240
        while not ((ckpts / "epoch_1.pth").is_file() and (ckpts / "last.pth").is_file()):
            if proc.poll() is not None:
                tail = log.read_text()[-2000:]
                pytest.fail(f"run ended (rc {proc.returncode}) before epoch 1's checkpoint: {tail}")
            if time.monotonic() > deadline:
                pytest.fail("no epoch-1 checkpoint within 240 s")
            time.sleep(0.01)
        finished_before_kill = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not finished_before_kill, "training finished before it could be killed; raise EPOCHS"
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, Path, dict]:
    """The config, its runs folder and the final checkpoint of a run nobody interrupted."""
    root = tmp_path_factory.mktemp("resume-cli")
    config = root / "train.yaml"
    config.write_text(yaml.safe_dump(resume_config(root)))
    straight = train(config, "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    full = load(root / "runs" / "straight" / "checkpoints" / "last.pth")
    assert full["iteration"] == TOTAL_ITERS and len(full["loss_history"]) == TOTAL_ITERS
    return config, root / "runs", full


@pytest.mark.slow
def test_resume_after_sigkill_reproduces_the_uninterrupted_run(uninterrupted, capsys):
    config, runs, full = uninterrupted

    cut_dir = runs / "cut"
    kill_after_first_epoch(config, cut_dir)
    killed = load(cut_dir / "checkpoints" / "last.pth")
    # Killed mid-training: the resume below has real work to do.
    assert TOTAL_ITERS // EPOCHS <= killed["iteration"] < TOTAL_ITERS
    assert killed["loss_history"] == full["loss_history"][: killed["iteration"]]

    resumed = train(config, "cut", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {cut_dir / 'checkpoints' / 'last.pth'}" in resumed.stdout
    assert f"at iteration {killed['iteration']}" in resumed.stdout
    final = load(cut_dir / "checkpoints" / "last.pth")
    assert final["iteration"] == TOTAL_ITERS
    assert final["loss_history"] == full["loss_history"]
    assert list(final["model"]) == list(full["model"])
    for key, value in full["model"].items():
        assert torch.equal(final["model"][key], value), key
    assert (cut_dir / "metrics.json").is_file()

    # Training again into the finished folder without --resume is refused and changes nothing;
    # so is a resume that changes the training (here the learning rate), naming the key.
    metrics, saved = runs / "straight" / "metrics.json", runs / "straight" / "config.yaml"
    before = metrics.read_bytes(), saved.read_bytes()
    # (In this process: these stop before any training, so a new interpreter would only add its
    # start-up; the killed and resumed runs above are separate processes.)
    for extra, needle in [
        ((), "--resume"),
        (("--set", "train.optimizer.lr=0.02", "--resume"), "train.optimizer.lr: 0.02 differs from 0.01"),
    ]:  # fmt: skip
        capsys.readouterr()
        assert main(["train", str(config), "--name", "straight", *extra]) == EXIT_BAD_INPUT
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
        assert (metrics.read_bytes(), saved.read_bytes()) == before
    # Where and how it runs may change: the finished run just reports again.
    argv = ["train", str(config), "--name", "straight", "--resume"]
    assert main([*argv, "--set", "train.log_interval=7", "device=auto"]) == 0
    assert saved.read_bytes() == before[1]


@pytest.mark.slow
def test_sigterm_stops_with_a_checkpoint_at_the_step_and_resume_matches(uninterrupted, tmp_path):
    """A scheduler's preemption: SIGTERM mid-epoch -> last.pth at that step, exit 130, --resume
    reproduces the uninterrupted run."""
    config, runs, full = uninterrupted
    log = tmp_path / "term.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            train_cmd(config, "term"), stdout=out, stderr=subprocess.STDOUT, env=ENV
        )
    try:
        deadline = time.monotonic() + 240
        while "epoch 2/4 iter 11/" not in log.read_text():  # log_interval 1; 8 steps per epoch
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "no second-epoch step within 240 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "SIGTERM: stopping after this step with a checkpoint" in text
    assert "training stopped: interrupted: stopped on request at iteration" in text
    cut = load(runs / "term" / "checkpoints" / "last.pth")
    assert 11 <= cut["iteration"] < TOTAL_ITERS
    assert cut["loss_history"] == full["loss_history"][: cut["iteration"]]

    resumed = train(config, "term", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at iteration {cut['iteration']}" in resumed.stdout
    final = load(runs / "term" / "checkpoints" / "last.pth")
    assert final["loss_history"] == full["loss_history"]
    for key, value in full["model"].items():
        assert torch.equal(final["model"][key], value), key
