"""Experiment folders written by hand (records as `nassearch run` writes them), for tests that
read experiments without running a search: export, report, fidelity's input checks."""

from __future__ import annotations

from pathlib import Path

from nassearch.config import save_config, validate_config
from nassearch.records import ArchitectureRecord, RecordWriter


def record(genotype, reward, trial_id, *, params=1000, status="ok", baseline=False, **extra):
    """One architectures.jsonl record with the fields `search.record_of` writes."""
    return {
        "reward": reward,
        "status": status,
        "message": "" if status == "ok" else "boom",
        "ap": reward,
        "ap50": None if reward is None else reward + 0.2,
        "val_loss": 1.5,
        "params": params,
        "macs": 2_500_000_000,
        "latency_ms": 12.5,
        "train_seconds": 30.0,
        "genotype": genotype.to_dict(),
        "key": genotype.key(),
        "controller_step": None if baseline else 1,
        "candidate_id": None if baseline else int(trial_id.removeprefix("t") or 0),
        "metrics": {},
        "time": "2026-01-01T00:00:00+00:00",
        "trial_id": trial_id,
        "baseline": baseline,
        **extra,
    }


def make_experiment(tmp_path: Path, records: list[dict], cfg: dict) -> Path:
    """`tmp_path/runs/<name>` with the saved config `cfg` and `records` as its architectures.jsonl."""
    exp = tmp_path / "runs" / cfg["name"]
    save_config(validate_config(cfg), exp / "config.yaml")
    with RecordWriter(exp / "architectures.jsonl") as writer:
        for r in parsed(records):
            writer.append(r)
    return exp


def parsed(records: list[dict]) -> list[ArchitectureRecord]:
    """Hand-written record mappings as the typed records `read_records` returns."""
    return [ArchitectureRecord.from_dict(r) for r in records]
