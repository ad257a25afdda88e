"""Random search: the baseline every NAS strategy must beat (Li & Talwalkar, UAI 2019).

Each decision is drawn uniformly among the choices the space's mask allows after the earlier
ones (`SearchSpace.sample_actions`). This is exactly uniform over legal action sequences when
the number of legal choices at a step does not depend on earlier choices (NAS-FPN; NAS-FCOS part
"head"). Where it does (NAS-FCOS FPN inputs, masked once the leaf budget is used up), it is
uniform per step, not per sequence: sequences whose later steps have fewer legal choices are
slightly over-weighted. Exact sequence-uniform sampling would need completion counts under
arbitrary prefixes, which the space interface does not offer.
"""

from __future__ import annotations

from typing import Any

from nassearch.controllers.base import Candidate, Controller
from nassearch.search_spaces.base import SearchSpace


class RandomController(Controller):
    """Independent masked-uniform samples; never waits for results; `step` = results told."""

    name = "random"

    def __init__(self, space: SearchSpace, seed: int = 0, **base: Any) -> None:
        super().__init__(space, seed, **base)

    def _propose(self, n: int) -> list[tuple[list[int], dict[str, Any]]]:
        return [(self.space.sample_actions(self.rng), {}) for _ in range(n)]

    def _observe(self, candidate: Candidate, reward: float, shaped: float) -> None:
        self.step += 1
        self._record_block()
