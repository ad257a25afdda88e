"""Random search and regularised evolution: legality, uniformity, mutation, aging, tournaments, state.

References are independent of the implementations: exact counts over a tiny space enumerated by
hand, re-checking every mask along a child, and the population's own bookkeeping.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest

from nassearch.controllers import build_controller
from nassearch.controllers.evolution import EvolutionController
from nassearch.controllers.random_search import RandomController
from nassearch.errors import NasSearchError
from nassearch.search_spaces import get_space
from nassearch.search_spaces.base import Decision, Genotype, SearchSpace


class TinyGenotype(Genotype):
    space = "tiny"

    def __init__(self, actions: Sequence[int]) -> None:
        self.actions = tuple(int(a) for a in actions)

    def to_dict(self):
        return {"space": self.space, "actions": list(self.actions)}

    @classmethod
    def from_dict(cls, data):
        return cls(data["actions"])


class TinySpace(SearchSpace):
    """a in 0..2; b in 0..2, b != a; c in 0..3, c <= 1 when b == 2 (prefix-dependent masks)."""

    name = "tiny"

    @property
    def decisions(self):
        return [Decision("a", "x", 3), Decision("b", "x", 3), Decision("c", "y", 4)]

    def mask(self, prefix):
        if len(prefix) == 0:
            return [True] * 3
        if len(prefix) == 1:
            return [i != prefix[0] for i in range(3)]
        return [i <= 1 if prefix[1] == 2 else True for i in range(4)]

    def decode(self, actions):
        self.validate_actions(actions)
        return TinyGenotype(actions)

    def encode(self, genotype):
        return list(genotype.actions)

    def genotype_from_dict(self, data):
        return TinyGenotype(data["actions"])

    def size(self):
        return sum(1 for _ in legal_sequences(self))


def legal_sequences(space: SearchSpace, prefix: tuple[int, ...] = ()):
    """Every legal action sequence, by walking the mask tree."""
    if len(prefix) == len(space.decisions):
        yield prefix
        return
    for choice, ok in enumerate(space.mask(list(prefix))):
        if ok:
            yield from legal_sequences(space, (*prefix, choice))


SPACES = {
    "nasfpn": lambda: get_space("nasfpn"),
    "nasfcos": lambda: get_space("nasfcos", part="both"),
}


def toy_reward(actions: Sequence[int]) -> float:
    """Deterministic, architecture-dependent reward with many distinct values."""
    return float(np.sin(np.dot(np.arange(1, len(actions) + 1), actions)))


def drive(ctrl, n: int, *, per_ask: int = 1) -> list[list[int]]:
    """Ask/tell `n` candidates with `toy_reward`; returns the actions handed out."""
    out = []
    while len(out) < n:
        for cand in ctrl.ask(per_ask):
            out.append(cand.actions)
            ctrl.tell(cand, toy_reward(cand.actions))
    return out


# --------------------------------------------------------------------------------- random


@pytest.mark.parametrize("name", sorted(SPACES))
def test_random_candidates_are_legal(name):
    space = SPACES[name]()
    ctrl = build_controller("random", space, seed=3)
    assert isinstance(ctrl, RandomController)
    cands = ctrl.ask(1000)  # never waits: all at once, nothing told
    assert len(cands) == 1000
    for cand in cands:
        space.validate_actions(cand.actions)
        assert cand.key == space.decode(cand.actions).key()
    assert len({c.key for c in cands}) > 990  # a huge space: almost no repeats


def test_random_is_uniform_over_the_tiny_space():
    space = TinySpace()
    legal = list(legal_sequences(space))
    # 3 x 2 x (4 or 2): b == 2 happens for 2 of the 6 (a, b) pairs.
    assert len(legal) == 4 * 4 + 2 * 2
    ctrl = RandomController(space, seed=0)
    draws = 20_000
    counts = Counter(tuple(c.actions) for c in ctrl.ask(draws))
    assert set(counts) <= set(legal)
    # Per-step uniform: P(a) = 1/3, P(b | a) = 1/2, P(c | a, b) = 1/|mask|.
    expected = {s: draws / 3 / 2 / (2 if s[1] == 2 else 4) for s in legal}
    chi2 = sum((counts[s] - e) ** 2 / e for s, e in expected.items())
    assert chi2 < 43.8  # chi-square, 19 degrees of freedom, p = 0.001 (fixed seed: no flakes)
    # And each step on its own.
    a_counts = Counter(c[0] for c in counts.elements())
    assert all(abs(a_counts[v] / draws - 1 / 3) < 0.015 for v in range(3))


def test_random_step_counts_results_and_state_round_trip():
    space = get_space("nasfpn")
    a = RandomController(space, seed=11)
    cands = a.ask(5)
    for c in cands[:3]:
        a.tell(c, toy_reward(c.actions))
    assert a.step == 3 and len(a.pending) == 2
    b = build_controller("random", space, seed=99)
    b.load_state_dict(a.state_dict())
    ca, cb = a.ask(20), b.ask(20)
    assert [c.actions for c in ca] == [c.actions for c in cb]
    assert [c.id for c in ca] == [c.id for c in cb]
    assert sorted(b.pending) == sorted(a.pending)


# ------------------------------------------------------------------------------ evolution


def check_mutation(space: SearchSpace, parent: list[int], child: list[int], pos: int) -> bool:
    """Assert the mutation rule; return whether exactly one decision changed."""
    space.validate_actions(child)
    assert child[:pos] == parent[:pos]
    assert child[pos] != parent[pos]
    for j in range(pos + 1, len(parent)):
        still_legal = space.mask(child[:j])[parent[j]]
        if still_legal:
            assert child[j] == parent[j], f"decision {j} was legal but changed"
    return sum(x != y for x, y in zip(parent, child, strict=True)) == 1


@pytest.mark.parametrize("name", sorted(SPACES))
def test_mutation_changes_one_decision_and_revalidates_the_suffix(name):
    space = SPACES[name]()
    ctrl = EvolutionController(space, seed=5)
    rng = np.random.default_rng(0)
    single, positions = 0, Counter()
    for _ in range(300):
        parent = space.sample_actions(rng)
        child, pos = ctrl.mutate(parent)
        single += check_mutation(space, parent, child, pos)
        positions[pos] += 1
    assert single > 150  # most mutations leave the suffix legal
    assert len(positions) > len(space.decisions) // 2  # the mutated decision varies


def test_mutation_redraws_an_invalidated_suffix():
    space = TinySpace()
    ctrl = EvolutionController(space, seed=0, population_size=2, sample_size=1)
    # Parent (0, 1, 3): mutating b to 2 forbids c = 3, which must be redrawn among {0, 1}.
    seen = set()
    for _ in range(200):
        child, pos = ctrl.mutate([0, 1, 3])
        check_mutation(space, [0, 1, 3], child, pos)
        seen.add(tuple(child))
    assert {(0, 2, 0), (0, 2, 1)} <= seen
    assert not any(c[1] == 2 and c[2] > 1 for c in seen)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_evolution_proposes_1000_legal_candidates(name):
    space = SPACES[name]()
    ctrl = build_controller("evolution", space, seed=2)
    actions = drive(ctrl, 1000, per_ask=4)
    for a in actions:
        space.validate_actions(a)
    assert ctrl.step == 1000
    assert len(ctrl.population) == ctrl.population_size == 20


def test_first_population_is_random_then_children_of_members():
    space = get_space("nasfpn")
    ctrl = EvolutionController(space, seed=1, population_size=6, sample_size=2)
    first = ctrl.ask(10)  # asynchronous: nothing told yet, so all random
    assert [c.data["origin"] for c in first] == ["random"] * 10
    for c in first[:6]:
        ctrl.tell(c, toy_reward(c.actions))
    members = {m["id"]: m["actions"] for m in ctrl.population}
    for cand in ctrl.ask(20):
        assert cand.data["origin"] == "mutation"
        parent = members[cand.data["parent"]]
        check_mutation(space, parent, cand.actions, cand.data["mutated"])


def test_aging_removes_the_oldest_member():
    space = get_space("nasfpn")
    ctrl = EvolutionController(space, seed=0, population_size=4, sample_size=2)
    cands = ctrl.ask(6)
    rewards = [10.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # the oldest is by far the best
    for c, r in zip(cands[:4], rewards[:4], strict=True):
        ctrl.tell(c, r)
    assert [m["id"] for m in ctrl.population] == [c.id for c in cands[:4]]
    ctrl.tell(cands[4], rewards[4])
    assert [m["id"] for m in ctrl.population] == [c.id for c in cands[1:5]]
    ctrl.tell(cands[5], rewards[5])
    assert [m["id"] for m in ctrl.population] == [c.id for c in cands[2:6]]
    assert [m["reward"] for m in ctrl.population] == rewards[2:6]


def test_tournament_picks_the_best_of_its_sample():
    space = get_space("nasfpn")
    ctrl = EvolutionController(space, seed=4, population_size=20, sample_size=5)
    rng = np.random.default_rng(7)
    for c in ctrl.ask(20):
        ctrl.tell(c, float(rng.normal()))
    rewards = [m["reward"] for m in ctrl.population]
    wins = Counter()
    for _ in range(2000):
        sample, winner = ctrl.tournament()
        assert len(sample) == 5 and len(set(sample)) == 5
        assert winner in sample
        assert rewards[winner] == max(rewards[i] for i in sample)
        wins[winner] += 1
    # Without replacement, member of rank r (0 = best) wins w.p. C(19 - r, 4) / C(20, 5).
    order = np.argsort(rewards)[::-1]
    for r in range(3):
        p = math.comb(19 - r, 4) / math.comb(20, 5)
        assert abs(wins[int(order[r])] / 2000 - p) < 0.035
    assert wins[int(order[-1])] == 0 and wins[int(order[-4])] == 0  # never wins a sample of 5


def test_whole_population_tournament_always_mutates_the_best():
    space = get_space("nasfcos", part="both")
    ctrl = EvolutionController(space, seed=0, population_size=5, sample_size=5)
    for c in ctrl.ask(5):
        ctrl.tell(c, toy_reward(c.actions))
    best = max(ctrl.population, key=lambda m: m["reward"])["id"]
    assert all(c.data["parent"] == best for c in ctrl.ask(30))


def test_evolution_state_round_trip():
    space = get_space("nasfcos", part="both")
    a = EvolutionController(space, seed=8, population_size=6, sample_size=3)
    drive(a, 25, per_ask=2)
    pending = a.ask(3)  # results still out when the state is saved
    state = a.state_dict()
    b = build_controller("evolution", space, seed=0)
    b.load_state_dict(state)
    assert list(b.population) == list(a.population)
    for c in pending:
        reward = toy_reward(c.actions)
        a.tell(c, reward)
        b.tell(c.id, reward)
    assert drive(a, 30, per_ask=3) == drive(b, 30, per_ask=3)


def test_evolution_rejects_bad_hyperparameters():
    space = TinySpace()
    with pytest.raises(NasSearchError, match="sample_size"):
        EvolutionController(space, population_size=3, sample_size=4)
    with pytest.raises(NasSearchError, match="population_size"):
        build_controller("evolution", space, population_size=0)
