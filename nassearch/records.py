"""`runs/<name>/architectures.jsonl`: the durable record of a search, one `ArchitectureRecord` a line.

The search driver is the only writer; every record is flushed and fsynced before the next one, so
a killed driver loses at most the line it was writing. Readers skip a truncated or corrupt line,
or one that does not fit the schema, with a warning instead of failing: export and reports must
work on the record of a crashed search. Files written by older versions still read: renamed keys
are read under their new name and keys this version does not know are kept (`extra`).
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from nassearch.errors import NasSearchError
from nassearch.jsonl import JsonlWriter, iter_jsonl, json_safe, warn_line
from nassearch.proxy_result import ProxyResult
from nassearch.status import Status
from nassearch.trial_spec import TrialSpec

RECORD_FILE = "architectures.jsonl"
# Keys renamed since records were first written: old -> new (read back under the new name).
RENAMED_KEYS = {"flops": "macs"}


@dataclass(frozen=True)
class ArchitectureRecord:
    """One evaluated architecture: what it is, how its proxy evaluation went, where it came from.

    Missing numbers are None (null in the file). `scores` are every proxy score (one per
    `proxy.repeats` seed), `reward` their mean; `metrics` the reward split's COCO metrics.
    """

    status: Status
    reward: float | None = None
    trial_id: str = ""
    genotype: dict[str, Any] | None = None  # the genotype's mapping (`genotype_from_dict`)
    key: str | None = None
    baseline: bool = False
    message: str = ""
    ap: float | None = None
    ap50: float | None = None
    val_loss: float | None = None
    params: int | None = None
    macs: int | None = None
    latency_ms: float | None = None
    train_seconds: float | None = None
    scores: tuple[float, ...] = ()
    reward_std: float | None = None
    metrics: Mapping[str, float | None] = field(default_factory=dict)
    timings: Mapping[str, float | None] = field(default_factory=dict)  # seconds by phase
    stage: str | None = None  # the progressive search's stage (fpn, head); None otherwise
    rung: int | None = None  # status stopped: the epochs it trained before early stopping cut it
    controller_step: int | None = None  # None for baselines
    candidate_id: int | None = None
    time: str | None = None  # when the driver wrote it, ISO 8601 UTC
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)  # unknown keys, kept

    @classmethod
    def from_result(
        cls,
        result: ProxyResult,
        spec: TrialSpec,
        *,
        trial_id: str,
        baseline: bool = False,
        stage: str | None = None,
        rung: int | None = None,
    ) -> ArchitectureRecord:
        """The record of a finished trial (or baseline), stamped with the current time."""
        values = result.to_dict()
        reported_key = values.pop("genotype_key")
        key = spec.genotype_key or reported_key or None
        return cls.from_dict(
            {
                **values,
                "genotype": spec.genotype,
                "key": key,
                "controller_step": spec.controller_step,
                "candidate_id": spec.candidate_id,
                "trial_id": trial_id,
                "baseline": baseline,
                "stage": stage,
                "rung": rung,
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            }
        )

    def to_result(self) -> ProxyResult:
        """The proxy result this record holds (a resumed trial re-reports it)."""
        values = {f.name: getattr(self, f.name) for f in fields(ProxyResult) if f.name in _SHARED}
        return ProxyResult.from_report(
            values | {"genotype_key": self.key or "", "scores": list(self.scores)}
        )

    def to_dict(self) -> dict[str, Any]:
        """The line as written: every field but `stage`/`rung`/`timings` when unset; unknown keys
        come back."""
        line: dict[str, Any] = dict(self.extra)
        for f in fields(self):
            if f.name == "extra" or (f.name in _OMITTED_WHEN_UNSET and not _is_set(self, f.name)):
                continue
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            line[f.name] = value
        return json_safe(line)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArchitectureRecord:
        """Parse one line; raises `ValueError` naming the field that does not fit."""
        data = dict(data)
        for old, new in RENAMED_KEYS.items():
            if old in data and new not in data:
                data[new] = data.pop(old)
        known = {f.name for f in fields(cls)} - {"extra"}
        values: dict[str, Any] = {"extra": {k: v for k, v in data.items() if k not in known}}
        for name in known & data.keys():
            parse = _PARSERS.get(name, _identity)
            try:
                values[name] = parse(data[name])
            except (TypeError, ValueError):
                raise ValueError(f"{name}: {data[name]!r} does not fit") from None
        if "status" not in values:
            raise ValueError("status: missing")
        # `"status": null`: earlier versions wrote it for a trial that ended without a final
        # report (cut by the time budget); it was never a success.
        return cls(**values)

    # --- what ranking, export and the console ask of a record ---

    @property
    def successful(self) -> bool:
        """Trained and scored: status ok and a finite reward (failures carry a stand-in reward)."""
        return self.status == Status.OK and self.reward is not None

    @property
    def identity(self) -> str:
        """The genotype key; a hand-written record without one is known by its genotype."""
        if self.key:
            return self.key
        return json.dumps(self.genotype, sort_keys=True, default=str)

    @property
    def all_scores(self) -> list[float]:
        """Every proxy score of a successful record: `scores` (proxy.repeats), else its reward."""
        if not self.successful:
            return []
        return list(self.scores) if self.scores else [self.reward]

    @property
    def name(self) -> str:
        """A baseline's name (FPN, PAPER, ...) or the trial id."""
        return self.trial_id.removeprefix("baseline-") if self.baseline else self.trial_id


