"""REINFORCE on the LSTM policy (Zoph & Le 2017; ENAS, Pham et al. 2018): the default strategy.

Batching. Synchronous (default): a batch of `batch_size` candidates is drawn from one policy
version; `ask()` hands out at most the batch's remaining slots and returns [] while the batch
waits for results; the update happens in the `tell` that completes the batch. Asynchronous
(`async_updates=True`): `ask()` never waits; results are accumulated and every `batch_size`
results make one update, whichever policy versions drew them (each candidate keeps its `step`,
the version it was drawn from; with `batch_size=1` every `tell` updates).

Update. The advantage of a result is its shaped reward (by default its rank quantile among all
rewards so far, which makes the update independent of the reward's scale and offset) minus an
exponential-moving-average baseline (initialised to the first batch's mean, then updated with
decay `baseline_decay` after the batch's advantages are taken, so a reward never counts in its
own baseline). The loss is

    -mean(advantage * log_prob) - entropy_weight * mean(entropy) - elite_weight * mean(log_prob(elites)),

the last term being maximum likelihood of the `elite_size` best architectures told so far (one
per key; priority queue training, Abolafia et al. 2018). log_prob and entropy are recomputed by
teacher forcing at update time (so no autograd graph is ever kept, and a restored controller
needs only weights), and the loss takes `update_steps` Adam steps per batch; optional global-norm
gradient clipping. Candidates with a `cached_reward` (deduplicated) count as results like any
other; `novelty_retries` redraws samples whose architecture is known, so few are wasted.

The defaults (rank shaping, lr 0.02, 4 steps, elite 3, tanh 2.5, a non-autoregressive policy)
were chosen on the surrogate benchmark (scripts/bench_controller.py; README, "Controllers").

The controller is tiny and runs on CPU; all randomness comes from one seeded torch.Generator
that first initialises the weights and then draws every candidate.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from nassearch.controllers.base import Candidate, Controller
from nassearch.controllers.policy import LSTMPolicy
from nassearch.errors import NasSearchError
from nassearch.search_spaces.base import SearchSpace

__all__ = ["ReinforceController"]


class ReinforceController(Controller):
    """Policy-gradient search with an EMA baseline, entropy bonus and sync or async batches."""

    name = "reinforce"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        *,
        lr: float = 0.02,
        hidden_size: int = 100,
        num_layers: int = 1,
        embedding_dim: int | None = None,
        temperature: float = 1.0,
        tanh_constant: float | None = 2.5,
        autoregressive: bool = False,
        batch_size: int = 8,
        async_updates: bool = False,
        baseline_decay: float = 0.95,
        normalize_advantage: bool = False,
        entropy_weight: float = 1e-3,
        grad_clip: float | None = None,
        elite_size: int = 3,
        elite_weight: float = 1.0,
        update_steps: int = 4,
        novelty_retries: int = 8,
        failure_reward: float = 0.0,
        reward_shaping: str = "rank",
        dedup: bool = True,
    ) -> None:
        super().__init__(
            space,
            seed,
            failure_reward=failure_reward,
            reward_shaping=reward_shaping,
            dedup=dedup,
        )
        _check(self.name, "lr", lr, lambda v: v > 0, "a number > 0")
        _check(self.name, "batch_size", batch_size, lambda v: v >= 1, "an integer >= 1", int)
        _check(self.name, "baseline_decay", baseline_decay, lambda v: 0 <= v < 1, "in [0, 1)")
        _check(self.name, "entropy_weight", entropy_weight, lambda v: v >= 0, "a number >= 0")
        if grad_clip is not None:
            _check(self.name, "grad_clip", grad_clip, lambda v: v > 0, "a number > 0 or null")
        self.lr = float(lr)
        self.batch_size = int(batch_size)
        self.async_updates = bool(async_updates)
        self.baseline_decay = float(baseline_decay)
        self.normalize_advantage = bool(normalize_advantage)
        self.entropy_weight = float(entropy_weight)
        self.grad_clip = None if grad_clip is None else float(grad_clip)
        self.elite_size = int(elite_size)
        self.elite_weight = float(elite_weight)
        self.update_steps = int(update_steps)
        self.novelty_retries = int(novelty_retries)
        self.elites: list[dict[str, Any]] = []  # best unique architectures, best first

        self.generator = torch.Generator().manual_seed(seed)
        self.policy = LSTMPolicy(
            space,
            hidden_size=hidden_size,
            num_layers=num_layers,
            embedding_dim=embedding_dim,
            temperature=temperature,
            tanh_constant=tanh_constant,
            autoregressive=autoregressive,
            generator=self.generator,
        )
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.lr)
        self.baseline: float | None = None
        self.batch: list[dict[str, Any]] = []  # results waiting for the next update
        self.handed = 0  # candidates handed out for the current synchronous batch
        self.last: dict[str, float] = {}  # statistics of the last update

    # ------------------------------------------------------------------------------ ask/tell

    def _propose(self, n: int) -> list[tuple[list[int], dict[str, Any]]]:
        if not self.async_updates:
            n = min(n, self.batch_size - self.handed)
        if n <= 0:
            return []
        self.handed += n
        with torch.no_grad():
            actions, log_prob, _ = self.policy.sample(n, self.generator)
            if self.novelty_retries:
                actions, log_prob = self._novel(actions, log_prob)
        return [
            (seq, {"log_prob": float(lp)})
            for seq, lp in zip(actions, log_prob.tolist(), strict=True)
        ]

    def _novel(self, actions: list[list[int]], log_prob: torch.Tensor):
        """Redraw (up to novelty_retries times) samples whose architecture was already evaluated,
        is pending, or repeats another sample of this ask."""
        seen = set(self.evaluated) | {c.key for c in self.pending.values()}
        log_prob = log_prob.clone()
        keys = []
        for j, seq in enumerate(actions):
            key = self.space.decode(seq).key()
            tries = 0
            while key in seen and tries < self.novelty_retries:
                (seq,), lp, _ = self.policy.sample(1, self.generator)
                key, tries = self.space.decode(seq).key(), tries + 1
                actions[j], log_prob[j] = seq, lp[0]
            seen.add(key)
            keys.append(key)
        return actions, log_prob

    def _observe(self, candidate: Candidate, reward: float, shaped: float) -> None:
        if self.elite_size and all(e["key"] != candidate.key for e in self.elites):
            self.elites.append(
                {"key": candidate.key, "actions": list(candidate.actions), "reward": reward}
            )
            self.elites.sort(key=lambda e: -e["reward"])
            del self.elites[self.elite_size :]
        self.batch.append(
            {
                "id": candidate.id,
                "actions": list(candidate.actions),
                "reward": float(reward),
                "shaped": float(shaped),
                "step": candidate.step,
                "log_prob": candidate.data.get("log_prob"),
            }
        )
        if len(self.batch) >= self.batch_size:
            results, self.batch = self.batch, []
            self.handed = max(0, self.handed - len(results))
            self._update(results)
            self.step += 1
            rewards = [r["reward"] for r in results]
            self.last.update(
                batch_reward_mean=sum(rewards) / len(rewards),
                batch_reward_max=max(rewards),
                staleness=sum(self.step - 1 - r["step"] for r in results) / len(results),
            )
            self.record_update(
                rewards,
                baseline=self.baseline,
                entropy=self.last["entropy"],
                best_probability=self.best_probability(),
            )

    def best_probability(self) -> float | None:
        """The policy's probability of the best architecture told so far."""
        if self.best is None:
            return None
        with torch.no_grad():
            log_prob, _ = self.policy.log_prob([self.best.actions])
        return float(log_prob.exp()[0])

    # --------------------------------------------------------------------------------- update

    def _advantages(self, results: list[dict[str, Any]]) -> list[float]:
        """Shaped reward minus the EMA baseline from before this batch; then update the baseline."""
        shaped = [r["shaped"] for r in results]
        if self.baseline is None:
            self.baseline = sum(shaped) / len(shaped)
        advantages = [s - self.baseline for s in shaped]
        for s in shaped:
            self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * s
        return advantages

    def _advantage_tensor(self, advantages: list[float]) -> torch.Tensor:
        adv = torch.tensor(
            advantages, dtype=self.policy.start.dtype, device=self.policy.start.device
        )
        if self.normalize_advantage and len(advantages) > 1:
            adv = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-8)
        return adv

    def _update(self, results: list[dict[str, Any]]) -> None:
        adv = self._advantage_tensor(self._advantages(results))
        actions = [r["actions"] for r in results]
        elites = [e["actions"] for e in self.elites] if self.elite_weight > 0 else []
        for _ in range(self.update_steps):
            log_prob, entropy = self.policy.log_prob(actions + elites)
            n = len(actions)
            loss = -(adv * log_prob[:n]).mean() - self.entropy_weight * entropy[:n].mean()
            if elites:
                loss = loss - self.elite_weight * log_prob[n:].mean()
            self._optimise(loss)
        self.last.update(entropy=float(entropy[:n].detach().mean()), loss=float(loss.detach()))

    def _optimise(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.grad_clip)
        self.optimizer.step()

    # --------------------------------------------------------------------------------- state

    def probabilities(self, prefix: list[int]) -> torch.Tensor:
        """Probabilities of the next decision after `prefix` (masked; for inspection and tests)."""
        with torch.no_grad():
            return self.policy.next_probs([list(prefix)])[0]

    def stats(self) -> dict[str, float]:
        out = super().stats()
        out["baseline"] = float("nan") if self.baseline is None else float(self.baseline)
        out["policy_version"] = float(self.step)
        for key in ("entropy", "batch_reward_mean", "batch_reward_max", "staleness"):
            out[key] = float(self.last.get(key, float("nan")))
        return out

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            policy={k: v.detach().clone() for k, v in self.policy.state_dict().items()},
            optimizer=copy.deepcopy(self.optimizer.state_dict()),
            generator=self.generator.get_state(),
            baseline=self.baseline,
            batch=copy.deepcopy(self.batch),
            handed=self.handed,
            last=dict(self.last),
            elites=copy.deepcopy(self.elites),
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        try:
            self.policy.load_state_dict(state["policy"])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            raise NasSearchError(
                f"{self.name} state: policy weights do not fit this controller "
                f"(different space or hidden_size/num_layers?): {first[-1].strip() if first else exc}"
            ) from None
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.generator.set_state(state["generator"])
        self.baseline = state["baseline"]
        self.batch = copy.deepcopy(state["batch"])
        self.handed = int(state["handed"])
        self.last = dict(state["last"])
        self.elites = copy.deepcopy(state.get("elites", []))


def _check(owner: str, name: str, value: Any, ok: Any, expected: str, kind: type = float) -> None:
    """One-line error unless `value` is a finite number of `kind` satisfying `ok`."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        numeric = isinstance(value, int) and not isinstance(value, bool)
    if not numeric or not math.isfinite(value) or not ok(value):
        raise NasSearchError(f"controller {owner}: {name} must be {expected}, got {value!r}")
