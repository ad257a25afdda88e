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

Where biases and norms sit (see `ops.py`) is fixed by mmdetection's parameter counts, which PAPER
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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nassearch.detectors.fcos import DEFAULT_STRIDES, FCOSHead, HeadOutputs, Scale
from nassearch.errors import NasSearchError
from nassearch.search_spaces.base import Decision, Genotype, SearchSpace
from nassearch.search_spaces.ops import (
    AGG_OPS,
    FPN_OPS,
    HEAD_OPS,
    UPSAMPLE_MODES,
    build_agg,
    build_fpn_op,
    build_head_op,
    norm_layer,
    resize,
)

NUM_BACKBONE = 4  # C2, C3, C4, C5 at pool indices 0..3
BACKBONE_NAMES = ("C2", "C3", "C4", "C5")
BACKBONE_STRIDES = (4, 8, 16, 32)
NUM_CELLS = 7
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


# ----------------------------------------------------------------------------------- modules


class NASFCOSCell(nn.Module):
    """op1(x), op2(y) at their own resolutions, upsample the smaller to the larger, aggregate."""

    def __init__(
        self,
        op1: str,
        op2: str,
        agg: str,
        channels: int,
        *,
        upsample: str = "bilinear",
        norm: str = "bn",
        gn_groups: int = 32,
    ) -> None:
        super().__init__()
        self.op1 = build_fpn_op(op1, channels, norm, gn_groups)
        self.op2 = build_fpn_op(op2, channels, norm, gn_groups)
        self.agg = build_agg(agg, channels, norm, gn_groups)
        self.upsample = upsample

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        a, b = self.op1(x), self.op2(y)
        if a.shape[-2] * a.shape[-1] >= b.shape[-2] * b.shape[-1]:
            b = resize(b, a.shape[-2:], self.upsample)
        else:
            a = resize(a, b.shape[-2:], self.upsample)
        return self.agg(a, b)


class NASFCOSNeck(nn.Module):
    """The searched FPN: adapt convs, cells over a growing pool, output rule, P6/P7 from P5.

    `in_channels` lists the channels of C2..C5 (4 values) or of C3..C5 (3 values, only for
    genotypes that never read C2); `forward` takes the maps in the same order. An adapt conv is
    built only for the backbone maps some cell reads (mmdetection omits the unused C2 one), so no
    parameter is left without a gradient.
    """

    def __init__(
        self,
        cells: Sequence[Cell],
        in_channels: Sequence[int],
        out_channels: int = 256,
        *,
        upsample: str = "bilinear",
        norm: str = "bn",
        gn_groups: int = 32,
    ) -> None:
        super().__init__()
        if len(in_channels) not in (3, 4):
            raise NasSearchError(
                f"nasfcos neck: in_channels {list(in_channels)} must list C2..C5 or C3..C5"
            )
        if upsample not in UPSAMPLE_MODES:
            raise NasSearchError(
                f"nasfcos neck: upsample={upsample!r} (use one of {', '.join(UPSAMPLE_MODES)})"
            )
        self.first_level = NUM_BACKBONE - len(in_channels)  # 0: inputs start at C2, 1: at C3
        used = sorted({i for cell in cells for i in cell[:2] if i < NUM_BACKBONE})
        if used and used[0] < self.first_level:
            raise NasSearchError(
                f"nasfcos neck: the genotype reads C2 but in_channels {list(in_channels)} has no C2"
            )
        self.out_channels = out_channels
        self.strides = DEFAULT_STRIDES
        self.upsample = upsample
        self.cell_inputs = tuple((cell[0], cell[1]) for cell in cells)
        self.adapt = nn.ModuleDict(
            {
                BACKBONE_NAMES[i]: nn.Sequential(
                    nn.Conv2d(in_channels[i - self.first_level], out_channels, 1, bias=False),
                    norm_layer(norm, out_channels, gn_groups),
                    nn.ReLU(inplace=True),
                )
                for i in used
            }
        )
        self.cells = nn.ModuleList(
            NASFCOSCell(
                cell[2], cell[3], cell[4], out_channels,
                upsample=upsample, norm=norm, gn_groups=gn_groups,
            )
            for cell in cells
        )  # fmt: skip
        leaves = fpn_leaves(cells)
        if len(leaves) < MIN_LEAVES:
            raise NasSearchError(f"nasfcos neck: {len(leaves)} leaf cells, need {MIN_LEAVES}")
        self.output_leaves = tuple(leaves[-3:])  # -> P5, P4, P3
        self.extra_leaves = tuple(leaves[:-3])  # added into each of them
        self.p6 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        for conv in [m[0] for m in self.adapt.values()] + [self.p6, self.p7]:
            nn.init.kaiming_uniform_(conv.weight, a=1)  # Caffe2 Xavier, as both implementations
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """[C2, C3, C4, C5] (or [C3, C4, C5]) -> [P3, P4, P5, P6, P7]."""
        expected = NUM_BACKBONE - self.first_level
        if len(feats) != expected:
            raise NasSearchError(
                f"nasfcos neck: got {len(feats)} feature maps, expected {expected}"
            )
        pool: list[Tensor | None] = [None] * NUM_BACKBONE
        for name, adapt in self.adapt.items():
            i = BACKBONE_NAMES.index(name)
            pool[i] = adapt(feats[i - self.first_level])
        for (in1, in2), cell in zip(self.cell_inputs, self.cells, strict=True):
            pool.append(cell(pool[in1], pool[in2]))
        outs = []
        # Newest leaf -> P3 sized like C3, ..., oldest of the three -> P5 sized like C5.
        for leaf, ref in zip(reversed(self.output_leaves), feats[-3:], strict=True):
            x = pool[leaf]
            for extra in self.extra_leaves:
                x = x + resize(pool[extra], x.shape[-2:], "bilinear")
            outs.append(resize(x, ref.shape[-2:], "bilinear"))
        p6 = self.p6(outs[-1])
        return outs + [p6, self.p7(F.relu(p6))]


