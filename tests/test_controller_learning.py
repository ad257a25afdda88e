"""Default REINFORCE learns: on two surrogate families of the benchmark suite it beats random
search by a clear margin after 300 samples and is at most 0.01 behind regularised evolution.

Eight seeds per setting; seed s uses landscape s, controller seed s and noise stream s, and the
driver asks 8 candidates per round, as scripts/bench_controller.py does (these are its seeds
0-7; the defaults were tuned on seeds 100-104). Fixed seeds make the medians exact numbers on one
machine; on another CPU float rounding in the policy can change individual draws, so the margins
asserted leave room (measured values in the parameters' comment).
"""

from __future__ import annotations

import numpy as np
import pytest

from nassearch.controllers import build_controller
from nassearch.controllers.benchmark import make_surrogate, run_search
from nassearch.search_spaces import get_space

BUDGET = 300
SEEDS = range(8)

pytestmark = pytest.mark.usefixtures("one_thread")


def best_after_budget(space, family: str, noise: float, strategy: str, seed: int) -> float:
    surrogate = make_surrogate(family, space, seed, noise)
    controller = build_controller(strategy, space, seed=seed)  # default options
    curve = run_search(
        controller, surrogate, BUDGET, parallel=8, noise_rng=np.random.default_rng([seed, 1])
    )
    return curve.at(BUDGET)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("space_name", "family", "noise"),
    # Measured medians (REINFORCE / evolution / random): NAS-FPN kinds with 5% noise 0.797 /
    # 0.718 / 0.640; NAS-FCOS additive 0.884 / 0.866 / 0.689.
    [("nasfpn", "kinds", 0.05), ("nasfcos", "additive", 0.0)],
)
def test_default_reinforce_beats_random_and_keeps_up_with_evolution(space_name, family, noise):
    space = get_space(space_name, part="both") if space_name == "nasfcos" else get_space(space_name)
    found = {
        strategy: [best_after_budget(space, family, noise, strategy, s) for s in SEEDS]
        for strategy in ("reinforce", "evolution", "random")
    }
    median = {k: float(np.median(v)) for k, v in found.items()}
    print(space_name, family, noise, {k: round(v, 3) for k, v in median.items()})
    assert median["reinforce"] >= median["random"] + 0.10
    assert median["reinforce"] >= median["evolution"] - 0.01
