"""Surrogate reward: determinism, exact optimum (brute force), range, additivity/epistasis, noise."""

from __future__ import annotations

import numpy as np
import pytest

from nassearch.controllers.surrogate import SurrogateReward
from nassearch.errors import NasSearchError
from nassearch.search_spaces import get_space
from nassearch.search_spaces.base import Decision, Genotype, SearchSpace


class SmallGenotype(Genotype):
    space = "small"

    def __init__(self, actions) -> None:
        self.actions = tuple(actions)

    def to_dict(self):
        return {"space": self.space, "actions": list(self.actions)}

    @classmethod
    def from_dict(cls, data):
        return cls(data["actions"])


class SmallSpace(SearchSpace):
    """Five decisions with prefix-dependent masks (a NAS-FPN-like pool that grows)."""

    name = "small"

    @property
    def decisions(self):
        return [
            Decision("in1", "input", 4),
            Decision("in2", "input", 4),
            Decision("op", "op", 3),
            Decision("in3", "input", 4),
            Decision("op2", "op", 3),
        ]

    def mask(self, prefix):
        i = len(prefix)
        if i == 0:
            return [c < 2 for c in range(4)]
        if i == 1:
            return [c < 3 and c != prefix[0] for c in range(4)]
        if i == 3:
            return [c != prefix[0] and c != prefix[1] for c in range(4)]
        if i == 4:
            return [c != prefix[2] for c in range(3)]  # op2 differs from op
        return [True] * 3

    def decode(self, actions):
        self.validate_actions(actions)
        return SmallGenotype(actions)

    def encode(self, genotype):
        return list(genotype.actions)

    def genotype_from_dict(self, data):
        return SmallGenotype(data["actions"])

    def size(self):
        return len(legal_sequences(self))


