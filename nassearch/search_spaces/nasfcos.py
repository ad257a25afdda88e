"""NAS-FCOS search space (Wang et al., CVPR 2020): a searched FPN decoder and a searched FCOS head.

FPN (Sec. 3.2 of the paper, `MicroDecoder_v2` of the released code): a pool starts with the backbone
maps C2..C5 (pool indices 0..3), each adapted to `out_channels` by 1x1 conv (no bias) + norm + ReLU;
cell k appends pool entry 4+k. A cell is 5 tokens [in1, in2, op1, op2, agg]: each op runs at its
input's own resolution, the smaller result is upsampled to the larger (the cell's stride is the finer
of its inputs) and the two are aggregated (`psum` or `cat`). Inputs may repeat (the released genotype
reads C5 twice).

Output rule: leaves = cell outputs no later cell consumes; the last three leaves become P5, P4, P3
(oldest -> P5); every other leaf is bilinearly resized to each of them and added; each sum is then
bilinearly resized to the size of C5 / C4 / C3 (this may downsample: the released P4 is a stride-8
map). P6 = conv3x3/s2(P5), P7 = conv3x3/s2(ReLU(P6)), both with bias and no norm.

Fewer than 3 leaves cannot be assembled, and the released code rejects such samples (`judge()`).
Here they are *masked, not rejected*: `mask()` forbids an input choice exactly when it makes 3 leaves
unreachable. After a choice, leaves still reachable = num_cells - (cells consumed so far), because
every remaining cell adds one leaf and can avoid consuming anything by reading backbone maps; a
choice is legal iff that number is >= 3. So every mask-legal action sequence decodes to a buildable
network, and `size()` counts exactly those sequences.

Head (`MicroHead_v2`): 6 sequential channel-preserving layers from `HEAD_OPS` (GN + ReLU after every
op but `skip_connect`), the same op list for the classification and regression branches with separate
weights; a share index s in 0..6: layers before s get one copy per level, layers from s on are shared
across levels. Predictors as FCOS: 3x3 convs (class bias from prior 0.01), box distances through a
per-level Scale and exp, centerness on the classification branch.

Where biases and norms sit (see `detectors/ops/nasfcos_ops.py`) is fixed by mmdetection's parameter counts, which PAPER
reproduces exactly: `NASFCOS_FPN` 10,690,696 (256 ch, C3-C5 of ResNet-50) and `NASFCOSHead`
4,368,946 (80 classes): DCNv2 ops carry a bias and a norm, plain/separable convs only a norm.

Decisions: part "fpn" = 5 per cell (`input` x2 with 4+num_cells-1 choices masked to the pool,
`op` x2 with 5, `agg` with 2), stock FCOS head; part "head" = `head_op` x6 (6 choices) then `share`
(7) with a fixed FPN (option `fpn`, default PAPER's): the progressive search of the paper; part
"both" = FPN decisions then head decisions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from nassearch.errors import NasSearchError
from nassearch.search_spaces.base import Decision, Genotype, SearchSpace
from nassearch.search_spaces.registry import register_space

# Op vocabularies in the released code's order (`nas/rl/genotypes.py`), so the released
# genotypes' integer indices decode to the same network.
FPN_OPS = ("sep_conv_3x3", "sep_conv_3x3_dil3", "sep_conv_5x5_dil6", "skip_connect", "def_conv_3x3")
AGG_OPS = ("psum", "cat")
HEAD_OPS = (
    "conv1x1",
    "conv3x3",
    "sep_conv_3x3",
    "sep_conv_3x3_dil3",
    "skip_connect",
    "def_conv_3x3",
)
NORMS = ("bn", "gn")
UPSAMPLE_MODES = ("bilinear", "nearest")
NUM_BACKBONE = 4  # C2, C3, C4, C5 at pool indices 0..3
BACKBONE_NAMES = ("C2", "C3", "C4", "C5")
BACKBONE_STRIDES = (4, 8, 16, 32)
NUM_CELLS = 7
MAX_CELLS = 64  # the released decoder has 7; far more cells no longer build in memory
NUM_HEAD_LAYERS = 6
MIN_LEAVES = 3
PARTS = ("fpn", "head", "both")

Cell = tuple[int, int, str, str, str]


def _err(msg: str) -> NasSearchError:
    return NasSearchError(f"nasfcos genotype: {msg}")


def _op_name(value: Any, vocabulary: tuple[str, ...], where: str) -> str:
    """An op given by name or by its index in `vocabulary` (the released genotypes use indices)."""
    if isinstance(value, bool):
        raise _err(f"{where} = {value!r} is not an op (use one of {', '.join(vocabulary)})")
    if isinstance(value, int):
        if 0 <= value < len(vocabulary):
            return vocabulary[value]
        raise _err(f"{where} = {value} is out of range 0..{len(vocabulary) - 1}")
    if isinstance(value, str) and value in vocabulary:
        return value
    raise _err(f"{where} = {value!r} is unknown (use one of {', '.join(vocabulary)})")


def _parse_cell(cell: Any, k: int) -> Cell:
    """Validate cell k: two pool indices < 4+k, two FPN ops, one aggregation."""
    if isinstance(cell, (str, bytes)) or not isinstance(cell, Sequence) or len(cell) != 5:
        raise _err(f"fpn cell {k} = {cell!r} must be 5 values [in1, in2, op1, op2, agg]")
    inputs = []
    for slot, value in zip(("input1", "input2"), cell[:2], strict=True):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _err(f"fpn cell {k} {slot} = {value!r} must be an integer pool index")
        if not 0 <= value < NUM_BACKBONE + k:
            raise _err(
                f"fpn cell {k} {slot} = {value} is out of range 0..{NUM_BACKBONE + k - 1} "
                f"(C2..C5 and the {k} earlier cells)"
            )
        inputs.append(int(value))
    op1 = _op_name(cell[2], FPN_OPS, f"fpn cell {k} op1")
    op2 = _op_name(cell[3], FPN_OPS, f"fpn cell {k} op2")
    agg = _op_name(cell[4], AGG_OPS, f"fpn cell {k} agg")
    return (inputs[0], inputs[1], op1, op2, agg)


def fpn_leaves(cells: Sequence[Sequence[Any]]) -> list[int]:
    """Pool indices of the cell outputs that no later cell reads, in creation order."""
    consumed = {i for cell in cells for i in cell[:2]}
    return [NUM_BACKBONE + k for k in range(len(cells)) if NUM_BACKBONE + k not in consumed]


def cell_strides(cells: Sequence[Sequence[Any]]) -> list[int]:
    """Output stride of every cell: the finer of its two inputs'."""
    strides = list(BACKBONE_STRIDES)
    for cell in cells:
        strides.append(min(strides[cell[0]], strides[cell[1]]))
    return strides[NUM_BACKBONE:]


