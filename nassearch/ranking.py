"""Ranking a search's architectures: by the mean of every score they have, re-evaluations first.

An architecture's scores are its record's (one, or `proxy.repeats` of them) plus those of
`reevaluation.jsonl`, which `search.reevaluate_top` writes when the search ends. Architectures
that were re-evaluated rank first, by their mean over all seeds; the rest follow by the mean of
their recorded scores. Comparing a mean of many seeds with a single lucky draw would hand the lucky draw the
win that re-evaluation exists to prevent. Ties go to fewer parameters, then to the earlier record.
The search's final table, its progressive stage 2 and `nassearch export` all rank through
here (`rank_records`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nassearch.jsonl import read_jsonl
from nassearch.records import ArchitectureRecord
from nassearch.status import Status

REEVALUATION_FILE = "reevaluation.jsonl"


@dataclass(frozen=True)
class RankedArchitecture:
    """One architecture of a ranking: its best record and every score it has."""

    record: ArchitectureRecord = field(repr=False)
    scores: tuple[float, ...]
    reevaluated: int  # how many of the scores come from reevaluation.jsonl

    @property
    def key(self) -> str:
        return self.record.identity

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
    for line in read_jsonl(path):
        reward = line.get("reward")
        finite = isinstance(reward, (int, float)) and math.isfinite(reward)
        if line.get("status") == Status.OK and finite:
            found.setdefault(str(line.get("key")), []).append(float(reward))
    return found


def _params_or_inf(record: ArchitectureRecord) -> float:
    return float(record.params) if record.params else math.inf


def rank_records(
    records: Iterable[ArchitectureRecord],
    reevaluations: dict[str, list[float]] | None = None,
    *,
    include_baselines: bool = False,
) -> list[RankedArchitecture]:
    """Successful architectures best first, one per genotype key (see the module docstring)."""
    reevaluations = reevaluations or {}
    pool = [r for r in records if r.successful and (include_baselines or not r.baseline)]
    by_key: dict[str, list[tuple[int, ArchitectureRecord]]] = {}
    for index, record in enumerate(pool):
        by_key.setdefault(record.identity, []).append((index, record))
    ranked = []
    for key, found in by_key.items():
        index, best = max(found, key=lambda item: (item[1].reward, -item[0]))
        extra = reevaluations.get(key, [])
        scores = [s for _, r in found for s in r.all_scores] + list(extra)
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
