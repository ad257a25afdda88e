"""Append-only JSON-lines files: one object per line, flushed and fsynced before the next.

Every log a run keeps (`architectures.jsonl`, `controller.jsonl`, `reevaluation.jsonl`,
`warnings.jsonl`, re-score files) is written and read through here. A writer killed mid-line
loses only that line; readers skip a truncated or corrupt line with a warning naming it instead
of failing, so export and reports work on the files of a crashed run.
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


def json_safe(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null so every line parses with any JSON reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class JsonlWriter:
    """Appends objects to a JSON-lines file (creating it and its folder if needed)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for appends

    def append(self, line: dict[str, Any]) -> None:
        text = json.dumps(json_safe(line), sort_keys=True, allow_nan=False)
        self._file.write(text + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _repair_tail(self) -> None:
        # A writer killed mid-line leaves a last line without "\n"; new lines must not be glued
        # onto it, so end the file with a newline (the broken line is then skipped by readers).
        if self.path.is_file() and self.path.stat().st_size > 0:
            with open(self.path, "rb+") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")


def iter_jsonl(path: str | Path, *, what: str = "record") -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of every well-formed line in file order; bad lines are warned about.

    A missing file is an error naming it (`what` says what the file should have held).
    """
    path = Path(path)
    if not path.is_file():
        raise NasSearchError(f"{path}: no {what} file (was a search run in this folder?)")
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                warn_line(path, number, "a truncated or corrupt record")
                continue
            if not isinstance(line, dict):
                warn_line(path, number, "a record that is not an object")
                continue
            yield number, line


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every well-formed line of a JSON-lines file; none when the file does not exist."""
    return [line for _, line in iter_jsonl(path)] if Path(path).is_file() else []


def warn_line(path: Path, number: int, what: str) -> None:
    warnings.warn(f"{path}:{number}: skipping {what}", NasSearchWarning, stacklevel=3)
