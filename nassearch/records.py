"""`runs/<name>/architectures.jsonl`: the durable record of a search, one JSON object per line.

The search driver is the only writer; every record is flushed and fsynced before the next one, so
a killed driver loses at most the line it was writing. Readers skip a truncated or corrupt line
with a warning instead of failing: export and reports must work on the record of a crashed search.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nassearch.errors import NasSearchError, NasSearchWarning

RECORD_FILE = "architectures.jsonl"
# Keys renamed since records were first written: old -> new (read back under the new name).
RENAMED_KEYS = {"flops": "macs"}
# A proxy evaluation's result fields as a record holds them (a resumed trial re-reports them).
RESULT_FIELDS = (
    "reward",
    "status",
    "message",
    "ap",
    "ap50",
    "val_loss",
    "params",
    "macs",
    "latency_ms",
    "train_seconds",
    "scores",
    "reward_std",
)


def json_safe(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null so every line parses with any JSON reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class RecordWriter:
    """Appends records to an architectures.jsonl file (creating it and its folder if needed)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for appends

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(json_safe(record), sort_keys=True, allow_nan=False)
        self._file.write(line + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _repair_tail(self) -> None:
        # A driver killed mid-write leaves a last line without "\n"; new records must not be glued
        # onto it, so end the file with a newline (the broken line is then skipped by readers).
        if self.path.is_file() and self.path.stat().st_size > 0:
            with open(self.path, "rb+") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")


def iter_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every well-formed record in file order; bad lines are skipped with a warning naming them."""
    path = Path(path)
    if not path.is_file():
        raise NasSearchError(f"{path}: no architecture record (was a search run in this folder?)")
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                warnings.warn(
                    f"{path}:{number}: skipping a truncated or corrupt record",
                    NasSearchWarning,
                    stacklevel=2,
                )
                continue
            if not isinstance(record, dict):
                warnings.warn(
                    f"{path}:{number}: skipping a record that is not an object",
                    NasSearchWarning,
                    stacklevel=2,
                )
                continue
            for old, new in RENAMED_KEYS.items():
                if old in record and new not in record:
                    record[new] = record.pop(old)
            yield record


def read_records(path: str | Path) -> list[dict[str, Any]]:
    return list(iter_records(path))