@dataclass(frozen=True)
class HeadGenotype:
    """The searched head: one op name per layer (6) and the share index s (layers >= s shared)."""

    ops: tuple[str, ...]
    share: int

    def __post_init__(self) -> None:
        ops = self.ops
        if isinstance(ops, (str, bytes)) or not isinstance(ops, Sequence):
            raise _err(f"head ops = {ops!r} must be a list of {NUM_HEAD_LAYERS} ops")
        if len(ops) != NUM_HEAD_LAYERS:
            raise _err(f"head ops has {len(ops)} entries, expected {NUM_HEAD_LAYERS}")
        names = tuple(_op_name(op, HEAD_OPS, f"head op {i}") for i, op in enumerate(ops))
        share = self.share
        if isinstance(share, bool) or not isinstance(share, int):
            raise _err(f"head share = {share!r} must be an integer 0..{NUM_HEAD_LAYERS}")
        if not 0 <= share <= NUM_HEAD_LAYERS:
            raise _err(f"head share = {share} is out of range 0..{NUM_HEAD_LAYERS}")
        object.__setattr__(self, "ops", names)
        object.__setattr__(self, "share", int(share))

    def canonical(self) -> list[list[Any]]:
        """Non-skip layers with whether they are per-level: skips are identities wherever they sit."""
        return [[op, i < self.share] for i, op in enumerate(self.ops) if op != "skip_connect"]