class NASFCOSHead(nn.Module):
    """Searched FCOS head: per-level layers (< share), shared layers (>= share), FCOS predictors.

    Drop-in for `FCOSHead`: same forward triple and `num_classes`, `num_levels`, `strides`,
    `centerness_on`, `scales` attributes. Op convs keep PyTorch's default init (released code);
    predictors get N(0, 0.01) weights, zero bias and the focal prior on the class bias.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        ops: Sequence[str],
        share: int,
        *,
        strides: Sequence[int] = DEFAULT_STRIDES,
        num_levels: int = 5,
        prior_prob: float = 0.01,
        norm: str = "gn",
        gn_groups: int = 32,
    ) -> None:
        super().__init__()
        head = HeadGenotype(tuple(ops), share)
        if len(strides) != num_levels:
            raise NasSearchError(
                f"nasfcos head: {len(strides)} strides {tuple(strides)} for num_levels={num_levels}"
            )
        self.num_classes = num_classes
        self.num_levels = num_levels
        self.strides = tuple(int(s) for s in strides)
        self.centerness_on = "cls"
        self.ops, self.share = head.ops, head.share

        def layers(names: Sequence[str]) -> nn.Sequential:
            return nn.Sequential(*(build_head_op(n, in_channels, norm, gn_groups) for n in names))

        per_level, shared = head.ops[: head.share], head.ops[head.share :]
        self.cls_levels = nn.ModuleList(layers(per_level) for _ in range(num_levels))
        self.reg_levels = nn.ModuleList(layers(per_level) for _ in range(num_levels))
        self.cls_shared = layers(shared)
        self.reg_shared = layers(shared)
        self.cls_logits = nn.Conv2d(in_channels, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(in_channels, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in range(num_levels))
        for conv in (self.cls_logits, self.bbox_pred, self.centerness):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        bias = -torch.log(torch.tensor((1.0 - prior_prob) / prior_prob))
        nn.init.constant_(self.cls_logits.bias, float(bias))

    def forward(self, feats: Sequence[Tensor]) -> HeadOutputs:
        """Per-level (cls logits [B,C,H,W], positive ltrb distances [B,4,H,W], centerness [B,1,H,W])."""
        if len(feats) != self.num_levels:
            raise NasSearchError(
                f"nasfcos head: got {len(feats)} feature levels, expected {self.num_levels}"
            )
        cls_out, reg_out, ctr_out = [], [], []
        for level, x in enumerate(feats):
            cls_feat = self.cls_shared(self.cls_levels[level](x))
            reg_feat = self.reg_shared(self.reg_levels[level](x))
            cls_out.append(self.cls_logits(cls_feat))
            reg_out.append(torch.exp(self.scales[level](self.bbox_pred(reg_feat))))
            ctr_out.append(self.centerness(cls_feat))
        return cls_out, reg_out, ctr_out


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


class NASFCOSSpace(SearchSpace):
    """NAS-FCOS decisions (FPN cells, head ops + share) with leaf-count masking; see module docs.

    Options: `part` ('fpn', 'head', 'both'); `num_cells` (7; smaller values give reduced spaces);
    `fpn`: the fixed FPN for part 'head' (PAPER's by default).
    """

    name: ClassVar[str] = "nasfcos"

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
        if isinstance(num_cells, bool) or not isinstance(num_cells, int) or num_cells < MIN_LEAVES:
            raise NasSearchError(
                f"nasfcos space: num_cells={num_cells!r} must be an integer >= {MIN_LEAVES}"
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

    def build_neck(
        self,
        genotype: Genotype,
        in_channels: Sequence[int],
        out_channels: int = 256,
        *,
        upsample: str = "bilinear",
        norm: str = "bn",
        gn_groups: int = 32,
    ) -> NASFCOSNeck:
        """The searched FPN for C2..C5 (or C3..C5) maps of `in_channels` -> P3..P7 of `out_channels`."""
        genotype = self._as_genotype(genotype)
        if genotype.fpn is None:
            raise _err("has no fpn cells to build a neck from")
        return NASFCOSNeck(
            genotype.fpn,
            in_channels,
            out_channels,
            upsample=upsample,
            norm=norm,
            gn_groups=gn_groups,
        )

    def build_head(
        self,
        genotype: Genotype,
        in_channels: int,
        num_classes: int,
        *,
        strides: Sequence[int] = DEFAULT_STRIDES,
        num_levels: int = 5,
        prior_prob: float = 0.01,
        norm: str = "gn",
        gn_groups: int = 32,
    ) -> nn.Module:
        """The searched head, or the stock FCOSHead (4 convs, GN) when the genotype has none."""
        genotype = self._as_genotype(genotype)
        if genotype.head is None:
            return FCOSHead(
                in_channels,
                num_classes,
                num_levels=num_levels,
                prior_prob=prior_prob,
                strides=strides,
            )
        return NASFCOSHead(
            in_channels,
            num_classes,
            genotype.head.ops,
            genotype.head.share,
            strides=strides,
            num_levels=num_levels,
            prior_prob=prior_prob,
            norm=norm,
            gn_groups=gn_groups,
        )

    @staticmethod
    def _as_genotype(genotype: Any) -> NASFCOSGenotype:
        if isinstance(genotype, NASFCOSGenotype):
            return genotype
        if isinstance(genotype, dict):
            return NASFCOSGenotype.from_dict(genotype)
        raise NasSearchError(
            f"space nasfcos: expected a NASFCOSGenotype, got {type(genotype).__name__}"
        )
