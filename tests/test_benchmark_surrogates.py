"""Benchmark surrogates: the NK landscape (planted optimum by brute force, ruggedness, range,
determinism, noise), the family registry and the search loop."""

from __future__ import annotations

import numpy as np
import pytest
from test_surrogate import SmallSpace, legal_sequences, random_actions

from nassearch.controllers import build_controller
from nassearch.controllers.benchmark import FAMILIES, make_surrogate, run_search
from nassearch.controllers.nk_landscape import NKLandscape
from nassearch.errors import NasSearchError
from nassearch.search_spaces import get_space


@pytest.mark.parametrize("k", [0, 2, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nk_planted_target_is_the_brute_force_optimum(k, seed):
    space = SmallSpace()
    nk = NKLandscape(space, seed=seed, k=k)
    values = {seq: nk.clean(seq) for seq in legal_sequences(space)}
    best = max(values, key=values.get)
    assert list(best) == nk.optimum()[1] and values[best] == nk.optimum()[0] == 1.0
    assert sum(v == 1.0 for v in values.values()) == 1
    assert all(0.0 <= v <= 1.0 for v in values.values())


def local_optima(space, f) -> int:
    """Legal sequences no single-decision change improves."""
    sequences = legal_sequences(space)
    legal = set(sequences)
    count = 0
    for seq in sequences:
        neighbours = [
            seq[:i] + (c,) + seq[i + 1 :]
            for i in range(len(seq))
            for c in range(space.decisions[i].num_choices)
            if c != seq[i]
        ]
        if all(f(n) <= f(seq) for n in neighbours if n in legal):
            count += 1
    return count


def test_nk_ruggedness_grows_with_k():
    space = SmallSpace()
    counts = {k: local_optima(space, NKLandscape(space, seed=3, k=k).clean) for k in (0, 3)}
    # K = 0 is additive: mask constraints aside, one peak; K = 3 has many.
    assert counts[3] > 2 * counts[0], counts


def test_nk_is_deterministic_normalised_and_noisy_only_with_a_generator():
    space = get_space("nasfpn")
    a, b = NKLandscape(space, seed=5, k=3), NKLandscape(space, seed=5, k=3)
    other = NKLandscape(space, seed=6, k=3)
    seqs = random_actions(space, 200, seed=1)
    values = [a.clean(s) for s in seqs]
    assert values == [b.clean(s) for s in seqs] != [other.clean(s) for s in seqs]
    assert 0.45 < np.mean(values) < 0.55 and max(values) < 0.8  # random ones are far from 1.0
    noisy = NKLandscape(space, seed=5, k=3, noise_std=0.05)
    assert noisy.reward(seqs[0]) == a.clean(seqs[0])
    draws = [noisy.reward(seqs[0], np.random.default_rng(i)) for i in range(400)]
    assert np.std(np.asarray(draws) - a.clean(seqs[0])) == pytest.approx(0.05, rel=0.15)


def test_nk_rejects_bad_options_and_illegal_actions():
    space = SmallSpace()
    with pytest.raises(NasSearchError, match="k must be"):
        NKLandscape(space, k=5)
    with pytest.raises(NasSearchError, match="noise_std"):
        NKLandscape(space, noise_std=-1)
    with pytest.raises(NasSearchError):
        NKLandscape(space).clean([3, 0, 0, 0, 0])  # in1 = 3 is masked


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_has_its_optimum_at_one(family):
    space = get_space("nasfcos", part="both")
    surrogate = make_surrogate(family, space, seed=2)
    value, target = surrogate.optimum()
    assert value == pytest.approx(1.0)
    space.validate_actions(target)
    randoms = [surrogate.clean(s) for s in random_actions(space, 100, seed=3)]
    assert max(randoms) < 0.85 and min(randoms) >= 0.0


def test_unknown_family_is_a_one_line_error():
    with pytest.raises(NasSearchError, match="unknown surrogate family 'nk9'"):
        make_surrogate("nk9", get_space("nasfpn"), seed=0)


def test_run_search_counts_every_sample_and_tracks_the_clean_best():
    space = get_space("nasfpn")
    surrogate = make_surrogate("pairwise", space, seed=0, noise_std=0.05)
    ctrl = build_controller("evolution", space, seed=0)
    told = []
    tell = ctrl.tell
    ctrl.tell = lambda cand, reward: (told.append((cand.actions, reward)), tell(cand, reward))
    curve = run_search(ctrl, surrogate, 50, parallel=4, noise_rng=np.random.default_rng(0))
    assert len(curve.best) == len(told) == len(ctrl.rewards) == 50
    clean = [surrogate.clean(actions) for actions, _ in told]
    assert curve.best.tolist() == np.maximum.accumulate(clean).tolist()
    assert all(abs(r - c) > 0 for (_, r), c in zip(told, clean, strict=True))  # told noisy
    assert curve.at(50) == max(clean) and curve.at(10) == max(clean[:10])
    assert curve.samples_to(max(clean)) == clean.index(max(clean)) + 1
    assert curve.samples_to(2.0) == float("inf")
