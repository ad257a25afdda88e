"""The ask/tell contract every search strategy follows (as in Optuna and Nevergrad).

`ask(n)` hands out candidates (a genotype, its action sequence and whatever the update needs);
`tell(candidate, reward)` reports a result; updates happen inside `tell` once a batch is complete.
Rewards that are missing, NaN or infinite become the configured failure reward. With
deduplication on, a candidate whose architecture (genotype key) was already evaluated comes back
with `cached_reward` set, so a driver can tell it at once instead of training it again.
`state_dict()` / `load_state_dict()` restore everything (weights, optimiser, baseline, RNG states,
pending candidates, evaluated-key table) so a restored controller asks exactly what the original
would have.

Every update of a learning strategy (a REINFORCE/PPO batch) appends a `ControllerUpdate` to
`updates`: the batch's rewards, the baseline, the policy's entropy and the probability it gives
the best architecture so far. Strategies without updates (random, evolution) append one per
`RECORD_BLOCK` results, so every search has the same trend statistics.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from nassearch.errors import NasSearchError
from nassearch.search_spaces.base import Genotype, SearchSpace

SHAPINGS = ("raw", "rank")
RECORD_BLOCK = 8  # results per ControllerUpdate for strategies that do not update in batches


@dataclass(frozen=True)
class ControllerUpdate:
    """One controller update (or block of results): a line of an experiment's controller.jsonl.

    Args:
        update: 1-based index of the update.
        told: results told so far, this batch included.
        batch_size: results in this batch.
        batch_reward_mean: mean clean reward of the batch (failures count as the failure reward).
        batch_reward_max: its best clean reward.
        best_reward: best clean reward told so far.
        baseline: the reward baseline after the update (policy-gradient strategies).
        entropy: mean policy entropy of the batch's sequences, in nats.
        best_probability: probability of the best architecture so far under the updated policy.
    """

    update: int
    told: int
    batch_size: int
    batch_reward_mean: float
    batch_reward_max: float
    best_reward: float
    baseline: float | None = None
    entropy: float | None = None
    best_probability: float | None = None


@dataclass
class Candidate:
    """One architecture handed out by `ask`.

    `step` is the controller's update count (policy version) when the candidate was drawn;
    `data` holds algorithm-specific plain data (e.g. the sampling log-probability for PPO).
    """

    id: int
    actions: list[int]
    genotype: Genotype
    key: str
    step: int
    cached_reward: float | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["genotype"] = self.genotype.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], space: SearchSpace) -> Candidate:
        fields = dict(data)
        fields["genotype"] = space.decode(fields["actions"])
        fields["actions"] = [int(a) for a in fields["actions"]]
        return cls(**fields)


class Controller(ABC):
    """Base of all strategies: candidate ids, failure rewards, shaping, deduplication, statistics."""

    name: str = "controller"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        *,
        failure_reward: float = 0.0,
        reward_shaping: str = "raw",
        dedup: bool = True,
    ) -> None:
        if reward_shaping not in SHAPINGS:
            raise NasSearchError(
                f"reward_shaping: {reward_shaping!r} is not one of {', '.join(SHAPINGS)}"
            )
        if not math.isfinite(failure_reward):
            raise NasSearchError(f"failure_reward: must be a finite number, got {failure_reward!r}")
        self.space = space
        self.seed = seed
        self.failure_reward = float(failure_reward)
        self.reward_shaping = reward_shaping
        self.dedup = dedup
        self.rng = np.random.default_rng(seed)
        self.next_id = 0
        self.step = 0
        self.pending: dict[int, Candidate] = {}
        self.evaluated: dict[str, float] = {}  # genotype key -> (clean, unshaped) reward
        self.rewards: list[float] = []  # clean rewards in the order they were told
        self.best: Candidate | None = None  # the candidate with the best clean reward so far
        self.updates: list[ControllerUpdate] = []

    # ------------------------------------------------------------------------------ ask/tell

    def ask(self, n: int = 1) -> list[Candidate]:
        """Up to `n` new candidates; fewer (possibly none) while a synchronous batch waits."""
        out = []
        for actions, data in self._propose(n):
            genotype = self.space.decode(actions)
            key = genotype.key()
            cand = Candidate(self.next_id, list(actions), genotype, key, self.step, data=data)
            if self.dedup and key in self.evaluated:
                cand.cached_reward = self.evaluated[key]
            self.next_id += 1
            self.pending[cand.id] = cand
            out.append(cand)
        return out

    def tell(self, candidate: Candidate | int, reward: float | None) -> None:
        """Report the reward of a pending candidate (None/NaN/inf -> the failure reward)."""
        cid = candidate if isinstance(candidate, int) else candidate.id
        cand = self.pending.pop(cid, None)
        if cand is None:
            raise NasSearchError(f"tell: candidate {cid} is not pending (unknown or already told)")
        clean = self.clean_reward(reward)
        self.evaluated.setdefault(cand.key, clean)
        self.rewards.append(clean)
        if self.best is None or clean > self.evaluated[self.best.key]:
            self.best = cand
        self._observe(cand, clean, self.shape(clean))

    def clean_reward(self, reward: float | None) -> float:
        if reward is None:
            return self.failure_reward
        try:
            value = float(reward)
        except (TypeError, ValueError):
            return self.failure_reward
        return value if math.isfinite(value) else self.failure_reward

    def shape(self, reward: float) -> float:
        """`raw`: the reward itself; `rank`: its mid-rank quantile among all rewards told (0..1).

        Rank shaping makes the update scale-free (ENAS/MnasNet-era controllers are sensitive to
        reward scale) and robust to outliers such as failure rewards.
        """
        if self.reward_shaping == "raw":
            return reward
        seen = np.asarray(self.rewards)  # includes this reward
        if len(seen) < 2:
            return 0.5
        below = float((seen < reward).sum())
        ties = float((seen == reward).sum()) - 1.0
        return (below + 0.5 * ties) / (len(seen) - 1)

    def record_update(self, batch: list[float], **policy: float | None) -> ControllerUpdate:
        """Append the ControllerUpdate of a batch of clean rewards (`policy`: baseline, entropy,
        best_probability)."""
        update = ControllerUpdate(
            update=len(self.updates) + 1,
            told=len(self.rewards),
            batch_size=len(batch),
            batch_reward_mean=float(np.mean(batch)),
            batch_reward_max=float(max(batch)),
            best_reward=float(max(self.rewards)),
            **policy,
        )
        self.updates.append(update)
        return update

    def _record_block(self) -> None:
        """For strategies without batches: one ControllerUpdate per RECORD_BLOCK results."""
        if len(self.rewards) % RECORD_BLOCK == 0:
            self.record_update(self.rewards[-RECORD_BLOCK:])

    # ------------------------------------------------------------------------- for subclasses

    @abstractmethod
    def _propose(self, n: int) -> list[tuple[list[int], dict[str, Any]]]:
        """Up to `n` (actions, data) pairs to hand out now."""

    @abstractmethod
    def _observe(self, candidate: Candidate, reward: float, shaped: float) -> None:
        """Learn from one result (`reward` clean, `shaped` after reward shaping)."""

    # --------------------------------------------------------------------------------- state

    @property
    def unique_architectures(self) -> int:
        return len(self.evaluated)

    def stats(self) -> dict[str, float]:
        """Numbers for logs and TensorBoard (subclasses add baseline, entropy, ...)."""
        recent = self.rewards[-50:]
        return {
            "step": float(self.step),
            "told": float(len(self.rewards)),
            "unique_architectures": float(self.unique_architectures),
            "reward_mean_recent": float(np.mean(recent)) if recent else float("nan"),
            "reward_max": float(max(self.rewards)) if self.rewards else float("nan"),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "rng": self.rng.bit_generator.state,
            "next_id": self.next_id,
            "step": self.step,
            "pending": [c.to_dict() for c in self.pending.values()],
            "evaluated": dict(self.evaluated),
            "rewards": list(self.rewards),
            "best": None if self.best is None else self.best.to_dict(),
            "updates": [asdict(u) for u in self.updates],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise NasSearchError(
                f"controller state is for {state.get('name')!r}, not {self.name!r}"
            )
        self.seed = state["seed"]
        self.rng.bit_generator.state = state["rng"]
        self.next_id = state["next_id"]
        self.step = state["step"]
        self.pending = {c["id"]: Candidate.from_dict(c, self.space) for c in state["pending"]}
        self.evaluated = dict(state["evaluated"])
        self.rewards = list(state["rewards"])
        best = state.get("best")
        self.best = None if best is None else Candidate.from_dict(best, self.space)
        self.updates = [ControllerUpdate(**u) for u in state.get("updates", [])]
