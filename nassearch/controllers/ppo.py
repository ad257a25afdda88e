"""PPO on the LSTM policy (Schulman et al. 2017), the update NAS-FPN's controller used.

Batching, baseline, advantages, entropy bonus and gradient clipping are REINFORCE's (see
`reinforce.py`). Each completed batch joins a buffer of the most recent `buffer_size` results
(default 2 x batch_size), each keeping the advantage it got when it arrived; the update is
`ppo_epochs` full-buffer steps on the clipped surrogate

    -mean(min(ratio * A, clip(ratio, 1 - clip, 1 + clip) * A)) - entropy_weight * mean(entropy),

where ratio = exp(log_prob_now - log_prob_then) and log_prob_then is the candidate's sampling-time
log-probability (`Candidate.data["log_prob"]`), i.e. the policy that actually drew it.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from nassearch.controllers.reinforce import ReinforceController, _check
from nassearch.errors import NasSearchError
from nassearch.search_spaces.base import SearchSpace

__all__ = ["PPOController"]


class PPOController(ReinforceController):
    """Clipped-surrogate policy optimisation over a buffer of recent candidates."""

    name = "ppo"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        *,
        clip: float = 0.2,
        ppo_epochs: int = 4,
        buffer_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        if "update_steps" in kwargs:
            raise NasSearchError(
                "controller ppo: update_steps is REINFORCE's; PPO takes ppo_epochs steps per update"
            )
        super().__init__(space, seed, **kwargs)
        _check(self.name, "clip", clip, lambda v: 0 < v < 1, "in (0, 1)")
        _check(self.name, "ppo_epochs", ppo_epochs, lambda v: v >= 1, "an integer >= 1", int)
        if buffer_size is None:
            buffer_size = 2 * self.batch_size
        _check(
            self.name,
            "buffer_size",
            buffer_size,
            lambda v: v >= self.batch_size,
            f"an integer >= batch_size ({self.batch_size})",
            int,
        )
        self.clip = float(clip)
        self.ppo_epochs = int(ppo_epochs)
        self.buffer_size = int(buffer_size)
        self.buffer: list[dict[str, Any]] = []

    def _update(self, results: list[dict[str, Any]]) -> None:
        for result, advantage in zip(results, self._advantages(results), strict=True):
            self.buffer.append({**result, "advantage": advantage})
        self.buffer = self.buffer[-self.buffer_size :]
        adv = self._advantage_tensor([r["advantage"] for r in self.buffer])
        old = torch.tensor([r["log_prob"] for r in self.buffer], dtype=adv.dtype, device=adv.device)
        actions = [r["actions"] for r in self.buffer]
        elites = [e["actions"] for e in self.elites] if self.elite_weight > 0 else []
        n = len(actions)
        for _ in range(self.ppo_epochs):
            log_prob, entropy = self.policy.log_prob(actions + elites)
            log_prob, elite_log_prob, entropy = log_prob[:n], log_prob[n:], entropy[:n]
            ratio = torch.exp(log_prob - old)
            surrogate = torch.min(ratio * adv, ratio.clamp(1 - self.clip, 1 + self.clip) * adv)
            loss = -surrogate.mean() - self.entropy_weight * entropy.mean()
            if elites:
                loss = loss - self.elite_weight * elite_log_prob.mean()
            self._optimise(loss)
        with torch.no_grad():
            clipped = ((ratio - 1).abs() > self.clip).float().mean()
            approx_kl = (old - log_prob).mean()
        # Entropy of this batch's sequences under the policy of the last epoch.
        self.last.update(
            entropy=float(entropy.detach()[-len(results) :].mean()),
            loss=float(loss.detach()),
            clip_fraction=float(clipped),
            approx_kl=float(approx_kl),
        )

    def stats(self) -> dict[str, float]:
        out = super().stats()
        for key in ("clip_fraction", "approx_kl"):
            out[key] = float(self.last.get(key, float("nan")))
        out["buffer"] = float(len(self.buffer))
        return out

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["buffer"] = copy.deepcopy(self.buffer)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.buffer = copy.deepcopy(state["buffer"])
