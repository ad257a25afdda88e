"""A rugged benchmark reward: an NK landscape (Kauffman & Weinberger 1989) with a planted optimum.

Each decision i contributes a term f_i that depends on its own choice and on the choices of K
other decisions (its neighbours, drawn at random per seed). Off the planted target, a term's
value for each combination of those K + 1 choices is an independent U(0, 1) draw: with K >= 2 the
landscape has many local optima and single-decision changes interact. At the target's own
combination a term is exactly 1, its maximum, so the target (a legal sequence drawn from the
masks) is the global optimum and the clean reward mean_i f_i lies in [0, 1] with optimum 1.0.
Random architectures score about 0.5.

The tables are never stored: a term's value is a 64-bit hash of (seed, term, choices), so K = 4
over 11 choices costs nothing to build. Gaussian noise (`noise_std`) is drawn only from a numpy
Generator passed to `reward`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nassearch.errors import NasSearchError
from nassearch.search_spaces.base import SearchSpace

_SALT = 0x4E4B  # separates the landscape's stream from a controller's default_rng(seed)
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Steele, Lea & Flood's 64-bit finaliser: a bijective, well-mixed hash of uint64 values."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return x ^ (x >> np.uint64(31))


class NKLandscape:
    """Sum of N terms over K + 1 decisions each, planted optimum 1.0 (see the module docstring).

    Args:
        space: the search space (its decisions and masks).
        seed: selects neighbours, target and term values.
        k: neighbours per term, 0 <= k < number of decisions (0 is additive).
        noise_std: std of the Gaussian noise `reward` adds (normalised units).
    """

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        k: int = 2,
        noise_std: float = 0.0,
        validate: bool = True,
    ) -> None:
        num = len(space.decisions)
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < num:
            raise NasSearchError(f"NK landscape: k must be an integer in 0..{num - 1}, got {k!r}")
        if noise_std < 0:
            raise NasSearchError(f"NK landscape: noise_std must be >= 0, got {noise_std}")
        self.space = space
        self.seed = seed
        self.k = k
        self.noise_std = float(noise_std)
        self.validate = validate
        rng = np.random.default_rng(np.random.SeedSequence([seed, _SALT]))
        others = [
            rng.choice(np.delete(np.arange(num), i), size=k, replace=False) for i in range(num)
        ]
        # Row i: decision i, then its k neighbours.
        self.members = np.array([[i, *sorted(o)] for i, o in enumerate(others)], dtype=np.int64)
        self.target = space.sample_actions(rng)
        width = max(d.num_choices for d in space.decisions)
        self._radix = width ** np.arange(k + 1, dtype=np.int64)  # choices -> one integer per term
        self._base = np.arange(num, dtype=np.uint64) * np.uint64(width ** (k + 1))
        self._key = _splitmix64(np.array([seed ^ _SALT], dtype=np.uint64))[0]
        self._target_codes = self._codes(self.target)

    def _codes(self, actions: Sequence[int]) -> np.ndarray:
        a = np.asarray(actions, dtype=np.int64)
        return (a[self.members] * self._radix).sum(axis=1)

    def clean(self, actions: Sequence[int]) -> float:
        """Noise-free reward in [0, 1] (1 exactly at the planted optimum)."""
        if self.validate:
            self.space.validate_actions([int(x) for x in actions])
        codes = self._codes(actions)
        hashed = _splitmix64((self._base + codes.astype(np.uint64)) ^ self._key)
        values = (hashed >> np.uint64(11)).astype(np.float64) / float(1 << 53)  # U[0, 1)
        values[codes == self._target_codes] = 1.0
        return float(values.mean())

    def reward(self, actions: Sequence[int], rng: np.random.Generator | None = None) -> float:
        """The clean reward plus N(0, noise_std^2) noise drawn from `rng` (no noise without one)."""
        value = self.clean(actions)
        if rng is not None and self.noise_std > 0:
            value += float(rng.normal(0.0, self.noise_std))
        return value

    def optimum(self) -> tuple[float, list[int]]:
        """The best clean reward (1.0) and the legal action sequence that attains it."""
        return self.clean(self.target), list(self.target)
