"""What every search space is: a fixed-length sequence of masked categorical decisions.

A controller sees a space only through this interface (decisions, mask, decode/encode), so one
policy works for NAS-FPN, NAS-FCOS or any later space without space-specific code. Decisions of
the same `kind` share one softmax head in the controller and therefore have the same
`num_choices`; `mask(prefix)` narrows each one to the choices that are legal after `prefix`
(e.g. a cell may only pick inputs that already exist in the pool).
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from nassearch.errors import NasSearchError


@dataclass(frozen=True)
class Decision:
    """One categorical choice: `name` for humans (`cell3.input1`), `kind` selects the controller head."""

    name: str
    kind: str
    num_choices: int


def approx_count(n: int) -> str:
    """`n` to 3 significant digits, for counts beyond a float's range too (`1.23e+4567`)."""
    if n < 10**15:
        return f"{n:.3g}"
    exponent = int(math.log10(n))
    mantissa = n / 10**exponent if exponent < 300 else 10 ** (math.log10(n) - exponent)
    if mantissa >= 9.995:
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:.2f}e+{exponent}"


class Genotype(ABC):
    """An architecture as plain data. Subclasses are frozen dataclasses.

    `to_dict()` gives only plain YAML/JSON types (and includes the space name); `key()` is a hash
    of `canonical()`, which must be equal for two genotypes that build the same network (e.g. the
    inputs of a commutative op listed in either order).
    """

    space: ClassVar[str]

    @abstractmethod
    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict[str, Any]) -> Genotype: ...

    def canonical(self) -> Any:
        """Plain data equal for equivalent genotypes; defaults to `to_dict()`."""
        return self.to_dict()

    def key(self) -> str:
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class SearchSpace(ABC):
    """A fixed-length sequence of decisions with legality masks; what they decode to is a Genotype.

    The modules a genotype names are built elsewhere (`detectors/necks/`, registered under the
    space's `name`), so a space is pure description and imports no torch.
    """

    name: ClassVar[str]

    @classmethod
    def options_from_genotype(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Space options a genotype mapping implies (e.g. its number of cells), so that a genotype
        of a reduced space parses without the search config that made it."""
        return {}

    @property
    @abstractmethod
    def decisions(self) -> list[Decision]: ...

    @abstractmethod
    def mask(self, prefix: Sequence[int]) -> list[bool]:
        """Legal choices of decision `len(prefix)` given the earlier ones (True = allowed)."""

    @abstractmethod
    def decode(self, actions: Sequence[int]) -> Genotype:
        """Turn a complete legal action sequence into a genotype (NasSearchError if illegal)."""

    @abstractmethod
    def encode(self, genotype: Genotype) -> list[int]:
        """Exact inverse of `decode` (NasSearchError if the genotype is not in this space)."""

    @abstractmethod
    def genotype_from_dict(self, data: dict[str, Any]) -> Genotype:
        """Parse and validate a user-supplied genotype (one-line NasSearchError naming what is wrong)."""

    @abstractmethod
    def size(self) -> int:
        """Number of legal action sequences (exact when `size_is_exact`, otherwise an upper bound)."""

    size_is_exact: ClassVar[bool] = True

    def kinds(self) -> dict[str, int]:
        """Decision kinds and their choice counts, in first-appearance order (one controller head each)."""
        out: dict[str, int] = {}
        for d in self.decisions:
            if out.setdefault(d.kind, d.num_choices) != d.num_choices:
                raise NasSearchError(
                    f"space {self.name}: decisions of kind {d.kind!r} disagree on num_choices"
                )
        return out

    def validate_actions(self, actions: Sequence[int]) -> None:
        """Check length, range and every mask; raise a one-line NasSearchError at the first problem."""
        decisions = self.decisions
        if len(actions) != len(decisions):
            raise NasSearchError(
                f"space {self.name}: expected {len(decisions)} actions, got {len(actions)}"
            )
        for i, (decision, action) in enumerate(zip(decisions, actions, strict=True)):
            if not isinstance(action, (int, np.integer)) or not 0 <= action < decision.num_choices:
                raise NasSearchError(
                    f"space {self.name}: {decision.name} = {action!r} is out of range "
                    f"0..{decision.num_choices - 1}"
                )
            if not self.mask(actions[:i])[action]:
                raise NasSearchError(
                    f"space {self.name}: {decision.name} = {action} is not allowed here"
                )

    def sample_actions(self, rng: np.random.Generator) -> list[int]:
        """Uniform choice among the legal options at every step (not uniform over architectures)."""
        actions: list[int] = []
        for _ in self.decisions:
            legal = np.flatnonzero(self.mask(actions))
            actions.append(int(rng.choice(legal)))
        return actions

    def sample(self, rng: np.random.Generator) -> Genotype:
        return self.decode(self.sample_actions(rng))