# The fields a record and a proxy result share (the record keeps the genotype key as `key`).
_OMITTED_WHEN_UNSET = ("stage", "rung", "timings")


def _is_set(record: ArchitectureRecord, name: str) -> bool:
    value = getattr(record, name)
    return bool(value) if name == "timings" else value is not None


_SHARED = {f.name for f in fields(ArchitectureRecord)} & {f.name for f in fields(ProxyResult)}


def _identity(value: Any) -> Any:
    return value


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(value)
    return float(value) if math.isfinite(value) else None


def _count(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _optional_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(value)
    return value


def _optional_str(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def _string(value: Any) -> str:
    return "" if value is None else str(value)


def _scores(value: Any) -> tuple[float, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise TypeError(value)
    return tuple(s for s in (_number(v) for v in value) if s is not None)


def _metrics(value: Any) -> dict[str, float | None]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(value)
    return {str(k): _number(v) for k, v in value.items()}


def _genotype(value: Any) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, Mapping):
        raise TypeError(value)
    return None if value is None else dict(value)


def _flag(value: Any) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise TypeError(value)
    return value


_PARSERS = {
    "status": lambda value: Status.ERROR if value is None else Status(value),
    "reward": _number,
    "trial_id": _string,
    "genotype": _genotype,
    "key": _optional_str,
    "baseline": _flag,
    "message": _string,
    "ap": _number,
    "ap50": _number,
    "val_loss": _number,
    "params": _count,
    "macs": _count,
    "latency_ms": _number,
    "train_seconds": _number,
    "scores": _scores,
    "reward_std": _number,
    "metrics": _metrics,
    "timings": _metrics,
    "stage": _optional_str,
    "rung": _optional_int,
    "controller_step": _optional_int,
    "candidate_id": _optional_int,
    "time": _optional_str,
}


class RecordWriter:
    """Appends `ArchitectureRecord`s to an architectures.jsonl file (fsynced, see `jsonl`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._writer = JsonlWriter(self.path)

    def append(self, record: ArchitectureRecord) -> None:
        self._writer.append(record.to_dict())

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_records(path: str | Path) -> Iterator[ArchitectureRecord]:
    """Every well-formed record in file order; bad lines are skipped with a warning naming them."""
    path = Path(path)
    if not path.is_file():
        raise NasSearchError(f"{path}: no architecture record (was a search run in this folder?)")
    for number, line in iter_jsonl(path):
        try:
            yield ArchitectureRecord.from_dict(line)
        except ValueError as exc:
            warn_line(path, number, f"a record that does not fit the schema ({exc})")


def read_records(path: str | Path) -> list[ArchitectureRecord]:
    return list(iter_records(path))
