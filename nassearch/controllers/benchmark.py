"""Benchmarking search strategies without training: seeded surrogate reward families over any
space, and the search loop that scores a strategy on one.

Families (each has its optimum at exactly 1.0; random architectures score about 0.43-0.5):

- `additive`: one term per decision, values independent across cells and kinds;
- `pairwise`: the additive terms plus one random pairwise interaction per decision (epistasis);
- `kinds`: per-kind choice preferences shared across cells, plus interactions (the original
  `SurrogateReward` defaults);
- `nk2`, `nk3`, `nk4`: NK landscapes with K = 2, 3, 4 neighbours per term, rugged.

`run_search` imitates `parallel` workers: it asks for that many candidates, then tells all their
(possibly noisy) rewards, and records the best noise-free reward after every sample. Every
candidate told counts as a sample, also deduplicated ones (their cached reward is the first
observation, as in a real search).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from nassearch.controllers.base import Controller
from nassearch.controllers.nk_landscape import NKLandscape
from nassearch.controllers.surrogate import SurrogateReward
from nassearch.errors import NasSearchError
from nassearch.search_spaces.base import SearchSpace


class Surrogate(Protocol):
    """A seeded reward over action sequences with a known optimum."""

    def clean(self, actions: Sequence[int]) -> float: ...

    def reward(self, actions: Sequence[int], rng: np.random.Generator | None = None) -> float: ...

    def optimum(self) -> tuple[float, list[int]]: ...


@dataclass(frozen=True)
class Family:
    """A named way to build a surrogate from (space, seed, noise std)."""

    name: str
    description: str
    make: Callable[[SearchSpace, int, float], Surrogate]


def _surrogate(**options: object) -> Callable[[SearchSpace, int, float], Surrogate]:
    def make(space: SearchSpace, seed: int, noise_std: float) -> Surrogate:
        return SurrogateReward(space, seed, noise_std=noise_std, validate=False, **options)

    return make


def _nk(k: int) -> Callable[[SearchSpace, int, float], Surrogate]:
    def make(space: SearchSpace, seed: int, noise_std: float) -> Surrogate:
        return NKLandscape(space, seed, k=k, noise_std=noise_std, validate=False)

    return make


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "additive",
            "one term per decision, nothing shared across cells",
            _surrogate(interaction_pairs=0, kind_concentration=None, shared=0.0),
        ),
        Family(
            "pairwise",
            "additive terms plus one pairwise interaction per decision",
            _surrogate(kind_concentration=None, shared=0.0, interaction_scale=1.0),
        ),
        Family(
            "kinds", "per-kind preferences shared across cells, with interactions", _surrogate()
        ),
        Family("nk2", "NK landscape, K = 2", _nk(2)),
        Family("nk3", "NK landscape, K = 3", _nk(3)),
        Family("nk4", "NK landscape, K = 4", _nk(4)),
    )
}


def make_surrogate(family: str, space: SearchSpace, seed: int, noise_std: float = 0.0) -> Surrogate:
    """The surrogate of `family` over `space` for landscape `seed`."""
    if family not in FAMILIES:
        raise NasSearchError(
            f"unknown surrogate family {family!r} (expected one of {', '.join(FAMILIES)})"
        )
    return FAMILIES[family].make(space, seed, noise_std)


@dataclass(frozen=True)
class SearchCurve:
    """One benchmark search: `best[i]` is the best noise-free reward after i + 1 samples."""

    best: np.ndarray
    seconds: float

    def at(self, samples: int) -> float:
        """Best noise-free reward after `samples` samples."""
        return float(self.best[min(samples, len(self.best)) - 1])

    def samples_to(self, threshold: float) -> float:
        """Samples needed to reach `threshold` (inf when the budget did not suffice)."""
        hit = np.flatnonzero(self.best >= threshold - 1e-12)
        return float(hit[0] + 1) if len(hit) else float("inf")


def run_search(
    controller: Controller,
    surrogate: Surrogate,
    samples: int,
    *,
    parallel: int = 8,
    noise_rng: np.random.Generator | None = None,
) -> SearchCurve:
    """Search `surrogate` for `samples` results, `parallel` candidates asked at a time."""
    best, curve = -np.inf, []
    start = time.perf_counter()
    while len(curve) < samples:
        candidates = controller.ask(min(parallel, samples - len(curve)))
        if not candidates:
            raise NasSearchError(
                f"{controller.name} handed out no candidate while no result was pending"
            )
        for candidate in candidates:
            told = candidate.cached_reward
            if told is None:
                told = surrogate.reward(candidate.actions, noise_rng)
            controller.tell(candidate, told)
            best = max(best, surrogate.clean(candidate.actions))
            curve.append(best)
    return SearchCurve(np.asarray(curve), time.perf_counter() - start)
