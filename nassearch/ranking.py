"""Ranking a search's architectures: by the mean of every score they have, re-evaluations first.

An architecture's scores are its record's (one, or `proxy.repeats` of them) plus those of
`reevaluation.jsonl`, which `search.reevaluate_top` writes when the search ends. Architectures
that were re-evaluated rank first, by their mean over all seeds; the rest follow by the mean of
their recorded scores. Comparing a mean of many seeds with a single lucky draw would hand the lucky draw the
win that re-evaluation exists to prevent. Ties go to fewer parameters, then to the earlier record.
The search's final table and `nassearch export` both rank through here.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nassearch.records import iter_records
from nassearch.status import Status

REEVALUATION_FILE = "reevaluation.jsonl"


def record_reward(record: dict[str, Any]) -> float | None:
    """The record's reward as a float, or None when it is missing or not finite."""
    value = record.get("reward")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def is_successful(record: dict[str, Any]) -> bool:
    """Trained and scored: status ok and a finite reward (failures carry a stand-in reward)."""
    return record.get("status") == Status.OK and record_reward(record) is not None


def identity(record: dict[str, Any]) -> str:
    """The record's genotype key; a hand-written record without one is known by its genotype."""
    key = record.get("key")
    if isinstance(key, str) and key:
        return key
    return json.dumps(record.get("genotype"), sort_keys=True, default=str)


def record_scores(record: dict[str, Any]) -> list[float]:
    """Every proxy score of a successful record: `scores` (proxy.repeats), else its reward."""
    scores = record.get("scores")
    if isinstance(scores, list) and scores:
        return [float(s) for s in scores if isinstance(s, (int, float)) and math.isfinite(s)]
    reward = record_reward(record)
    return [] if reward is None else [reward]


@dataclass(frozen=True)
class RankedArchitecture:
    """One architecture of a ranking: its best record and every score it has."""

    record: dict[str, Any] = field(repr=False)
    scores: tuple[float, ...]
    reevaluated: int  # how many of the scores come from reevaluation.jsonl

    @property
    def key(self) -> str:
        return identity(self.record)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores)

    @property
    def std(self) -> float:
        return statistics.stdev(self.scores) if len(self.scores) > 1 else 0.0

    def describe(self, spec: str = ".4f") -> str:
        """`-2.8703` for one score, `-2.9512 ± 0.0410 (n=4)` for several."""
        if len(self.scores) == 1:
            return format(self.mean, spec)
        return f"{self.mean:{spec}} ± {self.std:{spec}} (n={len(self.scores)})"


def read_reevaluations(path: str | Path) -> dict[str, list[float]]:
    """Successful re-evaluation scores per genotype key (none when the file does not exist)."""
    path = Path(path)
    found: dict[str, list[float]] = {}
    if not path.is_file():
        return found
    for line in iter_records(path):
        if line.get("status") == Status.OK and record_reward(line) is not None:
            found.setdefault(str(line.get("key")), []).append(float(line["reward"]))
    return found


def _params_or_inf(record: dict[str, Any]) -> float:
    params = record.get("params")
    return float(params) if isinstance(params, (int, float)) and params > 0 else math.inf


def rank_architectures(
    records: Iterable[dict[str, Any]],
    reevaluations: dict[str, list[float]] | None = None,
    *,
    include_baselines: bool = False,
) -> list[RankedArchitecture]:
    """Successful architectures best first, one per genotype key (see the module docstring)."""
    reevaluations = reevaluations or {}
    pool = [r for r in records if is_successful(r) and (include_baselines or not r.get("baseline"))]
    by_key: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for index, record in enumerate(pool):
        by_key.setdefault(identity(record), []).append((index, record))
    ranked = []
    for key, found in by_key.items():
        index, best = max(found, key=lambda item: (record_reward(item[1]), -item[0]))
        extra = reevaluations.get(key, [])
        scores = [s for _, r in found for s in record_scores(r)] + list(extra)
        ranked.append((index, RankedArchitecture(best, tuple(scores), len(extra))))
    ranked.sort(
        key=lambda item: (
            not item[1].reevaluated,
            -item[1].mean,
            _params_or_inf(item[1].record),
            item[0],
        )
    )
    return [architecture for _, architecture in ranked]
