"""Distributed training: per-rank shares of the global batch, torchrun set-up errors, and two gloo
processes on CPU that train exactly like one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from search_configs import train_config

from nassearch.cli import EXIT_BAD_INPUT, main
from nassearch.config import validate_config
from nassearch.data.build import build_dataset
from nassearch.detectors.build import build_detector
from nassearch.distributed import DistributedContext, init_distributed
from nassearch.engine.trainer import GlobalBatchSampler, Trainer, epoch_order
from nassearch.errors import NasSearchError

TORCHRUN_ENV = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "RANK": "0", "LOCAL_RANK": "0"}


def ddp_config(tmp_path: Path, **model) -> dict:
    return train_config(
        tmp_path,
        name="ddp",
        seed=3,
        # Fixed-size inputs: every rank pads its images exactly as one process pads the global batch.
        input={"flip_prob": 0.5},
        # Frozen BN statistics: no batch-dependent layer, so 2 x 2 images equal 1 x 4 exactly.
        model={"backbone": {"depth": 10, "frozen_stages": -1, "norm_eval": True}, **model},
        train={"epochs": 2, "optimizer": {"lr": 0.02}, "schedule": {"warmup_iters": 2}},
    )


def write(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


CLI_WORKER = str(Path(__file__).with_name("ddp_cli_worker.py"))


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("torchrun")
    launcher = [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]
    return subprocess.run(
        [*launcher, "--standalone", f"--nproc_per_node={nproc}", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


# ------------------------------------------------------------------------ the global batch's shares


@pytest.mark.parametrize(("size", "batch", "world"), [(8, 4, 2), (10, 4, 2), (11, 6, 3), (7, 4, 4)])
def test_rank_shares_tile_the_single_process_batches(size, batch, world):
    single = list(GlobalBatchSampler(size, batch, seed=5, epoch=2))
    shares = [
        list(GlobalBatchSampler(size, batch, seed=5, epoch=2, rank=r, world_size=world))
        for r in range(world)
    ]
    assert all(len(s) == len(single) for s in shares)
    for k, whole in enumerate(single):
        joined = [i for share in shares for i in share[k]]
        assert all(len(share[k]) >= 1 for share in shares)
        if len(whole) >= world:
            assert joined == whole
        else:  # topped up from the start of the epoch
            assert joined[: len(whole)] == whole
    assert [i for b in single for i in b] == epoch_order(size, 5, 2)


def test_short_last_batch_is_topped_up_from_the_epoch_start():
    order = epoch_order(5, 0, 0)
    last = [list(GlobalBatchSampler(5, 4, 0, 0, rank=r, world_size=4))[-1] for r in range(4)]
    assert last == [[order[4]], [order[0]], [order[1]], [order[2]]]


def test_start_batch_resumes_at_the_same_global_batch():
    full = list(GlobalBatchSampler(12, 4, 1, 3, rank=1, world_size=2))
    assert list(GlobalBatchSampler(12, 4, 1, 3, start_batch=1, rank=1, world_size=2)) == full[1:]


# ------------------------------------------------------------------------------ bad set-ups


def tiny_trainer(tmp_path, ctx, **train):
    cfg = validate_config(ddp_config(tmp_path))
    cfg.train = cfg.train.model_copy(update=train)
    data = build_dataset(cfg, "train", train=True)
    model = build_detector(cfg.model, len(data.cat_ids), seed=0)
    return Trainer(model, data, cfg.train, device=torch.device("cpu"), distributed=ctx)


def test_global_batch_must_split_evenly(tmp_path):
    with pytest.raises(NasSearchError, match=r"train.batch_size: 4 .* 3 processes"):
        tiny_trainer(tmp_path, DistributedContext(0, 0, 3, "gloo"))


def test_sync_bn_is_refused_on_cpu(tmp_path):
    with pytest.raises(NasSearchError, match="train.sync_bn: .*CUDA only"):
        tiny_trainer(tmp_path, DistributedContext(0, 0, 2, "gloo"), sync_bn=True)


def test_single_process_needs_no_process_group():
    ctx, device = init_distributed("cpu", env={})
    assert ctx is None and device == torch.device("cpu")
    ctx, _ = init_distributed("cpu", env={"WORLD_SIZE": "1"})
    assert ctx is None


@pytest.mark.parametrize(
    ("env", "device", "needle"),
    [
        (
            {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"},
            "cpu",
            "MASTER_ADDR, MASTER_PORT not set",
        ),
        ({"WORLD_SIZE": "two"}, "cpu", "WORLD_SIZE='two'"),
        ({**TORCHRUN_ENV, "WORLD_SIZE": "2"}, "cuda:1", "device: 'cuda:1'"),
    ],
)
def test_torchrun_environment_errors(env, device, needle):
    with pytest.raises(NasSearchError, match=needle.replace("(", r"\(")):
        init_distributed(device, env=env)


def test_eval_refuses_torchrun_and_only_rank_0_reports(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, ddp_config(tmp_path))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["eval", str(path), "--checkpoint", "x.pth"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err == "error: nassearch eval runs in one process; launch it without torchrun"
    monkeypatch.setenv("RANK", "1")
    assert main(["eval", str(path), "--checkpoint", "x.pth"]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------ two processes on CPU


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_torchrun_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    cfg = ddp_config(tmp_path)
    path = write(tmp_path, cfg)
    one = subprocess.run(
        [sys.executable, "-m", "nassearch", "train", str(path), "--name", "one"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr
    # Each rank gets its own output_dir: rank 1 must leave its folder unmade.
    ranks = tmp_path / "ranks"
    two = torchrun(CLI_WORKER, str(ranks), "train", str(path), "--name", "two")
    assert two.returncode == 0, two.stderr[-3000:]
    assert not (ranks / "rank1").exists()

    runs = tmp_path / "runs"
    (ranks / "rank0" / "two").rename(runs / "two")
    # Rank 0 alone writes and logs: the same files as one process, each line once.
    assert files_under(runs / "two") == files_under(runs / "one")
    assert len((runs / "two" / "metrics.jsonl").read_text().splitlines()) == 1
    assert two.stdout.count("training retinanet") == 1
    assert "2 processes (gloo, cpu), 2 images each per step" in two.stdout
    assert two.stdout.count("metrics written to") == 1
    assert "error" not in two.stderr

    a = torch.load(runs / "one" / "checkpoints" / "last.pth", weights_only=True)
    b = torch.load(runs / "two" / "checkpoints" / "last.pth", weights_only=True)
    assert b["iteration"] == a["iteration"] == 4
    assert list(b["model"]) == list(a["model"])  # unwrapped: no "module." prefix
    torch.testing.assert_close(
        torch.tensor(b["loss_history"]), torch.tensor(a["loss_history"]), rtol=1e-5, atol=1e-6
    )
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-4, atol=1e-6, msg=key)
    # Training moved the weights, so the agreement above is not that of two untouched models.
    config = validate_config(cfg)
    classes = len(build_dataset(config, "val", train=False).cat_ids)
    first = build_detector(config.model, classes, seed=config.seed).state_dict()
    moved = max((a["model"][k].float() - v.float()).abs().max().item() for k, v in first.items())
    assert moved > 1e-3
    summary_one = json.loads((runs / "one" / "metrics.json").read_text())
    summary_two = json.loads((runs / "two" / "metrics.json").read_text())
    assert summary_two["iterations"] == summary_one["iterations"]
    assert set(summary_two["metrics"]) == set(summary_one["metrics"]) >= {"AP", "AP50"}

    # A single-process run interrupted after epoch 1 resumes under torchrun with 2 processes and
    # ends where the uninterrupted run did (rank 1 reads the run folder rank 0 writes).
    cut = runs / "cut"
    (cut / "checkpoints").mkdir(parents=True)
    (cut / "config.yaml").write_bytes((runs / "one" / "config.yaml").read_bytes())
    (cut / "checkpoints" / "last.pth").write_bytes(
        (runs / "one" / "checkpoints" / "epoch_1.pth").read_bytes()
    )
    resumed = torchrun("-m", "nassearch", "train", str(path), "--name", "cut", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("resumed from") == 1 and "at iteration 2" in resumed.stdout
    c = torch.load(cut / "checkpoints" / "last.pth", weights_only=True)
    assert c["iteration"] == 4 and c["loss_history"][:2] == a["loss_history"][:2]
    torch.testing.assert_close(
        torch.tensor(c["loss_history"]), torch.tensor(a["loss_history"]), rtol=1e-5, atol=1e-6
    )
    for key, value in a["model"].items():
        torch.testing.assert_close(c["model"][key], value, rtol=1e-4, atol=1e-6, msg=key)


@pytest.mark.slow
def test_ranks_hold_identical_parameters_after_every_step(tmp_path):
    # A NAS-FPN neck with BatchNorm in training mode: per-rank statistics differ, parameters must not.
    cfg = ddp_config(tmp_path, neck={"type": "nasfpn", "out_channels": 16}, genotype="PAPER")
    cfg["model"]["backbone"]["norm_eval"] = False
    cfg["train"].update(epochs=3, batch_size=8)  # one step per epoch: a check after every step
    path = write(tmp_path, cfg)
    out = tmp_path / "out"
    done = torchrun(str(Path(__file__).with_name("ddp_worker.py")), str(path), str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    for record in records:
        assert record["world_size"] == 2 and record["iterations"] == 3
        assert record["gaps"] == [0.0, 0.0, 0.0]
    assert records[0]["param_norm"] == records[1]["param_norm"]
    # Only rank 0 wrote checkpoints, though rank 1's trainer had a work_dir too.
    assert not (out / "run1").exists()
    assert files_under(out / "run0") == [
        "checkpoints/epoch_1.pth",
        "checkpoints/epoch_2.pth",
        "checkpoints/epoch_3.pth",
        "checkpoints/last.pth",
    ]
