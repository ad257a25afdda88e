"""`runs/<name>/controller.jsonl`: one line per controller update, and whether the search learned.

Each line is a `ControllerUpdate` (batch mean and max reward, baseline, entropy, probability of
the best architecture so far) plus the search stage. At the end of `nassearch run` the trend of
the batch mean reward over the updates says whether the controller's proposals got better:
Spearman's rho between update index and batch mean, with its two-sided p-value. Random search
should show none; a learning controller a positive, significant rho.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nassearch.controllers.base import ControllerUpdate
from nassearch.jsonl import JsonlWriter, read_jsonl

CONTROLLER_LOG = "controller.jsonl"


class ControllerLog:
    """Appends a search stage's controller updates to controller.jsonl (picklable: Tune saves it
    with the searcher). After a resume, updates already in the file are not written again."""

    def __init__(self, path: str | Path, stage: str) -> None:
        self.path = Path(path)
        self.stage = stage
        self._written: int | None = None  # highest update index of this stage in the file

    def __call__(self, update: ControllerUpdate) -> None:
        if self._written is None:
            self._written = max(
                (
                    r["update"]
                    for r in read_controller_log(self.path)
                    if r.get("stage") == self.stage
                ),
                default=0,
            )
        if update.update <= self._written:
            return
        with JsonlWriter(self.path) as writer:
            writer.append({"stage": self.stage, **asdict(update)})
        self._written = update.update

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_written": None}  # re-read the file after a restore


def read_controller_log(path: str | Path) -> list[dict[str, Any]]:
    """Every update line of a controller.jsonl (none if the file does not exist)."""
    return read_jsonl(path)


@dataclass(frozen=True)
class RewardTrend:
    """Spearman's rho between update index and batch mean reward, over `updates` updates."""

    updates: int
    rho: float
    p_value: float

    @property
    def rose(self) -> bool:
        """A positive trend at the 5% level."""
        return self.rho > 0 and self.p_value < 0.05

    def describe(self, strategy: str) -> str:
        """One line: did `strategy`'s batch mean reward rise (rho, p), or why no trend is given."""
        updates = f"{self.updates} update{'' if self.updates == 1 else 's'}"
        if not math.isfinite(self.rho):
            return f"{strategy}: {updates}, too few (or constant rewards) for a trend"
        verdict = "rose" if self.rose else "did not rise significantly"
        return (
            f"{strategy}: batch mean reward {verdict} over {updates} "
            f"(Spearman rho {self.rho:+.2f}, p {self.p_value:.2g})"
        )


def reward_trend(batch_means: list[float]) -> RewardTrend:
    """The trend of a sequence of batch mean rewards (rho NaN with fewer than 3 or all equal)."""
    n = len(batch_means)
    if n < 3 or len(set(batch_means)) == 1:
        return RewardTrend(n, math.nan, math.nan)
    from scipy.stats import spearmanr

    result = spearmanr(range(n), batch_means)
    return RewardTrend(n, float(result.statistic), float(result.pvalue))