@dataclass(frozen=True)
class NASFCOSGenotype(Genotype):
    """A NAS-FCOS decoder: FPN cells (None = not given) and head (None = stock 4-conv FCOS head).

    Cells are stored as (in1, in2, op1, op2, agg) with op names; integer ops (the released
    genotype's encoding) are converted on construction. Construction validates everything
    (pool indices, op names, >= 3 leaves) and raises a one-line NasSearchError.
    """

    space: ClassVar[str] = "nasfcos"
    fpn: tuple[Cell, ...] | None = None
    head: HeadGenotype | None = field(default=None)

    def __post_init__(self) -> None:
        fpn = self.fpn
        if fpn is not None:
            if isinstance(fpn, (str, bytes)) or not isinstance(fpn, Sequence):
                raise _err(f"fpn = {fpn!r} must be a list of cells")
            if len(fpn) < MIN_LEAVES:
                raise _err(f"fpn has {len(fpn)} cells, at least {MIN_LEAVES} are needed")
            cells = tuple(_parse_cell(cell, k) for k, cell in enumerate(fpn))
            leaves = fpn_leaves(cells)
            if len(leaves) < MIN_LEAVES:
                raise _err(
                    f"fpn has {len(leaves)} leaf cell(s) {[i - NUM_BACKBONE for i in leaves]} "
                    f"(outputs no later cell reads); P3-P5 need at least {MIN_LEAVES}"
                )
            object.__setattr__(self, "fpn", cells)
        head = self.head
        if head is not None and not isinstance(head, HeadGenotype):
            if not isinstance(head, dict) or set(head) != {"ops", "share"}:
                raise _err(f"head = {head!r} must be a mapping with keys ops and share")
            object.__setattr__(self, "head", HeadGenotype(head["ops"], head["share"]))

    def to_dict(self) -> dict[str, Any]:
        fpn = None if self.fpn is None else [list(cell) for cell in self.fpn]
        head = None if self.head is None else {"ops": list(self.head.ops), "share": self.head.share}
        return {"space": self.space, "fpn": fpn, "head": head}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NASFCOSGenotype:
        if not isinstance(data, dict):
            raise _err(f"expected a mapping with fpn and head, got {data!r}")
        if data.get("space", cls.space) != cls.space:
            raise _err(f"space = {data['space']!r}, expected {cls.space!r}")
        unknown = sorted(set(data) - {"space", "fpn", "head"})
        if unknown:
            raise _err(f"unknown key(s) {', '.join(map(str, unknown))} (expected fpn, head)")
        return cls(fpn=data.get("fpn"), head=data.get("head"))

    def canonical(self) -> dict[str, Any]:
        """Both aggregations are commutative, so each cell's (input, op) pairs are sorted.

        Exact for psum; for cat the swap permutes the cell's output channels (a half swap that
        downstream convs and cat pairings absorb), which is treated as the same architecture.
        """
        fpn = None
        if self.fpn is not None:
            fpn = [sorted([[in1, op1], [in2, op2]]) + [agg] for in1, in2, op1, op2, agg in self.fpn]
        head = None if self.head is None else self.head.canonical()
        return {"space": self.space, "fpn": fpn, "head": head}

    def leaves(self) -> list[int]:
        """Pool indices of the FPN's leaf cells (the last three feed P5, P4, P3)."""
        return fpn_leaves(self.fpn or ())


# Released genotype (`configs/search/R_50_NAS_head.yaml`), pool indices 0=C2 .. 3=C5, cells from 4.
_PAPER_CELLS = (
    (3, 3, 4, 4, 1),
    (3, 3, 4, 4, 1),
    (4, 3, 4, 3, 1),
    (1, 3, 4, 3, 1),
    (5, 3, 4, 4, 1),
    (4, 7, 4, 4, 1),
    (7, 2, 4, 4, 1),
)
PAPER = NASFCOSGenotype(fpn=_PAPER_CELLS, head=HeadGenotype((5, 1, 5, 0, 4, 4), 0))
PAPER_FPN_ONLY = NASFCOSGenotype(fpn=_PAPER_CELLS)


# ----------------------------------------------------------------------------------- space


def _coerce_fpn(value: Any) -> tuple[Cell, ...]:
    """The fixed FPN of part 'head' from a genotype, a genotype mapping or a list of cells."""
    if isinstance(value, NASFCOSGenotype):
        cells = value.fpn
    elif isinstance(value, dict):
        cells = NASFCOSGenotype.from_dict(value).fpn
    else:
        cells = NASFCOSGenotype(fpn=value).fpn
    if cells is None:
        raise NasSearchError("nasfcos space: option fpn has no FPN cells")
    return cells


