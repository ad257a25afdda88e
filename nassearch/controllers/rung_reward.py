"""The reward a controller is told for an architecture that early stopping cut at a rung.

A stopped trial has only a partial metric (the validation loss after r epochs), on another scale
than the finished trials' rewards (AP after the full budget), and it must not read as a failure:
it was stopped for ranking low among the trials that reached the same rung, not for crashing.
So its standing among its rung peers is carried over to the finished trials' rewards:

    q = mid-rank of its metric among every trial that reached rung r (0 best, 1 worst)
    told = the (1 - q) quantile of the finished trials' rewards

An architecture stopped in the middle of its rung gets the median finished reward; the worst of
its rung, the lowest. This assumes what ASHA assumes when it stops a trial: rankings at rung r
predict rankings at the full budget. The quantile uses the finished rewards known when the trial
stops (or when the first one finishes, see `ControllerSearcher`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nassearch.errors import NasSearchError


def rung_quantile(own: float, peers: Sequence[float], *, lower_is_better: bool = True) -> float:
    """Mid-rank of `own` among `peers` (which include it) in [0, 1]: 0 best, 1 worst."""
    values = np.asarray([p for p in peers if np.isfinite(p)], dtype=float)
    if values.size == 0 or not np.isfinite(own):
        raise NasSearchError("rung_quantile: no finite metric at this rung")
    if values.size == 1:
        return 0.5
    better = np.sum(values < own) if lower_is_better else np.sum(values > own)
    ties = np.sum(values == own) - 1  # the others with the same value
    return float((better + 0.5 * ties) / (values.size - 1))


def stopped_reward(quantile: float, finished_rewards: Sequence[float]) -> float | None:
    """The finished rewards' (1 - quantile) quantile; None while no trial has finished."""
    rewards = np.asarray([r for r in finished_rewards if np.isfinite(r)], dtype=float)
    if rewards.size == 0:
        return None
    return float(np.quantile(rewards, 1.0 - quantile))
