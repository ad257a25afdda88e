"""Does the search's reward carry any signal? A check of the first rewards of a search.

A proxy that is too short or too small scores every architecture the same (AP 0.0000 on real
COCO images at the quickstart's scale), and a controller learns nothing from that. After the first
few architectures, `no_signal_warning` says so when their rewards are all equal, or when their
spread is below the seed noise that `proxy.repeats` measured, and what to change.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

# How many searched architectures the check waits for (fewer if the search is smaller).
FIRST_REWARDS = 8


def no_signal_warning(
    rewards: Sequence[float], seed_std: float | None, *, reward: str
) -> str | None:
    """One warning line, or None when the first rewards differ by more than the seed noise.

    Args:
        rewards: the successful first rewards of the search (at least 2 to judge).
        seed_std: pooled within-architecture std of the repeats' scores, None if not measured.
        reward: the configured `proxy.reward`, to say what to change.
    """
    rewards = [r for r in rewards if math.isfinite(r)]
    if len(rewards) < 2:
        return None
    advice = (
        "try `proxy.reward: neg_loss` (it varies where a short proxy's AP is 0), or a longer or "
        "larger proxy (train.epochs, input.size)"
        if reward != "neg_loss"
        else "try a longer or larger proxy (train.epochs, input.size, model.neck.out_channels)"
    )
    low, high = min(rewards), max(rewards)
    if high - low <= 1e-12 * max(1.0, abs(high)):
        return (
            f"the first {len(rewards)} rewards are all {high:.4g}: the reward carries no signal "
            f"and the controller cannot learn from it; {advice}"
        )
    spread = statistics.stdev(rewards)
    if seed_std is not None and spread < seed_std:
        return (
            f"the first {len(rewards)} rewards spread by {spread:.3g} (std), less than their "
            f"seed noise {seed_std:.3g} (std over proxy.repeats): the reward is mostly noise; "
            f"{advice}, or more proxy.repeats"
        )
    return None


def pooled_seed_std(score_groups: Sequence[Sequence[float]]) -> float | None:
    """Pooled within-group std of several architectures' repeated scores (None if none repeated)."""
    groups = [list(g) for g in score_groups if len(g) > 1]
    if not groups:
        return None
    squares = sum(sum((x - statistics.fmean(g)) ** 2 for x in g) for g in groups)
    dof = sum(len(g) - 1 for g in groups)
    return math.sqrt(squares / dof)
