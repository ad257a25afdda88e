"""NAS-FCOS search space: decisions and masks, genotypes, size, builders, published parameter counts.

References are independent of the implementation: brute-force enumeration of input wirings, a
memoised exhaustive search for "3 leaves still reachable", hand-written forward passes, parameter
counts from mmdetection and from closed formulas.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nassearch.detectors.fcos import FCOS, FCOSHead
from nassearch.detectors.heads.nasfcos import NASFCOSHead
from nassearch.detectors.necks.nasfcos import NASFCOSNeck
from nassearch.detectors.ops.nasfcos_ops import (
    ConcatReduce,
    ParamSum,
    build_fpn_op,
    build_head_op,
)
from nassearch.errors import NasSearchError
from nassearch.search_spaces.nasfcos import (
    AGG_OPS,
    FPN_OPS,
    HEAD_OPS,
    PAPER,
    PAPER_FPN_ONLY,
    HeadGenotype,
    NASFCOSGenotype,
    NASFCOSSpace,
)

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True)
RELEASED_FPN = [
    [3, 3, 4, 4, 1],
    [3, 3, 4, 4, 1],
    [4, 3, 4, 3, 1],
    [1, 3, 4, 3, 1],
    [5, 3, 4, 4, 1],
    [4, 7, 4, 4, 1],
    [7, 2, 4, 4, 1],
]
R50_CHANNELS = [256, 512, 1024, 2048]  # C2..C5


pytestmark = pytest.mark.usefixtures("one_thread")


def build_neck(genotype: NASFCOSGenotype, in_channels, out_channels: int, **kwargs) -> NASFCOSNeck:
    return NASFCOSNeck(genotype.fpn, in_channels, out_channels, **kwargs)


def build_head(
    genotype: NASFCOSGenotype, in_channels: int, num_classes: int, **kwargs
) -> nn.Module:
    """The searched head, or the stock FCOS head for FPN-only genotypes (as build_fcos does)."""
    if not NASFCOSHead.searched_by(genotype):
        return FCOSHead(in_channels, num_classes)
    head = genotype.head
    return NASFCOSHead(in_channels, num_classes, head.ops, head.share, **kwargs)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------ independent references


def _leaves(inputs: list[tuple[int, int]]) -> int:
    """Cells (pool index 4+k) that no later cell lists as an input."""
    n = len(inputs)
    return sum(1 for k in range(n) if all(4 + k not in inputs[j] for j in range(k + 1, n)))


def _completable(flat_inputs: list[int], num_cells: int) -> bool:
    """Exhaustive search: can the remaining inputs be chosen so that >= 3 cells stay unread?"""

    @functools.cache
    def search(pos: int, read: frozenset[int]) -> bool:
        if pos == 2 * num_cells:
            return num_cells - len(read) >= 3
        pool = 4 + pos // 2
        return any(search(pos + 1, read | {j} if j >= 4 else read) for j in range(pool))

    return search(len(flat_inputs), frozenset(j for j in flat_inputs if j >= 4))


def _walk(space: NASFCOSSpace, draws: list[int]) -> list[int]:
    """An action sequence choosing legal[draw % len(legal)] at every step."""
    actions: list[int] = []
    for draw in draws[: len(space.decisions)]:
        legal = np.flatnonzero(space.mask(actions))
        actions.append(int(legal[draw % len(legal)]))
    return actions


def _reference_canonical(g: NASFCOSGenotype):
    fpn = tuple((tuple(sorted([(a, oa), (b, ob)])), agg) for a, b, oa, ob, agg in g.fpn)
    head = None
    if g.head is not None:
        head = tuple(
            (op, i < g.head.share) for i, op in enumerate(g.head.ops) if op != "skip_connect"
        )
    return fpn, head


# ------------------------------------------------------------------ decisions, masks, codec


def test_decision_layout() -> None:
    space = NASFCOSSpace(part="both")
    decisions = space.decisions
    assert len(decisions) == 7 * 5 + 7
    assert [d.name for d in decisions[:5]] == [
        "cell0.input1", "cell0.input2", "cell0.op1", "cell0.op2", "cell0.agg",
    ]  # fmt: skip
    assert [d.kind for d in decisions[35:]] == ["head_op"] * 6 + ["share"]
    assert space.kinds() == {"input": 10, "op": 5, "agg": 2, "head_op": 6, "share": 7}
    assert NASFCOSSpace(part="fpn").kinds() == {"input": 10, "op": 5, "agg": 2}
    assert NASFCOSSpace(part="head").kinds() == {"head_op": 6, "share": 7}
    assert FPN_OPS == (
        "sep_conv_3x3", "sep_conv_3x3_dil3", "sep_conv_5x5_dil6", "skip_connect", "def_conv_3x3",
    )  # fmt: skip
    assert AGG_OPS == ("psum", "cat")
    assert HEAD_OPS == (
        "conv1x1", "conv3x3", "sep_conv_3x3", "sep_conv_3x3_dil3", "skip_connect", "def_conv_3x3",
    )  # fmt: skip


@SETTINGS
@given(
    draws=st.lists(st.integers(0, 10_000), min_size=42, max_size=42), cells=st.sampled_from([4, 7])
)
def test_masks_allow_exactly_the_legal_choices(draws: list[int], cells: int) -> None:
    space = NASFCOSSpace(part="both", num_cells=cells)
    actions: list[int] = []
    for i, decision in enumerate(space.decisions):
        mask = space.mask(actions)
        assert len(mask) == decision.num_choices
        if i < 5 * cells and i % 5 < 2:
            k = i // 5
            inputs = [a for j, a in enumerate(actions) if j % 5 < 2]
            expected = [
                c < 4 + k and _completable(inputs + [c], cells)
                for c in range(10 if cells == 7 else 7)
            ]
            assert mask == expected, (actions, mask, expected)
        else:
            assert all(mask)
        legal = np.flatnonzero(mask)
        actions.append(int(legal[draws[i] % len(legal)]))
    assert _leaves([(actions[5 * k], actions[5 * k + 1]) for k in range(cells)]) >= 3


@SETTINGS
@given(
    draws=st.lists(st.integers(0, 10_000), min_size=42, max_size=42),
    part=st.sampled_from(["fpn", "head", "both"]),
)
def test_decode_encode_are_exact_inverses(draws: list[int], part: str) -> None:
    space = NASFCOSSpace(part=part)
    actions = _walk(space, draws)
    genotype = space.decode(actions)
    assert space.encode(genotype) == actions
    assert space.decode(space.encode(genotype)) == genotype
    again = space.genotype_from_dict(genotype.to_dict())
    assert again == genotype and again.key() == genotype.key()
    assert (genotype.head is None) == (part == "fpn")


def test_released_genotype_encoding() -> None:
    both = NASFCOSSpace(part="both")
    assert both.encode(PAPER) == sum(RELEASED_FPN, []) + [5, 1, 5, 0, 4, 4, 0]
    assert PAPER.fpn[3] == (1, 3, "def_conv_3x3", "skip_connect", "cat")
    assert PAPER.head == HeadGenotype(
        ("def_conv_3x3", "conv3x3", "def_conv_3x3", "conv1x1", "skip_connect", "skip_connect"), 0
    )
    assert PAPER.leaves() == [6, 8, 9, 10]
    released = {
        "space": "nasfcos",
        "fpn": RELEASED_FPN,
        "head": {"ops": [5, 1, 5, 0, 4, 4], "share": 0},
    }
    assert both.genotype_from_dict(released) == PAPER
    assert PAPER_FPN_ONLY.fpn == PAPER.fpn and PAPER_FPN_ONLY.head is None
    assert NASFCOSSpace(part="fpn").encode(PAPER_FPN_ONLY) == sum(RELEASED_FPN, [])


def test_parts_and_progressive_head_search() -> None:
    head_space = NASFCOSSpace(part="head")
    assert head_space.encode(PAPER) == [5, 1, 5, 0, 4, 4, 0]
    genotype = head_space.decode([1, 1, 1, 1, 4, 4, 2])
    assert genotype.fpn == PAPER.fpn and genotype.head.ops[:4] == ("conv3x3",) * 4
    # A missing fpn means the fixed one; an explicit other fpn for part 'head' is not in the space.
    assert head_space.genotype_from_dict({"head": {"ops": [1] * 6, "share": 6}}).fpn == PAPER.fpn
    other = NASFCOSSpace(part="head", fpn=[[3, 3, 3, 3, 0], [3, 2, 3, 3, 0], [2, 1, 0, 0, 1]])
    assert other.decode([0] * 6 + [0]).fpn[2] == (2, 1, "sep_conv_3x3", "sep_conv_3x3", "cat")
    psum_last = NASFCOSSpace(part="head", fpn=RELEASED_FPN[:6] + [[7, 2, 4, 4, 0]])
    with pytest.raises(NasSearchError, match="fixed fpn"):
        psum_last.encode(PAPER)
    with pytest.raises(NasSearchError, match="stock FCOS head"):
        NASFCOSSpace(part="fpn").encode(PAPER)
    with pytest.raises(NasSearchError, match="needs a head"):
        NASFCOSSpace(part="both").encode(PAPER_FPN_ONLY)
    with pytest.raises(NasSearchError, match="part"):
        NASFCOSSpace(part="neck")


# ------------------------------------------------------------------ size


@pytest.mark.parametrize("cells", [3, 4])
def test_size_equals_brute_force(cells: int) -> None:
    pair_choices = [list(itertools.product(range(4 + k), repeat=2)) for k in range(cells)]
    wirings = sum(1 for w in itertools.product(*pair_choices) if _leaves(list(w)) >= 3)
    # Ops and aggregations never affect legality: each cell multiplies by 5 * 5 * 2.
    assert NASFCOSSpace(part="fpn", num_cells=cells).size() == wirings * 50**cells
    assert NASFCOSSpace(part="both", num_cells=cells).size() == wirings * 50**cells * 6**6 * 7


def test_size_counts_mask_legal_sequences() -> None:
    space = NASFCOSSpace(part="fpn", num_cells=3)

    def count(prefix: list[int]) -> int:
        if len(prefix) == 15:
            return 1
        if len(prefix) % 5 >= 2:  # op/agg slots: never masked, counted by the factor below
            return count(prefix + [0])
        return sum(count(prefix + [c]) for c, ok in enumerate(space.mask(prefix)) if ok)

    assert count([]) * 50**3 == space.size()


def test_head_and_full_sizes() -> None:
    assert NASFCOSSpace(part="head").size() == 6**6 * 7 == 326_592
    fpn = NASFCOSSpace(part="fpn").size()
    assert NASFCOSSpace(part="both").size() == fpn * 326_592
    # Below the unmasked count prod (4+k)^2 * 50 (~2.9e23): wirings with < 3 leaves are excluded.
    unmasked = math.prod((4 + k) ** 2 * 50 for k in range(7))
    assert 0.5 * unmasked < fpn < unmasked


# ------------------------------------------------------------------ genotypes and keys


def test_key_ignores_commutative_order_and_skip_placement() -> None:
    cells = [list(c) for c in RELEASED_FPN]
    swapped = [c[:] for c in cells]
    swapped[2] = [3, 4, 3, 4, 1]  # (4, dconv), (3, skip) listed the other way round
    a = NASFCOSGenotype(fpn=cells, head=HeadGenotype((1, 4, 0, 4, 4, 4), 1))
    b = NASFCOSGenotype(
        fpn=swapped, head=HeadGenotype((1, 0, 4, 4, 4, 4), 1)
    )  # a skip moved before the conv1x1
    assert a != b and a.key() == b.key()
    e = NASFCOSGenotype(fpn=cells, head=HeadGenotype((1, 4, 0, 4, 4, 4), 2))  # share past a skip
    assert e.key() == a.key()
    c = NASFCOSGenotype(fpn=swapped, head=HeadGenotype((1, 0, 4, 4, 4, 4), 2))  # conv1x1 per level
    assert c.key() != a.key()
    assert PAPER.key() != PAPER_FPN_ONLY.key()
    d = [c[:] for c in cells]
    d[2] = [4, 3, 3, 4, 1]  # ops swapped but inputs not: a different network
    assert NASFCOSGenotype(fpn=d).key() != PAPER_FPN_ONLY.key()


@SETTINGS
@given(draws=st.lists(st.integers(0, 10_000), min_size=46, max_size=46))
def test_key_equal_iff_equivalent(draws: list[int]) -> None:
    space = NASFCOSSpace(part="both")
    g = space.decode(_walk(space, draws))
    rng = np.random.default_rng(draws[-1])
    # Mutations: swap a cell's pairs (equivalent), or redraw one token (usually different).
    fpn = [list(c) for c in g.fpn]
    ops, share = list(g.head.ops), g.head.share
    kind = draws[-2] % 3
    k = int(rng.integers(7))
    if kind == 0:
        fpn[k] = [fpn[k][1], fpn[k][0], fpn[k][3], fpn[k][2], fpn[k][4]]
    elif kind == 1:
        slot = int(rng.integers(2, 5))
        fpn[k][slot] = FPN_OPS[int(rng.integers(5))] if slot < 4 else AGG_OPS[int(rng.integers(2))]
    else:
        ops[int(rng.integers(6))] = HEAD_OPS[int(rng.integers(6))]
        share = int(rng.integers(7))
    h = NASFCOSGenotype(fpn=fpn, head=HeadGenotype(tuple(ops), share))
    assert (g.key() == h.key()) == (_reference_canonical(g) == _reference_canonical(h))
    if kind == 0:
        assert g.key() == h.key()


def _chain(n: int = 7) -> list[list]:
    """Every cell reads the previous one: a single leaf."""
    return [[3, 3, 3, 3, 0]] + [[4 + k - 1, 2, 3, 3, 0] for k in range(1, n)]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"fpn": _chain()}, "leaf"),
        ({"fpn": RELEASED_FPN[:2] + [[9, 1, 0, 0, 0]] + RELEASED_FPN[3:]}, "fpn cell 2 input1 = 9"),
        (
            {"fpn": RELEASED_FPN[:1] + [[1, -1, 0, 0, 0]] + RELEASED_FPN[2:]},
            "fpn cell 1 input2 = -1",
        ),
        ({"fpn": [[3, 3, 4, 4]] + RELEASED_FPN[1:]}, "fpn cell 0"),
        ({"fpn": RELEASED_FPN[:4] + [[5, 3, "conv9x9", 4, 1]] + RELEASED_FPN[5:]}, "conv9x9"),
        ({"fpn": RELEASED_FPN[:6] + [[7, 2, 4, 4, "max"]]}, "fpn cell 6 agg = 'max'"),
        ({"fpn": RELEASED_FPN[:6]}, "6 cells"),
        ({"fpn": RELEASED_FPN, "head": {"ops": [1] * 5, "share": 0}}, "head ops has 5"),
        ({"fpn": RELEASED_FPN, "head": {"ops": [1] * 6, "share": 7}}, "head share = 7"),
        ({"fpn": RELEASED_FPN, "head": {"ops": [1, 1, 1, 1, 1, 8], "share": 0}}, "head op 5 = 8"),
        ({"fpn": RELEASED_FPN, "bogus": 1}, "bogus"),
        ({"space": "nasfpn", "fpn": RELEASED_FPN}, "nasfpn"),
        ({"head": {"ops": [1] * 6, "share": 0}}, "fpn is missing"),
    ],
)
def test_invalid_user_genotypes_refused(data: dict, fragment: str) -> None:
    with pytest.raises(NasSearchError) as info:
        NASFCOSSpace(part="both").genotype_from_dict({"space": "nasfcos", **data})
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_fewer_than_three_leaves_refused_and_masked() -> None:
    with pytest.raises(NasSearchError, match="1 leaf"):
        NASFCOSGenotype(fpn=_chain())
    space = NASFCOSSpace(part="fpn")
    with pytest.raises(NasSearchError, match="not allowed"):
        space.decode(sum(_chain(), []))
    # After a 5-cell chain, cells 0-3 are read: cell 5 may read them again or a backbone map, but
    # not cell 4 (that would leave at most 2 leaves); index 9 is not in the pool yet.
    prefix = sum(_chain(5), [])
    assert space.mask(prefix) == [True] * 8 + [False] * 2


# ------------------------------------------------------------------ modules


def _features(channels=(8, 16, 24, 32), size=(128, 128), batch=1, seed=0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h, w = size
    return [
        torch.randn(batch, c, math.ceil(h / s), math.ceil(w / s), generator=g)
        for c, s in zip(channels, (4, 8, 16, 32), strict=True)
    ]


@SETTINGS
@given(draws=st.lists(st.integers(0, 10_000), min_size=42, max_size=42))
def test_sampled_genotypes_build_and_run(draws: list[int]) -> None:
    space = NASFCOSSpace(part="both")
    g = space.decode(_walk(space, draws))
    neck = build_neck(g, [8, 16, 24, 32], 32, upsample="bilinear" if draws[0] % 2 else "nearest")
    head = build_head(g, 32, 3, gn_groups=8)  # GN(32) on 32 channels fails on 1x1 maps
    assert ("C2" in neck.adapt) == any(0 in c[:2] for c in g.fpn)
    levels = neck(_features(size=(64, 96)))
    assert [tuple(p.shape) for p in levels] == [
        (1, 32, math.ceil(64 / s), math.ceil(96 / s)) for s in (8, 16, 32, 64, 128)
    ]
    cls, reg, ctr = head(levels)
    assert [t.shape[1] for t in cls] == [3] * 5 and all((t > 0).all() for t in reg)
    assert [t.shape[-2:] for t in ctr] == [p.shape[-2:] for p in levels]


def test_paper_parameter_counts_match_mmdetection() -> None:
    neck = build_neck(PAPER, R50_CHANNELS, 256)
    assert _params(neck) == 10_690_696  # mmdet NASFCOS_FPN, R-50, 256 channels
    assert "C2" not in neck.adapt and sorted(neck.adapt) == ["C3", "C4", "C5"]
    assert _params(build_neck(PAPER, R50_CHANNELS[1:], 256)) == 10_690_696
    head = build_head(PAPER, 256, 80)
    assert isinstance(head, NASFCOSHead) and _params(head) == 4_368_946  # mmdet NASFCOSHead
    stock = build_head(PAPER_FPN_ONLY, 256, 80)
    assert isinstance(stock, FCOSHead) and _params(stock) == _params(FCOSHead(256, 80)) == 4_918_618


@pytest.mark.parametrize("upsample", ["bilinear", "nearest"])
def test_neck_wiring_matches_hand_written_forward(upsample: str) -> None:
    # Skip ops + psum (weights 1): every cell is resize(a) + resize(b); 4 leaves, C2 used, a
    # stride-4 extra leaf, a stride-8 map resized down to P4 and a stride-16 map up to P3.
    cells = [
        [3, 2, 3, 3, 0],  # f4 = up(C5) + C4           (s16)
        [1, 4, 3, 3, 0],  # f5 = C3 + up(f4)           (s8)
        [0, 3, 3, 3, 0],  # f6 = C2 + up(C5)           (s4)  extra leaf
        [3, 3, 3, 3, 0],  # f7 = 2 C5                  (s32) -> P5
        [2, 5, 3, 3, 0],  # f8 = up(C4) + f5           (s8)  -> P4
        [2, 2, 3, 3, 0],  # f9 = 2 C4                  (s16) -> P3
    ]
    g = NASFCOSGenotype(fpn=cells)
    neck = build_neck(g, [8, 16, 24, 32], 32, upsample=upsample).eval()
    feats = _features(size=(96, 160))
    with torch.no_grad():
        out = neck(feats)
        c2, c3, c4, c5 = (
            neck.adapt[n](f) for n, f in zip(("C2", "C3", "C4", "C5"), feats, strict=True)
        )

        def up(x, ref):
            if upsample == "bilinear":
                return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)
            return F.interpolate(x, size=ref.shape[-2:], mode="nearest")

        def bil(x, ref_shape):
            return F.interpolate(x, size=ref_shape[-2:], mode="bilinear", align_corners=False)

        f4 = up(c5, c4) + c4
        f5 = c3 + up(f4, c3)
        f6 = c2 + up(c5, c2)
        f7 = c5 + c5
        f8 = up(c4, f5) + f5
        f9 = c4 + c4
        p5 = bil(f7 + bil(f6, f7.shape), feats[3].shape)
        p4 = bil(f8 + bil(f6, f8.shape), feats[2].shape)
        p3 = bil(f9 + bil(f6, f9.shape), feats[1].shape)
        p6 = neck.p6(p5)
        p7 = neck.p7(F.relu(p6))
    for got, want in zip(out, [p3, p4, p5, p6, p7], strict=True):
        torch.testing.assert_close(got, want)
    assert [tuple(p.shape[-2:]) for p in out] == [(12, 20), (6, 10), (3, 5), (2, 3), (1, 2)]


def test_neck_refuses_c2_genotype_without_c2_input() -> None:
    cells = [[0, 3, 3, 3, 0]] + RELEASED_FPN[1:]
    with pytest.raises(NasSearchError, match="C2"):
        build_neck(NASFCOSGenotype(fpn=cells), [16, 24, 32], 32)


def test_psum_and_cat_aggregations() -> None:
    psum = ParamSum(8)
    assert torch.equal(psum.weight_x, torch.ones(1, 8, 1, 1)) and torch.equal(
        psum.weight_y, torch.ones(1, 8, 1, 1)
    )
    x, y = torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(psum(x, y), x + y)
    cat = ConcatReduce(8).eval()
    assert (
        cat.conv.groups == 8
        and tuple(cat.conv.weight.shape) == (8, 2, 1, 1)
        and cat.conv.bias is None
    )
    # Grouped quirk: output channels 0..3 see only x, 4..7 only y.
    y2 = y + torch.randn_like(y)
    a, b = cat(x, y), cat(x, y2)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_def_conv_op_layout() -> None:
    cell = build_neck(PAPER, R50_CHANNELS, 32).cells[0]
    dcn = cell.op1[0]
    assert dcn.deform_groups == 2 and dcn.bias is not None
    assert dcn.conv_offset.out_channels == 2 * 3 * 9
    assert torch.count_nonzero(dcn.conv_offset.weight) == 0
    assert isinstance(cell.op1[1], nn.BatchNorm2d) and isinstance(cell.op1[2], nn.ReLU)


@pytest.mark.parametrize("share", range(7))
def test_share_index_makes_per_level_copies(share: int) -> None:
    c = 32
    head = NASFCOSHead(c, 3, ["conv3x3"] * 6, share)
    shared = NASFCOSHead(c, 3, ["conv3x3"] * 6, 0)
    layer = c * c * 9 + 2 * c  # conv3x3 without bias + GroupNorm affine
    assert _params(head) - _params(shared) == 2 * 4 * share * layer  # 2 branches, 4 extra levels
    assert len(head.cls_levels) == 5 and len(head.cls_levels[0]) == share
    assert len(head.cls_shared) == 6 - share


def test_share_index_semantics_in_forward() -> None:
    torch.manual_seed(0)
    ops = [
        "conv3x3",
        "sep_conv_3x3",
        "conv1x1",
        "def_conv_3x3",
        "sep_conv_3x3_dil3",
        "skip_connect",
    ]
    shared = NASFCOSHead(32, 3, ops, 0, gn_groups=8).eval()
    split = NASFCOSHead(32, 3, ops, 6, gn_groups=8).eval()
    state = {}
    for branch in ("cls", "reg"):
        for name, value in getattr(shared, f"{branch}_shared").state_dict().items():
            for level in range(5):
                state[f"{branch}_levels.{level}.{name}"] = value
    for name, value in shared.state_dict().items():
        if "_shared" not in name:
            state[name] = value
    split.load_state_dict(state)
    feats = [torch.randn(1, 32, s, s) for s in (16, 8, 4, 2, 1)]
    with torch.no_grad():
        for a, b in zip(shared(feats), split(feats), strict=True):
            for x, y in zip(a, b, strict=True):
                torch.testing.assert_close(x, y)
        split.cls_levels[2][0][0].weight.add_(0.5)
        after = split(feats)[0]
    base = shared(feats)[0]
    changed = [not torch.allclose(x, y) for x, y in zip(base, after, strict=True)]
    assert changed == [False, False, True, False, False]


def test_nas_head_drop_in_for_fcos_detector() -> None:
    torch.manual_seed(0)

    class Stub(nn.Module):
        """Backbone stand-in: C2..C5 by strided average pooling and a 1x1 conv."""

        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.ModuleList(nn.Conv2d(3, c, 1) for c in (8, 16, 24, 32))

        def forward(self, x):
            return [
                conv(F.avg_pool2d(x, s)) for conv, s in zip(self.convs, (4, 8, 16, 32), strict=True)
            ]

    neck = build_neck(PAPER, [8, 16, 24, 32], 32)
    head = build_head(PAPER, 32, 3)
    assert head.strides == (8, 16, 32, 64, 128) and head.num_classes == 3 and head.num_levels == 5
    model = FCOS(Stub(), neck, head, 3)
    images = torch.randn(2, 3, 64, 96)
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    losses = model(images, targets)
    assert set(losses) == {"loss_cls", "loss_box", "loss_centerness"}
    sum(losses.values()).backward()
    assert head.cls_shared[0][0].conv_offset.weight.grad is not None
    assert all(p.grad is not None for p in neck.parameters())
    model.eval()
    with torch.no_grad():
        dets = model(images)
    assert len(dets) == 2 and set(dets[0]) == {"boxes", "scores", "labels"}
    # Initial class probability is the prior (0.01) everywhere.
    with torch.no_grad():
        cls = model.head_outputs(Stub()(images))[0]
    torch.testing.assert_close(torch.sigmoid(cls[0]).mean(), torch.tensor(0.01), atol=2e-3, rtol=0)


@pytest.mark.parametrize(
    ("name", "params", "reach"),
    [
        # name, parameters at C=32 (closed form), farthest input offset seen along one axis
        ("sep_conv_3x3", 32 * 9 + 32 * 32 + 64, 1),
        ("sep_conv_3x3_dil3", 32 * 9 + 32 * 32 + 64, 3),
        ("sep_conv_5x5_dil6", 32 * 25 + 32 * 32 + 64, 12),
        ("skip_connect", 0, 0),
        ("def_conv_3x3", 32 * 32 * 9 + 32 + 54 * 32 * 9 + 54 + 64, 1),
    ],
)
def test_fpn_ops_parameters_and_receptive_field(name: str, params: int, reach: int) -> None:
    op = build_fpn_op(name, 32).eval()
    assert _params(op) == params
    x = torch.randn(1, 32, 31, 31, requires_grad=True)
    out = op(x)
    assert out.shape == x.shape
    out[0, :, 15, 15].sum().backward()
    touched = torch.nonzero(x.grad[0].abs().sum(0))
    assert int((touched - 15).abs().max()) == reach


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("conv1x1", 32 * 32 + 64),
        ("conv3x3", 32 * 32 * 9 + 64),
        ("sep_conv_3x3", 32 * 9 + 32 * 32 + 64),
        ("sep_conv_3x3_dil3", 32 * 9 + 32 * 32 + 64),
        ("skip_connect", 0),
        ("def_conv_3x3", 32 * 32 * 9 + 32 + 54 * 32 * 9 + 54 + 64),
    ],
)
def test_head_ops_use_group_norm(name: str, params: int) -> None:
    op = build_head_op(name, 32)
    assert _params(op) == params
    norms = [m for m in op.modules() if isinstance(m, (nn.GroupNorm, nn.BatchNorm2d))]
    assert all(isinstance(m, nn.GroupNorm) and m.num_groups == 32 for m in norms)
    assert len(norms) == (0 if name == "skip_connect" else 1)
