"""Statistics of a proxy reward: seed noise (one-way ANOVA, ICC) and rank agreement with a reference.

The seed-noise figures follow the one-way random-effects model x_ij = mu + a_i + e_ij (architecture
i, seed j): the intraclass correlation ICC(1) = var(a) / (var(a) + var(e)) is the fraction of the
reward's variance that belongs to the architecture rather than to the seed. Groups may differ in
size (a record's own score plus K re-scores), so the ANOVA uses the unbalanced n0 of Snedecor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class SeedNoise:
    """What K seeds per architecture say about the reward's noise.

    Attributes:
        architectures: groups with at least one score.
        scores: scores in all.
        within_std: pooled within-architecture std, sqrt(MSW): the seed noise of one score.
        architecture_std: std of the architecture effect, sqrt((MSB - MSW) / n0), 0 if negative.
        std_of_means: plain std of the architectures' mean scores.
        icc: ICC(1); near 1 the reward is the architecture's, near 0 (or below) it is the seed's.
        f_statistic, p_value: the ANOVA's test that all architectures score the same.
        lsd_single: the smallest difference between two single scores that is significant at 5%
            (Fisher's least significant difference, t * sqrt(2 MSW)).
        lsd_mean: the same for two means over the average number of scores per architecture.
    """

    architectures: int
    scores: int
    within_std: float
    architecture_std: float
    std_of_means: float
    icc: float
    f_statistic: float
    p_value: float
    lsd_single: float
    lsd_mean: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def seed_noise(groups: Sequence[Sequence[float]], alpha: float = 0.05) -> SeedNoise:
    """One-way random-effects ANOVA over `groups` (one list of scores per architecture).

    Needs at least two architectures and at least one with two scores (else there is no
    within-architecture variance to measure).
    """
    from scipy import stats

    groups = [np.asarray(g, dtype=float) for g in groups if len(g)]
    k = len(groups)
    sizes = np.array([len(g) for g in groups])
    n = int(sizes.sum())
    if k < 2 or n <= k:
        raise ValueError(
            "seed noise needs at least two architectures and one of them scored twice "
            f"(got {k} architecture(s), {n} score(s))"
        )
    means = np.array([g.mean() for g in groups])
    grand = np.concatenate(groups).mean()
    ms_between = float((sizes * (means - grand) ** 2).sum() / (k - 1))
    ms_within = float(sum(((g - g.mean()) ** 2).sum() for g in groups) / (n - k))
    n0 = (n - (sizes**2).sum() / n) / (k - 1)
    if ms_within == 0.0:
        icc = 1.0 if ms_between > 0 else math.nan
        f_stat, p_value = (math.inf, 0.0) if ms_between > 0 else (math.nan, math.nan)
    else:
        icc = (ms_between - ms_within) / (ms_between + (n0 - 1) * ms_within)
        f_stat = ms_between / ms_within
        p_value = float(stats.f.sf(f_stat, k - 1, n - k))
    t = float(stats.t.ppf(1 - alpha / 2, n - k))
    return SeedNoise(
        architectures=k,
        scores=n,
        within_std=math.sqrt(ms_within),
        architecture_std=math.sqrt(max(0.0, (ms_between - ms_within) / n0)),
        std_of_means=float(means.std(ddof=1)),
        icc=float(icc),
        f_statistic=float(f_stat),
        p_value=p_value,
        lsd_single=t * math.sqrt(2 * ms_within),
        lsd_mean=t * math.sqrt(2 * ms_within / (n / k)),
    )


def _constant(values: np.ndarray) -> bool:
    return bool(np.all(values == values[0]))


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties handled); NaN when either side is constant."""
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or _constant(x) or _constant(y):
        return math.nan
    return float(stats.kendalltau(x, y).statistic)


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho; NaN when either side is constant."""
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or _constant(x) or _constant(y):
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def top_k_overlap(x: Sequence[float], y: Sequence[float], k: int) -> float:
    """Share of the k best by `x` that are also among the k best by `y` (ties: first listed)."""
    k = min(k, len(x))
    if k < 1:
        return math.nan
    best_x = set(np.argsort(-np.asarray(x, float), kind="stable")[:k].tolist())
    best_y = set(np.argsort(-np.asarray(y, float), kind="stable")[:k].tolist())
    return len(best_x & best_y) / k


@dataclass(frozen=True)
class Interval:
    """A statistic with its percentile-bootstrap interval."""

    value: float
    low: float
    high: float

    def describe(self, spec: str = "+.2f") -> str:
        if not math.isfinite(self.value):
            return "n/a"
        return f"{self.value:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


def bootstrap_interval(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    x: Sequence[float],
    y: Sequence[float],
    *,
    rng: np.random.Generator,
    resamples: int = 2000,
    level: float = 0.95,
) -> Interval:
    """Percentile bootstrap over (x, y) pairs; resamples where the statistic is NaN are dropped."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    value = statistic(x, y)
    n = len(x)
    draws = []
    for _ in range(resamples):
        index = rng.integers(0, n, n)
        s = statistic(x[index], y[index])
        if math.isfinite(s):
            draws.append(s)
    if not math.isfinite(value) or len(draws) < resamples // 10:
        return Interval(value, math.nan, math.nan)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(float(value), float(low), float(high))


@dataclass(frozen=True)
class RankFidelity:
    """How the proxy's order of architectures agrees with the reference's."""

    architectures: int
    kendall_tau: Interval
    spearman_rho: Interval
    top_k: int
    top_k_overlap: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def rank_fidelity(
    proxy: Sequence[float], reference: Sequence[float], *, seed: int = 0, top_k: int = 3
) -> RankFidelity:
    """Kendall tau and Spearman rho (bootstrap 95% intervals, seeded) and the top-k overlap."""
    rng = np.random.default_rng(seed)
    return RankFidelity(
        architectures=len(proxy),
        kendall_tau=bootstrap_interval(kendall_tau, proxy, reference, rng=rng),
        spearman_rho=bootstrap_interval(spearman_rho, proxy, reference, rng=rng),
        top_k=min(top_k, len(proxy)),
        top_k_overlap=top_k_overlap(proxy, reference, top_k),
    )