@register_space
class NASFCOSSpace(SearchSpace):
    """NAS-FCOS decisions (FPN cells, head ops + share) with leaf-count masking; see module docs.

    Options: `part` ('fpn', 'head', 'both'); `num_cells` (7; smaller values give reduced spaces);
    `fpn`: the fixed FPN for part 'head' (PAPER's by default).
    """

    name: ClassVar[str] = "nasfcos"

    @classmethod
    def options_from_genotype(cls, data: dict[str, Any]) -> dict[str, Any]:
        cells = data.get("fpn")
        return {"num_cells": len(cells)} if isinstance(cells, list) and cells else {}

    def __init__(self, part: str = "both", num_cells: int | None = None, fpn: Any = None) -> None:
        if part not in PARTS:
            raise NasSearchError(f"nasfcos space: part={part!r} (use one of {', '.join(PARTS)})")
        self.part = part
        self.fixed_fpn: tuple[Cell, ...] | None = None
        if part == "head":
            self.fixed_fpn = _coerce_fpn(_PAPER_CELLS if fpn is None else fpn)
            if num_cells is not None and num_cells != len(self.fixed_fpn):
                raise NasSearchError(
                    f"nasfcos space: num_cells={num_cells} but the fixed fpn has "
                    f"{len(self.fixed_fpn)} cells"
                )
            num_cells = len(self.fixed_fpn)
        elif fpn is not None:
            raise NasSearchError(
                f"nasfcos space: option fpn is only used with part 'head' ({part})"
            )
        num_cells = NUM_CELLS if num_cells is None else num_cells
        if (
            isinstance(num_cells, bool)
            or not isinstance(num_cells, int)
            or not MIN_LEAVES <= num_cells <= MAX_CELLS
        ):
            raise NasSearchError(
                f"nasfcos space: num_cells={num_cells!r} must be an integer from {MIN_LEAVES} "
                f"to {MAX_CELLS}"
            )
        self.num_cells = num_cells
        self.searches_fpn = part in ("fpn", "both")
        self.searches_head = part in ("head", "both")
        self._decisions = self._make_decisions()

    def _make_decisions(self) -> list[Decision]:
        out: list[Decision] = []
        if self.searches_fpn:
            n_inputs = NUM_BACKBONE + self.num_cells - 1
            for k in range(self.num_cells):
                out += [
                    Decision(f"cell{k}.input1", "input", n_inputs),
                    Decision(f"cell{k}.input2", "input", n_inputs),
                    Decision(f"cell{k}.op1", "op", len(FPN_OPS)),
                    Decision(f"cell{k}.op2", "op", len(FPN_OPS)),
                    Decision(f"cell{k}.agg", "agg", len(AGG_OPS)),
                ]
        if self.searches_head:
            out += [
                Decision(f"head.op{i}", "head_op", len(HEAD_OPS)) for i in range(NUM_HEAD_LAYERS)
            ]
            out.append(Decision("head.share", "share", NUM_HEAD_LAYERS + 1))
        return out

    @property
    def decisions(self) -> list[Decision]:
        return list(self._decisions)

    @property
    def num_fpn_decisions(self) -> int:
        return 5 * self.num_cells if self.searches_fpn else 0

    def mask(self, prefix: Sequence[int]) -> list[bool]:
        i = len(prefix)
        if i >= len(self._decisions):
            raise NasSearchError(
                f"space nasfcos: prefix of {i} actions, the space has {len(self._decisions)} decisions"
            )
        decision = self._decisions[i]
        if i >= self.num_fpn_decisions or i % 5 >= 2:
            return [True] * decision.num_choices
        k = i // 5
        consumed = {
            int(a)
            for j, a in enumerate(prefix)
            if j % 5 < 2 and int(a) >= NUM_BACKBONE  # inputs that are cells
        }
        pool = NUM_BACKBONE + k
        mask = []
        for choice in range(decision.num_choices):
            after = len(consumed | {choice}) if choice >= NUM_BACKBONE else len(consumed)
            mask.append(choice < pool and self.num_cells - after >= MIN_LEAVES)
        return mask

    def decode(self, actions: Sequence[int]) -> NASFCOSGenotype:
        self.validate_actions(actions)
        actions = [int(a) for a in actions]
        if self.searches_fpn:
            fpn = tuple(
                (a[0], a[1], FPN_OPS[a[2]], FPN_OPS[a[3]], AGG_OPS[a[4]])
                for a in (actions[5 * k : 5 * k + 5] for k in range(self.num_cells))
            )
        else:
            fpn = self.fixed_fpn
        head = None
        if self.searches_head:
            tail = actions[self.num_fpn_decisions :]
            head = HeadGenotype(tuple(HEAD_OPS[a] for a in tail[:NUM_HEAD_LAYERS]), tail[-1])
        return NASFCOSGenotype(fpn=fpn, head=head)

    def encode(self, genotype: Genotype) -> list[int]:
        if not isinstance(genotype, NASFCOSGenotype):
            raise NasSearchError(f"space nasfcos: cannot encode a {type(genotype).__name__}")
        self._check_membership(genotype)
        actions: list[int] = []
        if self.searches_fpn:
            for in1, in2, op1, op2, agg in genotype.fpn:
                actions += [in1, in2, FPN_OPS.index(op1), FPN_OPS.index(op2), AGG_OPS.index(agg)]
        if self.searches_head:
            actions += [HEAD_OPS.index(op) for op in genotype.head.ops] + [genotype.head.share]
        self.validate_actions(actions)
        return actions

    def _check_membership(self, genotype: NASFCOSGenotype) -> None:
        """The decisions of this part must describe the genotype exactly (encode is decode's inverse)."""
        if genotype.fpn is None or len(genotype.fpn) != self.num_cells:
            n = "no" if genotype.fpn is None else len(genotype.fpn)
            raise NasSearchError(
                f"space nasfcos: genotype has {n} fpn cells, expected {self.num_cells}"
            )
        if self.part == "head" and genotype.fpn != self.fixed_fpn:
            raise NasSearchError(
                "space nasfcos: genotype's fpn differs from the fixed fpn of part 'head'"
            )
        if self.searches_head and genotype.head is None:
            raise NasSearchError(
                f"space nasfcos: part {self.part!r} needs a head, genotype has none"
            )
        if not self.searches_head and genotype.head is not None:
            raise NasSearchError(
                "space nasfcos: part 'fpn' uses the stock FCOS head, genotype has one"
            )

    def genotype_from_dict(self, data: dict[str, Any]) -> NASFCOSGenotype:
        """Parse a user genotype; head None = stock FCOS head; part 'head' fills a missing fpn."""
        genotype = NASFCOSGenotype.from_dict(data)
        if genotype.fpn is None:
            if self.fixed_fpn is None:
                raise _err("fpn is missing (a list of cells [in1, in2, op1, op2, agg])")
            genotype = replace(genotype, fpn=self.fixed_fpn)
        if len(genotype.fpn) != self.num_cells:
            raise _err(f"fpn has {len(genotype.fpn)} cells, this space has {self.num_cells}")
        return genotype

    def size(self) -> int:
        """Exact number of legal action sequences (dynamic programming over consumed cells)."""
        total = 1
        if self.searches_fpn:
            # counts[c] = input-choice sequences so far that consumed c distinct cells; a cell input
            # either keeps c (a backbone map or an already consumed cell) or consumes a new one.
            counts = {0: 1}
            for k in range(self.num_cells):
                for _ in range(2):
                    nxt: dict[int, int] = {}
                    for c, n in counts.items():
                        nxt[c] = nxt.get(c, 0) + n * (NUM_BACKBONE + c)
                        if k - c > 0:
                            nxt[c + 1] = nxt.get(c + 1, 0) + n * (k - c)
                    counts = nxt
            legal = sum(n for c, n in counts.items() if self.num_cells - c >= MIN_LEAVES)
            total *= legal * (len(FPN_OPS) ** 2 * len(AGG_OPS)) ** self.num_cells
        if self.searches_head:
            total *= len(HEAD_OPS) ** NUM_HEAD_LAYERS * (NUM_HEAD_LAYERS + 1)
        return total
