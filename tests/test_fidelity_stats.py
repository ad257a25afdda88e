"""Fidelity statistics against hand-computed cases."""

import math

import numpy as np
import pytest

from nassearch.fidelity.stats import (
    bootstrap_interval,
    kendall_tau,
    rank_fidelity,
    seed_noise,
    spearman_rho,
    top_k_overlap,
)


def test_kendall_tau_counts_concordant_pairs():
    # 6 concordant and 4 discordant pairs of 10: tau = (6 - 4) / 10.
    assert kendall_tau([1, 2, 3, 4, 5], [3, 4, 1, 2, 5]) == pytest.approx(0.2)
    assert kendall_tau([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau([1, 2, 3], [5, 5, 5]))


def test_spearman_rho_of_ranks():
    # Ranks (1..5) against (3, 4, 1, 2, 5): sum d^2 = 4 + 4 + 4 + 4 + 0 = 16, rho = 1 - 6*16/120.
    assert spearman_rho([1, 2, 3, 4, 5], [3, 4, 1, 2, 5]) == pytest.approx(1 - 6 * 16 / 120)


def test_icc_balanced_by_hand():
    noise = seed_noise([[1, 2], [5, 6]])
    # MSB = 2 * ((1.5 - 3.5)^2 + (5.5 - 3.5)^2) = 16, MSW = 1 / 2, n0 = 2.
    assert noise.icc == pytest.approx(15.5 / 16.5)
    assert noise.within_std == pytest.approx(math.sqrt(0.5))
    assert noise.architecture_std == pytest.approx(math.sqrt(7.75))
    assert noise.std_of_means == pytest.approx(math.sqrt(8))
    # Fisher's LSD with N - k = 2 degrees of freedom: t(0.975, 2) = 4.3027.
    assert noise.lsd_single == pytest.approx(4.302653 * math.sqrt(2 * 0.5), rel=1e-5)
    assert noise.lsd_mean == pytest.approx(4.302653 * math.sqrt(2 * 0.5 / 2), rel=1e-5)


def test_icc_unbalanced_uses_n0():
    noise = seed_noise([[1, 2, 3], [4, 6]])
    # MSB = 3 * 1.2^2 + 2 * 1.8^2 = 10.8, MSW = 4 / 3, n0 = 5 - 13 / 5 = 2.4.
    msw = 4 / 3
    assert noise.icc == pytest.approx((10.8 - msw) / (10.8 + 1.4 * msw))
    assert noise.f_statistic == pytest.approx(8.1)
    assert noise.p_value == pytest.approx(0.0653, abs=1e-3)  # upper tail of F(1, 3) at 8.1


def test_icc_near_zero_when_seed_dominates():
    rng = np.random.default_rng(0)
    groups = rng.normal(0.0, 1.0, size=(30, 4))  # no architecture effect at all
    assert abs(seed_noise(groups.tolist()).icc) < 0.15
    shifted = groups * 0.1 + np.arange(30)[:, None]  # architecture effect dominates
    assert seed_noise(shifted.tolist()).icc > 0.99


def test_seed_noise_needs_a_repeated_score():
    with pytest.raises(ValueError, match="scored twice"):
        seed_noise([[1.0], [2.0], [3.0]])


def test_top_k_overlap():
    assert top_k_overlap([5, 4, 3, 2, 1], [1, 5, 4, 3, 2], 2) == pytest.approx(0.5)
    assert top_k_overlap([1, 2, 3], [1, 2, 3], 3) == 1.0


def test_bootstrap_interval_covers_the_population_tau():
    # Bivariate normal with correlation r: Kendall's population tau is (2 / pi) * arcsin(r).
    r = 0.6
    truth = 2 / math.pi * math.asin(r)
    rng = np.random.default_rng(1)
    covered = 0
    trials = 80
    for _ in range(trials):
        x = rng.normal(size=30)
        y = r * x + math.sqrt(1 - r**2) * rng.normal(size=30)
        interval = bootstrap_interval(kendall_tau, x, y, rng=rng, resamples=300)
        assert interval.low <= interval.value <= interval.high
        covered += interval.low <= truth <= interval.high
    assert covered / trials >= 0.85


def test_rank_fidelity_is_seeded():
    x, y = [1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5]
    a, b = rank_fidelity(x, y, seed=3), rank_fidelity(x, y, seed=3)
    assert a == b
    assert a.kendall_tau.value == pytest.approx(kendall_tau(x, y))
    assert a.top_k_overlap == pytest.approx(2 / 3)
