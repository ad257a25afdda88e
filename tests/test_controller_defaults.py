"""The default REINFORCE/PPO controllers: scale-free (rank-shaped) updates, the elite term and
several steps per batch against the loss formula, redraws of known architectures, and the
per-update records (`ControllerUpdate`) a search logs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from nassearch.controllers import build_controller
from nassearch.controllers.benchmark import make_surrogate
from nassearch.errors import NasSearchError
from nassearch.search_spaces import get_space

pytestmark = pytest.mark.usefixtures("one_thread")


def candidates_told(name, space, transform, asks=200, seed=0):
    """The action sequences of `asks` candidates, each told transform(surrogate reward)."""
    surrogate = make_surrogate("pairwise", space, seed=seed)
    ctrl = build_controller(name, space, seed=seed)
    sequences = []
    while len(sequences) < asks:
        for cand in ctrl.ask(8):
            sequences.append(cand.actions)
            reward = cand.cached_reward
            if reward is None:
                reward = transform(surrogate.clean(cand.actions))
            ctrl.tell(cand, reward)
    assert ctrl.step >= 20
    return sequences


@pytest.mark.parametrize("name", ["reinforce", "ppo"])
def test_default_updates_are_scale_free(name):
    # AP around 0.45, the same x0.01 (AP 0.0045), x100 (percent) and +5 (an offset, as a
    # negative loss has): the same decisions, candidate for candidate.
    space = get_space("nasfpn")
    reference = candidates_told(name, space, lambda r: r)
    assert len({tuple(s) for s in reference}) > 150  # a real search, not a collapsed one
    for transform in (lambda r: 0.01 * r, lambda r: 100.0 * r, lambda r: r + 5.0):
        assert candidates_told(name, space, transform) == reference


def test_raw_rewards_are_not_scale_free():
    """The check above can fail: raw advantages (the former default) change with the scale."""
    space = get_space("nasfpn")
    surrogate = make_surrogate("pairwise", space, seed=0)

    def run(scale):
        ctrl = build_controller("reinforce", space, seed=0, reward_shaping="raw")
        out = []
        for _ in range(10):
            for cand in ctrl.ask(8):
                out.append(cand.actions)
                ctrl.tell(cand, scale * surrogate.clean(cand.actions))
        return out

    assert run(1.0) != run(100.0)


def test_elite_term_and_update_steps_follow_the_formula():
    space = get_space("nasfcos", part="head")
    ew, steps, lr = 0.5, 2, 0.3
    ctrl = build_controller(
        "reinforce",
        space,
        seed=4,
        hidden_size=16,
        batch_size=4,
        elite_size=2,
        elite_weight=ew,
        update_steps=steps,
        entropy_weight=0.01,
        reward_shaping="raw",
        novelty_retries=0,
    )
    first = ctrl.ask(4)
    for cand, r in zip(first, [0.2, 0.9, 0.4, 0.1], strict=True):
        ctrl.tell(cand, r)
    ctrl.optimizer = torch.optim.SGD(ctrl.policy.parameters(), lr=lr)
    second = ctrl.ask(4)
    reference = copy.deepcopy(ctrl.policy)
    baseline = ctrl.baseline
    r2 = [0.5, 0.95, 0.3, 0.6]
    for cand, r in zip(second, r2, strict=True):
        ctrl.tell(cand, r)
    told = {}
    for c, r in zip(first + second, [0.2, 0.9, 0.4, 0.1] + r2, strict=True):
        told.setdefault(c.key, (r, c.actions))  # a repeat keeps its first reward
    best_two = sorted(told.values(), key=lambda v: -v[0])[:2]
    assert [e["actions"] for e in ctrl.elites] == [a for _, a in best_two]
    adv = torch.tensor([r - baseline for r in r2])
    for _ in range(steps):
        log_prob, entropy = reference.log_prob([c.actions for c in second])
        elite_lp, _ = reference.log_prob([a for _, a in best_two])
        loss = -(adv * log_prob).mean() - 0.01 * entropy.mean() - ew * elite_lp.mean()
        reference.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in reference.parameters():
                if p.grad is not None:
                    p -= lr * p.grad
    for p, q in zip(ctrl.policy.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5)


def test_known_architectures_are_redrawn():
    """A peaked policy keeps proposing the best architecture; the redraws hand out new ones."""
    space = get_space("nasfcos", part="head")
    surrogate = make_surrogate("additive", space, seed=1)
    repeats = {}
    for retries in (0, 8):
        ctrl = build_controller("reinforce", space, seed=1, novelty_retries=retries)
        cached = 0
        for _ in range(30):
            for cand in ctrl.ask(8):
                cached += cand.cached_reward is not None
                ctrl.tell(cand, cand.cached_reward or surrogate.clean(cand.actions))
        repeats[retries] = cached
    assert repeats[8] < repeats[0] / 2, repeats  # measured 61 vs 157


def test_every_update_is_recorded():
    space = get_space("nasfpn")
    surrogate = make_surrogate("kinds", space, seed=2)
    ctrl = build_controller("reinforce", space, seed=2)
    told = []
    for _ in range(5):
        for cand in ctrl.ask(8):
            reward = surrogate.clean(cand.actions)
            told.append(reward)
            ctrl.tell(cand, reward)
    assert [u.update for u in ctrl.updates] == [1, 2, 3, 4, 5]
    last = ctrl.updates[-1]
    assert (last.told, last.batch_size) == (40, 8)
    assert last.batch_reward_mean == pytest.approx(np.mean(told[-8:]))
    assert last.batch_reward_max == max(told[-8:]) and last.best_reward == max(told)
    assert last.baseline == ctrl.baseline and last.entropy == ctrl.stats()["entropy"]
    with torch.no_grad():
        log_prob, _ = ctrl.policy.log_prob([ctrl.best.actions])
    assert last.best_probability == pytest.approx(float(log_prob.exp()[0]))
    assert ctrl.evaluated[ctrl.best.key] == max(told)
    # Strategies without batches record one line per 8 results.
    rand = build_controller("random", space, seed=0)
    for _ in range(3):
        for cand in rand.ask(8):
            rand.tell(cand, surrogate.clean(cand.actions))
    assert [u.told for u in rand.updates] == [8, 16, 24]
    assert rand.updates[0].baseline is None and rand.updates[0].best_probability is None


def test_ppo_takes_epochs_not_update_steps():
    with pytest.raises(NasSearchError, match="ppo_epochs"):
        build_controller("ppo", get_space("nasfpn"), update_steps=2)


def test_controller_log_writes_each_update_once_and_the_trend_is_spearman(tmp_path):
    from scipy.stats import spearmanr

    from nassearch.controller_log import ControllerLog, read_controller_log, reward_trend
    from nassearch.controllers.base import ControllerUpdate

    path = tmp_path / "controller.jsonl"
    log = ControllerLog(path, "fpn")
    means = [0.1, 0.3, 0.2, 0.5, 0.4, 0.6]
    updates = [ControllerUpdate(i + 1, 8 * (i + 1), 8, m, m, m) for i, m in enumerate(means)]
    for u in updates[:4]:
        log(u)
    # A restored searcher (its log pickled with Tune's state) replays updates 3 and 4.
    import pickle

    restored = pickle.loads(pickle.dumps(log))
    for u in updates[2:]:
        restored(u)
    ControllerLog(path, "head")(updates[0])  # another stage counts on its own
    lines = read_controller_log(path)
    assert [(r["stage"], r["update"]) for r in lines] == [("fpn", i) for i in range(1, 7)] + [
        ("head", 1)
    ]
    trend = reward_trend([r["batch_reward_mean"] for r in lines if r["stage"] == "fpn"])
    expected = spearmanr(range(6), means)
    assert (trend.rho, trend.p_value) == pytest.approx((expected.statistic, expected.pvalue))
    assert trend.rose and "rose over 6 updates (Spearman rho +0.89" in trend.describe("ppo")
    flat = reward_trend([0.5, 0.2, 0.5, 0.2, 0.5, 0.2])
    assert not flat.rose and "did not rise significantly" in flat.describe("random")
    assert "too few" in reward_trend([0.1, 0.2]).describe("reinforce")
