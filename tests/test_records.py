"""architectures.jsonl: appended, fsynced records; readers survive a crash mid-write."""

from __future__ import annotations

import json

import pytest

from nassearch.errors import NasSearchError
from nassearch.records import RecordWriter, read_records


def test_records_round_trip_with_non_finite_values_as_null(tmp_path):
    path = tmp_path / "run" / "architectures.jsonl"
    with RecordWriter(path) as writer:
        writer.append({"key": "a", "reward": 0.5, "metrics": {"AP": float("nan")}})
        writer.append({"key": "b", "reward": float("-inf"), "status": "nan"})
    lines = path.read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["a", "b"]  # any JSON reader works
    records = read_records(path)
    assert records[0]["metrics"]["AP"] is None and records[1]["reward"] is None


def test_truncated_last_line_is_skipped_and_repaired_on_append(tmp_path):
    path = tmp_path / "architectures.jsonl"
    with RecordWriter(path) as writer:
        writer.append({"key": "a", "reward": 1.0})
    with open(path, "a") as f:
        f.write('{"key": "b", "rew')  # the driver was killed mid-write
    with pytest.warns(UserWarning, match=r"architectures.jsonl:2: skipping a truncated"):
        assert [r["key"] for r in read_records(path)] == ["a"]
    with RecordWriter(path) as writer:  # a resumed driver appends after the broken line
        writer.append({"key": "c", "reward": 2.0})
    with pytest.warns(UserWarning):
        assert [r["key"] for r in read_records(path)] == ["a", "c"]


def test_missing_record_is_a_one_line_error(tmp_path):
    with pytest.raises(NasSearchError, match="no architecture record"):
        read_records(tmp_path / "architectures.jsonl")


def test_records_written_before_the_flops_rename_read_back_as_macs(tmp_path):
    path = tmp_path / "architectures.jsonl"
    old = {"key": "a", "reward": 0.1, "flops": 123}
    new = {"key": "b", "reward": 0.2, "macs": 456}
    path.write_text(json.dumps(old) + "\n" + json.dumps(new) + "\n")
    assert read_records(path) == [
        {"key": "a", "reward": 0.1, "macs": 123},
        {"key": "b", "reward": 0.2, "macs": 456},
    ]
