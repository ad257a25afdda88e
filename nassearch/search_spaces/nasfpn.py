"""NAS-FPN search space (Ghiasi, Lin, Le, CVPR 2019): merging cells over a growing feature pool.

A pyramid starts with a pool of five features P3..P7 (pool entries 0..4). Each merging cell reads
two distinct pool entries, resamples both to its output level, merges them with a parameter-free
binary op (`sum` or `global_pool`) and appends the result (cell k, 0-based, is entry 5 + k). The
last five cells are the outputs; their levels are a permutation of 3..7 chosen by the controller.

Controller layout: every cell is four decisions, in the paper's step order (input, input,
resolution, op): `cellN.input1`, `cellN.input2` (kind `input`), `cellN.level` (kind `level`, over
`intermediate_levels`) or, for output cells, `cellN.output_level` (kind `output_level`, five choices
= levels 3..7, masked to the levels no earlier output cell took), then `cellN.op` (kind
`binary_op`). Cells are numbered from 1 for humans (`cell1` is pool entry 5).

`global_pool` is asymmetric: the input whose pool entry has the higher level is the "coarse" one
(this is decided by the levels, not by input order, as in Google's code); when both inputs have the
same level, the entry with the smaller pool index is the coarse one. So the op is order-free and
`key()` sorts the inputs of every cell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from nassearch.errors import NasSearchError
from nassearch.search_spaces.base import Decision, Genotype, SearchSpace
from nassearch.search_spaces.registry import register_space

__all__ = [
    "FPN",
    "PAPER",
    "NASFPNCell",
    "NASFPNGenotype",
    "NASFPNSpace",
]

LEVELS = (3, 4, 5, 6, 7)  # pool entries 0..4 are the input pyramid P3..P7
NUM_INPUTS = len(LEVELS)
NUM_OUTPUTS = len(LEVELS)  # the last 5 cells, one per level
OPS = ("sum", "global_pool")
MAX_CELLS = 64  # the paper's pyramid has 7; far more cells no longer build in memory
STYLES = ("tensorflow", "mmdet")


class NASFPNCell(NamedTuple):
    """One merging cell: two pool indices, the output level (3..7) and the binary op name."""

    input1: int
    input2: int
    level: int
    op: str


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class NASFPNGenotype(Genotype):
    """A NAS-FPN pyramid: merging cells in order; the last five are the outputs P3..P7 in some order.

    Construction validates everything that does not depend on the space options (cell count >= 5,
    input indices, ops, levels, output permutation); `NASFPNSpace` adds its own cell count and
    intermediate-level checks.
    """

    space: ClassVar[str] = "nasfpn"
    cells: tuple[NASFPNCell, ...]

    def __post_init__(self) -> None:
        cells = tuple(NASFPNCell(*cell) for cell in self.cells)
        object.__setattr__(self, "cells", cells)
        if len(cells) < NUM_OUTPUTS:
            raise NasSearchError(
                f"nasfpn genotype: needs at least {NUM_OUTPUTS} cells (the last "
                f"{NUM_OUTPUTS} are the outputs), got {len(cells)}"
            )
        for k, cell in enumerate(cells):
            _check_cell(k, cell)
        if sorted(self.output_levels) != list(LEVELS):
            first = len(cells) - NUM_OUTPUTS + 1
            raise NasSearchError(
                f"nasfpn genotype: output cells {first}..{len(cells)} have levels "
                f"{list(self.output_levels)}, which is not a permutation of 3..7"
            )

    @property
    def output_levels(self) -> tuple[int, ...]:
        """Levels of the last five cells, in cell order (a permutation of 3..7)."""
        return tuple(cell.level for cell in self.cells[-NUM_OUTPUTS:])

    @property
    def num_intermediate(self) -> int:
        return len(self.cells) - NUM_OUTPUTS

    def pool_levels(self) -> list[int]:
        """Level of every pool entry: the five inputs, then one entry per cell."""
        return list(LEVELS) + [cell.level for cell in self.cells]

    def unused_additions(self) -> list[tuple[int, ...]]:
        """Per cell, the pool entries summed in by the "unused layer" rule (NASNet, paper Sec. 3).

        When an output cell is built, every earlier entry at its level that no cell has read yet
        is added to the merged feature before ReLU-conv-BN (this is how input P5 and P7 enter
        the paper's architecture). Intermediate cells add nothing.
        """
        levels = self.pool_levels()
        consumed = [False] * len(levels)
        additions: list[tuple[int, ...]] = []
        for k, cell in enumerate(self.cells):
            consumed[cell.input1] = consumed[cell.input2] = True
            added: tuple[int, ...] = ()
            if k >= self.num_intermediate:
                added = tuple(
                    j for j in range(NUM_INPUTS + k) if not consumed[j] and levels[j] == cell.level
                )
                for j in added:
                    consumed[j] = True
            additions.append(added)
        return additions

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "cells": [
                {"inputs": [c.input1, c.input2], "level": c.level, "op": c.op} for c in self.cells
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NASFPNGenotype:
        cells = cls.cells_from_dict(data)
        return cls(tuple(_cell_from_dict(n, cell) for n, cell in enumerate(cells, start=1)))

    @classmethod
    def cells_from_dict(cls, data: dict[str, Any]) -> list[Any]:
        """The raw `cells` list of a genotype dict, after checking the keys around it."""
        if not isinstance(data, dict):
            raise NasSearchError(
                f"nasfpn genotype must be a mapping with a 'cells' list, got {type(data).__name__}"
            )
        unknown = sorted(set(data) - {"space", "cells"})
        if unknown:
            raise NasSearchError(f"nasfpn genotype: unknown key {unknown[0]!r}")
        if data.get("space", cls.space) != cls.space:
            raise NasSearchError(f"nasfpn genotype: space {data['space']!r} is not 'nasfpn'")
        cells = data.get("cells")
        if not isinstance(cells, (list, tuple)):
            raise NasSearchError(
                f"nasfpn genotype: 'cells' must be a list of cells, got {type(cells).__name__}"
            )
        return list(cells)

    def canonical(self) -> Any:
        # Both ops are order-free in our definition (see the module docstring), so sort inputs.
        return {
            "space": self.space,
            "cells": [[*sorted((c.input1, c.input2)), c.level, c.op] for c in self.cells],
        }


def _cell_from_dict(n: int, cell: Any) -> NASFPNCell:
    """Parse cell number `n` (1-based) of a genotype dict; types only, values are checked later."""
    if not isinstance(cell, dict):
        raise NasSearchError(f"nasfpn genotype: cell {n} must be a mapping, got {cell!r}")
    unknown = sorted(set(cell) - {"inputs", "level", "op"})
    if unknown:
        raise NasSearchError(f"nasfpn genotype: cell {n} has unknown key {unknown[0]!r}")
    inputs = cell.get("inputs")
    if (
        not isinstance(inputs, (list, tuple))
        or len(inputs) != 2
        or not all(_is_int(i) for i in inputs)
    ):
        raise NasSearchError(
            f"nasfpn genotype: cell {n} inputs must be two pool indices, got {inputs!r}"
        )
    level = cell.get("level")
    if not _is_int(level):
        raise NasSearchError(f"nasfpn genotype: cell {n} level must be an integer, got {level!r}")
    op = cell.get("op")
    if not isinstance(op, str):
        raise NasSearchError(f"nasfpn genotype: cell {n} op must be a string, got {op!r}")
    return NASFPNCell(inputs[0], inputs[1], level, op)


def _check_cell(k: int, cell: NASFPNCell) -> None:
    """Validate cell `k` (0-based; named k + 1) against the pool that exists when it runs."""
    n, pool = k + 1, NUM_INPUTS + k
    for name, index in (("input1", cell.input1), ("input2", cell.input2)):
        if not _is_int(index) or not 0 <= index < pool:
            raise NasSearchError(
                f"nasfpn genotype: cell {n} {name} = {index!r} is not an existing pool entry "
                f"(cell {n} may read 0..{pool - 1})"
            )
    if cell.input1 == cell.input2:
        raise NasSearchError(
            f"nasfpn genotype: cell {n} reads pool entry {cell.input1} twice (inputs must differ)"
        )
    if not _is_int(cell.level) or cell.level not in LEVELS:
        raise NasSearchError(f"nasfpn genotype: cell {n} level {cell.level!r} is outside 3..7")
    if cell.op not in OPS:
        raise NasSearchError(
            f"nasfpn genotype: cell {n} op {cell.op!r} is unknown (expected one of {', '.join(OPS)})"
        )


# Paper Fig. 6 (= tensorflow/tpu block specs): P3, P4, P5, P6, P7 are entries 0..4.
PAPER = NASFPNGenotype(
    (
        NASFPNCell(3, 1, 4, "global_pool"),  # cell1 -> 5 = P4_1 = GP(P6, P4)
        NASFPNCell(5, 1, 4, "sum"),  # cell2 -> 6 = P4_2 = P4_1 + P4
        NASFPNCell(6, 0, 3, "sum"),  # cell3 -> 7 = P3_out = P4_2 + P3
        NASFPNCell(6, 7, 4, "sum"),  # cell4 -> 8 = P4_out = P4_2 + P3_out
        NASFPNCell(7, 8, 5, "global_pool"),  # cell5 -> 9 = P5_out (+ unused input P5)
        NASFPNCell(6, 9, 7, "global_pool"),  # cell6 -> 10 = P7_out (+ unused input P7)
        NASFPNCell(9, 10, 6, "global_pool"),  # cell7 -> 11 = P6_out
    )
)

# Plain top-down FPN (paper Fig. 7a) as closely as 2 intermediate + 5 output sum cells allow:
# the top-down path P7 -> P6_td -> P5_td -> P4_out -> P3_out, and P5/P6/P7 outputs of the FPN
# form ReLU-conv-BN(lateral + upsampled coarser). Differences from the hand-made FPN: every merge
# (also on the top-down path) has its own ReLU-conv-BN; P4_out feeds P3 after its conv; P6/P7 are
# not stride-2 convs of C5 but the max-pooled inputs, and a cell needs two inputs, so the P7 output
# is ReLU-conv-BN(P7 + maxpool(P6)) (one bottom-up edge) and the P6 output repeats cell1's merge.
FPN = NASFPNGenotype(
    (
        NASFPNCell(4, 3, 6, "sum"),  # cell1 -> 5 = P6_td = P7 + P6
        NASFPNCell(5, 2, 5, "sum"),  # cell2 -> 6 = P5_td = P6_td + P5
        NASFPNCell(6, 1, 4, "sum"),  # cell3 -> 7 = P4_out = P5_td + P4
        NASFPNCell(7, 0, 3, "sum"),  # cell4 -> 8 = P3_out = P4_out + P3
        NASFPNCell(5, 2, 5, "sum"),  # cell5 -> 9 = P5_out = P6_td + P5
        NASFPNCell(4, 3, 6, "sum"),  # cell6 -> 10 = P6_out = P7 + P6
        NASFPNCell(4, 3, 7, "sum"),  # cell7 -> 11 = P7_out = P7 + P6 (downsampled)
    )
)


@register_space
class NASFPNSpace(SearchSpace):
    """The NAS-FPN cell search space: `num_cells` merging cells, the last five being the outputs."""

    name: ClassVar[str] = "nasfpn"

    @classmethod
    def options_from_genotype(cls, data: dict[str, Any]) -> dict[str, Any]:
        cells = data.get("cells")
        return {"num_cells": len(cells)} if isinstance(cells, list) and cells else {}

    def __init__(
        self, num_cells: int = 7, intermediate_levels: Sequence[int] = (4, 5, 6, 7)
    ) -> None:
        if not _is_int(num_cells) or not NUM_OUTPUTS <= num_cells <= MAX_CELLS:
            raise NasSearchError(
                f"nasfpn num_cells must be an integer from {NUM_OUTPUTS} to {MAX_CELLS}, "
                f"got {num_cells!r}"
            )
        levels = tuple(intermediate_levels)
        if (
            not levels
            or len(set(levels)) != len(levels)
            or not all(_is_int(v) and v in LEVELS for v in levels)
        ):
            raise NasSearchError(
                f"nasfpn intermediate_levels must be distinct levels from 3..7, got {list(levels)}"
            )
        self.num_cells = num_cells
        self.intermediate_levels = tuple(sorted(levels))
        self.num_intermediate = num_cells - NUM_OUTPUTS
        self._decisions = self._make_decisions()

    def _make_decisions(self) -> list[Decision]:
        max_pool = NUM_INPUTS + self.num_cells - 1  # pool size seen by the last cell
        out: list[Decision] = []
        for k in range(self.num_cells):
            n = k + 1
            out.append(Decision(f"cell{n}.input1", "input", max_pool))
            out.append(Decision(f"cell{n}.input2", "input", max_pool))
            if k < self.num_intermediate:
                out.append(Decision(f"cell{n}.level", "level", len(self.intermediate_levels)))
            else:
                out.append(Decision(f"cell{n}.output_level", "output_level", len(LEVELS)))
            out.append(Decision(f"cell{n}.op", "binary_op", len(OPS)))
        return out

    @property
    def decisions(self) -> list[Decision]:
        return list(self._decisions)

    def mask(self, prefix: Sequence[int]) -> list[bool]:
        position = len(prefix)
        if position >= len(self._decisions):
            raise NasSearchError(
                f"space nasfpn: no decision after {position} actions "
                f"(the space has {len(self._decisions)})"
            )
        num_choices = self._decisions[position].num_choices
        k, slot = divmod(position, 4)
        pool = NUM_INPUTS + k
        if slot == 0:
            return [i < pool for i in range(num_choices)]
        if slot == 1:
            return [i < pool and i != prefix[-1] for i in range(num_choices)]
        if slot == 2 and k >= self.num_intermediate:
            used = {prefix[4 * j + 2] for j in range(self.num_intermediate, k)}
            return [i not in used for i in range(num_choices)]
        return [True] * num_choices

    def decode(self, actions: Sequence[int]) -> NASFPNGenotype:
        self.validate_actions(actions)
        cells = []
        for k in range(self.num_cells):
            a, b, level, op = (int(v) for v in actions[4 * k : 4 * k + 4])
            level = self.intermediate_levels[level] if k < self.num_intermediate else LEVELS[level]
            cells.append(NASFPNCell(a, b, level, OPS[op]))
        return NASFPNGenotype(tuple(cells))

    def encode(self, genotype: Genotype) -> list[int]:
        genotype = self._check_fits(genotype)
        actions: list[int] = []
        for k, cell in enumerate(genotype.cells):
            levels = self.intermediate_levels if k < self.num_intermediate else LEVELS
            actions += [cell.input1, cell.input2, levels.index(cell.level), OPS.index(cell.op)]
        return actions

    def genotype_from_dict(self, data: dict[str, Any]) -> NASFPNGenotype:
        cells = NASFPNGenotype.cells_from_dict(data)
        if len(cells) != self.num_cells:
            # Checked first: a missing or extra cell would otherwise surface as a confusing
            # index or output-permutation error.
            raise NasSearchError(
                f"nasfpn genotype: expected {self.num_cells} cells, got {len(cells)}"
            )
        return self._check_fits(NASFPNGenotype.from_dict(data))

    def _check_fits(self, genotype: Genotype) -> NASFPNGenotype:
        """Check a structurally valid genotype against this space's cell count and levels."""
        if not isinstance(genotype, NASFPNGenotype):
            raise NasSearchError(
                f"space nasfpn: expected a nasfpn genotype, got {type(genotype).__name__}"
            )
        if len(genotype.cells) != self.num_cells:
            raise NasSearchError(
                f"nasfpn genotype: expected {self.num_cells} cells, got {len(genotype.cells)}"
            )
        for k, cell in enumerate(genotype.cells[: self.num_intermediate]):
            if cell.level not in self.intermediate_levels:
                raise NasSearchError(
                    f"nasfpn genotype: cell {k + 1} level {cell.level} is not an allowed "
                    f"intermediate level {list(self.intermediate_levels)}"
                )
        return genotype

    def size(self) -> int:
        """Legal action sequences: ordered distinct input pairs x level x op per cell, x 5! orders."""
        total = math.factorial(NUM_OUTPUTS) * len(OPS) ** self.num_cells
        total *= len(self.intermediate_levels) ** self.num_intermediate
        for k in range(self.num_cells):
            total *= (NUM_INPUTS + k) * (NUM_INPUTS + k - 1)
        return total
