"""architectures.jsonl: typed, appended, fsynced records; readers survive a crash mid-write and
read files written by older versions."""

from __future__ import annotations

import json
import math

import pytest

from nassearch.errors import NasSearchError
from nassearch.jsonl import JsonlWriter, read_jsonl
from nassearch.proxy_result import ProxyResult
from nassearch.records import ArchitectureRecord, RecordWriter, read_records
from nassearch.status import Status
from nassearch.trial_spec import TrialSpec


def rec(key: str, reward: float | None, **fields) -> ArchitectureRecord:
    return ArchitectureRecord(
        status=Status(fields.pop("status", "ok")), key=key, reward=reward, **fields
    )


def test_records_round_trip_with_non_finite_values_as_null(tmp_path):
    path = tmp_path / "run" / "architectures.jsonl"
    with RecordWriter(path) as writer:
        writer.append(rec("a", 0.5, metrics={"AP": float("nan"), "AP50": 0.25}))
        writer.append(rec("b", float("-inf"), status="nan"))
    lines = path.read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["a", "b"]  # any JSON reader works
    assert json.loads(lines[0])["metrics"] == {"AP": None, "AP50": 0.25}
    records = read_records(path)
    assert records[0].metrics == {"AP": None, "AP50": 0.25} and records[1].reward is None
    assert records[1].status is Status.NAN and not records[1].successful


def test_truncated_last_line_is_skipped_and_repaired_on_append(tmp_path):
    path = tmp_path / "architectures.jsonl"
    with RecordWriter(path) as writer:
        writer.append(rec("a", 1.0))
    with open(path, "a") as f:
        f.write('{"key": "b", "rew')  # the driver was killed mid-write
    with pytest.warns(UserWarning, match=r"architectures.jsonl:2: skipping a truncated"):
        assert [r.key for r in read_records(path)] == ["a"]
    with RecordWriter(path) as writer:  # a resumed driver appends after the broken line
        writer.append(rec("c", 2.0))
    with pytest.warns(UserWarning):
        assert [r.key for r in read_records(path)] == ["a", "c"]


def test_missing_record_is_a_one_line_error(tmp_path):
    with pytest.raises(NasSearchError, match="no architecture record"):
        read_records(tmp_path / "architectures.jsonl")


def test_a_line_that_does_not_fit_the_schema_is_skipped_naming_the_field(tmp_path):
    path = tmp_path / "architectures.jsonl"
    with JsonlWriter(path) as writer:
        writer.append({"key": "a", "reward": 0.1, "status": "ok"})
        writer.append({"key": "b", "reward": "high", "status": "ok"})
        writer.append({"key": "c", "reward": 0.3, "status": "exploded"})
        writer.append({"key": "d", "reward": 0.4})
    with pytest.warns(UserWarning) as caught:
        assert [r.key for r in read_records(path)] == ["a"]
    messages = [str(w.message) for w in caught]
    assert (
        "architectures.jsonl:2: skipping a record that does not fit the schema (reward"
        in messages[0]
    )
    assert ":3: " in messages[1] and "(status" in messages[1]
    assert ":4: " in messages[2] and "status: missing" in messages[2]


def test_an_old_record_with_a_null_status_reads_as_a_failure(tmp_path):
    """Earlier versions wrote `"status": null` for a trial cut by the time budget."""
    path = tmp_path / "architectures.jsonl"
    path.write_text(
        json.dumps({"key": "a", "trial_id": "t1", "reward": None, "status": None}) + "\n"
    )
    [record] = read_records(path)
    assert record.status is Status.ERROR and not record.successful and record.trial_id == "t1"


def test_records_written_before_the_flops_rename_read_back_as_macs(tmp_path):
    path = tmp_path / "architectures.jsonl"
    old = {"key": "a", "reward": 0.1, "status": "ok", "flops": 123}
    new = {"key": "b", "reward": 0.2, "status": "ok", "macs": 456}
    path.write_text(json.dumps(old) + "\n" + json.dumps(new) + "\n")
    assert [(r.key, r.macs) for r in read_records(path)] == [("a", 123), ("b", 456)]


def test_an_old_record_reads_and_keeps_keys_this_version_does_not_know(tmp_path):
    """A line as the first releases wrote it (flops, no scores, an unknown key) reads, ranks as
    its reward, and is written back unchanged but for the rename."""
    old = {
        "ap": 0.031, "ap50": 0.09, "baseline": False, "candidate_id": 3, "controller_step": 1,
        "flops": 2_500_000_000, "genotype": {"space": "nasfpn", "cells": []}, "key": "k1",
        "latency_ms": 12.0, "message": "", "metrics": {"AP": 0.031}, "params": 1000,
        "reward": 0.031, "status": "ok", "time": "2026-01-01T00:00:00+00:00", "trial_id": "t3",
        "train_seconds": 30.0, "val_loss": None, "note": "hand-added",
    }  # fmt: skip
    record = ArchitectureRecord.from_dict(old)
    assert record.macs == 2_500_000_000 and record.all_scores == [0.031]
    assert record.extra == {"note": "hand-added"} and record.stage is None
    again = record.to_dict()
    assert again.pop("macs") == old["flops"] and again.pop("note") == "hand-added"
    assert again.pop("scores") == [] and again.pop("reward_std") is None
    assert again == {k: v for k, v in old.items() if k not in ("flops", "note")}


def test_from_result_and_back_is_lossless():
    result = ProxyResult(
        reward=0.5,
        message="trained 10 iterations",
        genotype_key="k",
        ap=0.4,
        ap50=0.6,
        params=123,
        macs=456,
        latency_ms=1.5,
        train_seconds=3.0,
        metrics={"AP": 0.4, "APs": math.nan},
        scores=[0.45, 0.55],
        reward_std=0.0707,
    )
    spec = TrialSpec(
        genotype={"space": "nasfpn"}, genotype_key="k", controller_step=2, candidate_id=7
    )
    record = ArchitectureRecord.from_result(result, spec, trial_id="t7", stage="fpn")
    assert (record.trial_id, record.stage, record.candidate_id, record.scores) == (
        "t7", "fpn", 7, (0.45, 0.55)
    )  # fmt: skip
    assert record.metrics == {"AP": 0.4, "APs": None} and record.extra == {}
    back = record.to_result()
    assert back.to_dict() == {
        **result.to_dict(),
        "metrics": {"AP": 0.4, "APs": back.metrics["APs"]},
    }
    assert math.isnan(back.metrics["APs"]) and math.isnan(back.val_loss)


def test_a_proxy_report_of_a_dead_trial_is_an_error_result():
    result = ProxyResult.from_report({"status": "error", "message": "the trial process failed"})
    assert result.status is Status.ERROR and math.isnan(result.reward)
    record = ArchitectureRecord.from_result(
        result, TrialSpec(genotype={}, genotype_key="k"), trial_id="t1"
    )
    assert record.reward is None and not record.successful and record.all_scores == []


def test_jsonl_lines_of_other_logs_read_as_plain_objects(tmp_path):
    path = tmp_path / "controller.jsonl"
    assert read_jsonl(path) == []
    with JsonlWriter(path) as writer:
        writer.append({"update": 1, "entropy": float("nan")})
    assert read_jsonl(path) == [{"update": 1, "entropy": None}]
