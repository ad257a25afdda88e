"""What the searcher hands a trial: the typed form of a Tune trial's config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from nassearch.errors import NasSearchError


@dataclass(frozen=True)
class TrialSpec:
    """One candidate to proxy-train. Tune keeps a trial's config as plain data, so the genotype
    travels as its mapping and is parsed once, in the trial (`genotype_from_dict`)."""

    genotype: dict[str, Any]
    genotype_key: str
    controller_step: int | None = None  # None for baselines
    candidate_id: int | None = None  # the controller's id, to tell the reward back
    # Wall-clock time (time.time()) the searcher handed it out: the trial measures from it how
    # long Ray took to schedule and start it (`timings["start"]`).
    suggested_at: float | None = None

    def to_config(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TrialSpec:
        if not isinstance(config.get("genotype"), dict):
            raise NasSearchError("trial config: no genotype mapping (not a nassearch trial?)")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names})
