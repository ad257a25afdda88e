"""Regularised (aging) evolution (Real, Aggarwal, Huang, Le, AAAI 2019, Algorithm 1).

The first `population_size` proposals are random (masked-uniform per step). Afterwards each
proposal is a tournament: `sample_size` distinct members drawn uniformly from the current
population (the paper's pseudo-code draws with replacement; distinct members are the common
implementation choice and keep the selection pressure exactly `sample_size`), the one with the highest reward is the parent (ties: the first drawn), and the child
is the parent with ONE decision mutated to a different legal value. Every result told joins the
population as its newest member; when the population exceeds `population_size` the OLDEST
member is removed (aging), whatever its reward.

Masks may depend on the whole prefix, so a mutation at decision i can make later actions
illegal. The child's suffix is therefore re-validated left to right: every later action that is
still legal under the new prefix is kept, any other one is redrawn uniformly among the legal
choices. When nothing becomes illegal the child differs from the parent in exactly one decision.
The mutated decision is drawn uniformly among the decisions that have at least two legal choices
under the parent's prefix.

Asynchronous-friendly: `ask` never waits; it uses the population as it is (results still pending
are not members yet), and proposes random architectures while fewer than `population_size`
results have been told.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from nassearch.controllers.base import Candidate, Controller
from nassearch.errors import NasSearchError
from nassearch.search_spaces.base import SearchSpace


class EvolutionController(Controller):
    """Aging evolution over action sequences; `step` = number of results told."""

    name = "evolution"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        *,
        population_size: int = 20,
        sample_size: int = 5,
        **base: Any,
    ) -> None:
        super().__init__(space, seed, **base)
        if isinstance(population_size, bool) or not isinstance(population_size, int):
            raise NasSearchError(f"population_size: must be an integer, got {population_size!r}")
        if population_size < 1:
            raise NasSearchError(f"population_size: must be >= 1, got {population_size}")
        if isinstance(sample_size, bool) or not isinstance(sample_size, int):
            raise NasSearchError(f"sample_size: must be an integer, got {sample_size!r}")
        if not 1 <= sample_size <= population_size:
            raise NasSearchError(
                f"sample_size: must be in 1..population_size ({population_size}), got {sample_size}"
            )
        self.population_size = population_size
        self.sample_size = sample_size
        # Oldest first; each member is {"id", "key", "actions", "reward"} (plain data).
        self.population: deque[dict[str, Any]] = deque()

    # ------------------------------------------------------------------------------ proposing

    def _propose(self, n: int) -> list[tuple[list[int], dict[str, Any]]]:
        out = []
        for _ in range(n):
            if len(self.population) < self.population_size:
                out.append((self.space.sample_actions(self.rng), {"origin": "random"}))
                continue
            _, winner = self.tournament()
            parent = self.population[winner]
            child, position = self.mutate(parent["actions"])
            data = {"origin": "mutation", "parent": parent["id"], "mutated": position}
            out.append((child, data))
        return out

    def tournament(self) -> tuple[list[int], int]:
        """Population indices of the tournament sample and the index of its best member."""
        sample = [
            int(i) for i in self.rng.choice(len(self.population), self.sample_size, replace=False)
        ]
        rewards = [self.population[i]["reward"] for i in sample]
        return sample, sample[int(np.argmax(rewards))]

    def mutate(self, actions: list[int]) -> tuple[list[int], int]:
        """The parent with one decision changed to another legal value, suffix re-validated.

        Returns the child and the mutated position (-1 when no decision has a second legal
        choice, in which case the child is a copy of the parent).
        """
        actions = [int(a) for a in actions]
        masks = [self.space.mask(actions[:i]) for i in range(len(actions))]
        mutable = [i for i, m in enumerate(masks) if sum(m) >= 2]
        if not mutable:
            return actions, -1
        i = int(mutable[self.rng.integers(len(mutable))])
        others = [c for c in np.flatnonzero(masks[i]) if c != actions[i]]
        child = actions[:i] + [int(others[self.rng.integers(len(others))])]
        for old in actions[i + 1 :]:
            mask = self.space.mask(child)
            if mask[old]:
                child.append(old)
            else:
                child.append(int(self.rng.choice(np.flatnonzero(mask))))
        return child, i

    # ------------------------------------------------------------------------------ learning

    def _observe(self, candidate: Candidate, reward: float, shaped: float) -> None:
        # Tournaments compare clean rewards: shaping is monotone at any one time, and rank
        # quantiles told at different times are not comparable with each other.
        self.population.append(
            {
                "id": candidate.id,
                "key": candidate.key,
                "actions": list(candidate.actions),
                "reward": reward,
            }
        )
        while len(self.population) > self.population_size:
            self.population.popleft()
        self.step += 1
        self._record_block()

    def stats(self) -> dict[str, float]:
        out = super().stats()
        rewards = [m["reward"] for m in self.population]
        out["population"] = float(len(rewards))
        out["population_reward_mean"] = float(np.mean(rewards)) if rewards else float("nan")
        out["population_reward_max"] = float(max(rewards)) if rewards else float("nan")
        return out

    # --------------------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["population_size"] = self.population_size
        state["sample_size"] = self.sample_size
        state["population"] = [{**m, "actions": list(m["actions"])} for m in self.population]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.population_size = int(state["population_size"])
        self.sample_size = int(state["sample_size"])
        self.population = deque(
            {**m, "actions": [int(a) for a in m["actions"]]} for m in state["population"]
        )