def legal_sequences(space: SearchSpace, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    if len(prefix) == len(space.decisions):
        return [prefix]
    out = []
    for choice, ok in enumerate(space.mask(list(prefix))):
        if ok:
            out += legal_sequences(space, (*prefix, choice))
    return out


def random_actions(space, n, seed=0):
    rng = np.random.default_rng(seed)
    return [space.sample_actions(rng) for _ in range(n)]


@pytest.mark.parametrize("opts", [("nasfpn", {}), ("nasfcos", {"part": "both"})])
def test_deterministic_for_a_seed_and_different_across_seeds(opts):
    space = get_space(opts[0], **opts[1])
    actions = random_actions(space, 50)
    a, b, c = (SurrogateReward(space, seed=s) for s in (3, 3, 4))
    ra = [a.reward(x) for x in actions]
    assert ra == [b.reward(x) for x in actions]
    assert a.optimum() == b.optimum()
    assert ra != [c.reward(x) for x in actions]
    assert a.optimum()[1] != c.optimum()[1]
    # Noise is reproducible through the passed generator.
    noisy = SurrogateReward(space, seed=3, noise_std=0.05)
    n1 = [noisy.reward(x, np.random.default_rng(1)) for x in actions]
    n2 = [noisy.reward(x, np.random.default_rng(1)) for x in actions]
    assert n1 == n2 and n1 != ra


@pytest.mark.parametrize("landscape", [(0.5, 0.5), (None, 0.0), (0.1, 1.0)])
@pytest.mark.parametrize("pairs", [0, 4, 10])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_optimum_equals_brute_force(seed, pairs, landscape):
    space = SmallSpace()
    legal = legal_sequences(space)
    assert len(legal) == 2 * 2 * 3 * 2 * 2
    concentration, shared = landscape
    s = SurrogateReward(
        space,
        seed=seed,
        interaction_pairs=pairs,
        interaction_scale=2.0,
        kind_concentration=concentration,
        shared=shared,
    )
    values = [s.reward(a) for a in legal]
    best = int(np.argmax(values))
    value, actions = s.optimum()
    assert value == pytest.approx(max(values)) == pytest.approx(1.0)
    assert tuple(actions) == legal[best]
    assert sorted(values)[-2] < max(values) - 1e-9  # a unique optimum
    assert min(values) >= 0.0


def test_optimum_equals_brute_force_on_the_nasfcos_head_space():
    """326,592 legal sequences (no masks), enumerated as one array against the surrogate terms."""
    space = get_space("nasfcos", part="head")
    s = SurrogateReward(space, seed=5, interaction_pairs=10)
    grids = np.meshgrid(*[np.arange(d.num_choices) for d in space.decisions], indexing="ij")
    all_actions = np.stack([g.ravel() for g in grids], axis=1)
    assert len(all_actions) == space.size()
    raw = s.additive[np.arange(7), all_actions].sum(1)
    for p, (i, j) in enumerate(s.pairs):
        raw += s.interactions[p, all_actions[:, i], all_actions[:, j]]
    best = int(np.argmax(raw))
    assert list(all_actions[best]) == s.optimum()[1]
    assert s.reward(all_actions[best]) == pytest.approx(1.0)
    # The public reward is an increasing affine map of this reference sum.
    pick = np.random.default_rng(0).integers(len(raw), size=60)
    public = [s.reward(a) for a in all_actions[pick]]
    slope, intercept = np.polyfit(raw[pick], public, 1)
    assert slope > 0
    assert np.allclose(slope * raw[pick] + intercept, public, atol=1e-9)


@pytest.mark.parametrize("opts", [("nasfpn", {}), ("nasfcos", {"part": "both"})])
def test_rewards_are_normalised_and_informative(opts):
    space = get_space(opts[0], **opts[1])
    s = SurrogateReward(space, seed=0)
    value, target = s.optimum()
    space.validate_actions(target)
    assert value == pytest.approx(1.0)
    rewards = np.array([s.reward(a) for a in random_actions(space, 500, seed=1)])
    assert rewards.min() >= 0.0 and rewards.max() < 0.9
    assert 0.3 < np.median(rewards) < 0.7 and rewards.std() > 0.03  # graded, not flat
    # Not a needle: every single legal change of the optimum keeps most of the reward.
    for i, d in enumerate(space.decisions):
        for c in range(d.num_choices):
            child = list(target)
            child[i] = c
            try:
                space.validate_actions(child)
            except NasSearchError:
                continue
            r = s.reward(child)
            assert 0.75 < r <= 1.0 and (r < 1.0 or c == target[i])


def test_additive_without_interactions_and_epistatic_with_them():
    space = get_space("nasfcos", part="head")  # no masks: any single change stays legal
    rng = np.random.default_rng(0)
    for pairs, additive in ((0, True), (21, False)):  # 21 = every pair, (0, 1) included
        s = SurrogateReward(space, seed=1, interaction_pairs=pairs, interaction_scale=1.0)
        deltas = []
        for _ in range(200):
            a = space.sample_actions(rng)
            b = list(a)
            b[0] = (a[0] + 1) % 6
            c, d = list(a), list(b)
            c[1] = d[1] = (a[1] + 1) % 6
            # Effect of changing decision 0 in two backgrounds that differ in decision 1.
            deltas.append((s.reward(b) - s.reward(a)) - (s.reward(d) - s.reward(c)))
        if additive:
            assert np.allclose(deltas, 0.0, atol=1e-12)
        else:
            assert max(abs(x) for x in deltas) > 0.01


def test_noise_has_the_requested_std():
    space = get_space("nasfpn")
    s = SurrogateReward(space, seed=0, noise_std=0.05)
    a = random_actions(space, 1)[0]
    clean = s.reward(a)
    assert s.reward(a) == clean  # no generator, no noise
    rng = np.random.default_rng(123)
    noise = np.array([s.reward(a, rng) for _ in range(20_000)]) - clean
    assert noise.std() == pytest.approx(0.05, rel=0.03)
    assert abs(noise.mean()) < 0.002


def test_rejects_illegal_actions_and_bad_options():
    space = get_space("nasfpn")
    s = SurrogateReward(space)
    bad = list(s.optimum()[1])
    bad[1] = bad[0]  # a cell reading the same entry twice
    with pytest.raises(NasSearchError, match="not allowed"):
        s.reward(bad)
    with pytest.raises(NasSearchError, match="interaction_pairs"):
        SurrogateReward(space, interaction_pairs=10_000)
    with pytest.raises(NasSearchError, match="noise_std"):
        SurrogateReward(space, noise_std=-1.0)
