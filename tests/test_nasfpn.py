"""NAS-FPN search space: masks vs an independent legality predicate, encode/decode, key(), size()
by exhaustive counting, genotype validation, and the neck against a hand-written reference."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from nassearch.detectors.necks.nasfpn import NASFPNNeck, merge
from nassearch.errors import NasSearchError
from nassearch.search_spaces.nasfpn import (
    FPN,
    PAPER,
    NASFPNCell,
    NASFPNGenotype,
    NASFPNSpace,
)

FEW = settings(max_examples=25, deadline=None, derandomize=True)
BUILD = settings(max_examples=8, deadline=None, derandomize=True)
OP_NAMES = ("sum", "global_pool")
IN_CHANNELS = [8, 12, 16]


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------- independent space model


def legal(prefix, choice, num_cells=7, levels=(4, 5, 6, 7)) -> bool:
    """Is `choice` legal after `prefix`? Written from the rules, not from the space's code."""
    n_int = num_cells - 5
    k, slot = divmod(len(prefix), 4)
    pool = 5 + k  # five inputs plus one entry per earlier cell
    if slot == 0:
        return 0 <= choice < pool
    if slot == 1:
        return 0 <= choice < pool and choice != prefix[-1]
    if slot == 2 and k < n_int:
        return 0 <= choice < len(levels)
    if slot == 2:
        taken = {prefix[4 * j + 2] for j in range(n_int, k)}
        return 0 <= choice < 5 and choice not in taken
    return choice in (0, 1)


def expected_num_choices(position, num_cells=7, levels=(4, 5, 6, 7)) -> int:
    k, slot = divmod(position, 4)
    if slot < 2:
        return 5 + num_cells - 1
    if slot == 2:
        return len(levels) if k < num_cells - 5 else 5
    return 2


@st.composite
def legal_actions(draw, num_cells=7, levels=(4, 5, 6, 7)):
    actions = []
    for _ in range(4 * num_cells):
        options = [c for c in range(20) if legal(actions, c, num_cells, levels)]
        actions.append(draw(st.sampled_from(options)))
    return actions


def expected_dict(actions, num_cells=7, levels=(4, 5, 6, 7)) -> dict:
    """Decode by hand: output_level choice c is level 3 + c, op 0 = sum, 1 = global_pool."""
    cells = []
    for k in range(num_cells):
        a, b, lv, op = actions[4 * k : 4 * k + 4]
        level = levels[lv] if k < num_cells - 5 else 3 + lv
        cells.append({"inputs": [a, b], "level": level, "op": OP_NAMES[op]})
    return {"space": "nasfpn", "cells": cells}


def count_completions(prefix, num_cells, levels, memo) -> int:
    """Exhaustive count of legal completions (memoised on what `legal` depends on)."""
    position = len(prefix)
    if position == 4 * num_cells:
        return 1
    n_int = num_cells - 5
    taken = frozenset(prefix[4 * j + 2] for j in range(n_int, num_cells) if 4 * j + 2 < position)
    key = (position, prefix[-1] if position % 4 == 1 else None, taken)
    if key not in memo:
        memo[key] = sum(
            count_completions((*prefix, c), num_cells, levels, memo)
            for c in range(20)
            if legal(prefix, c, num_cells, levels)
        )
    return memo[key]


def brute_force_completions(prefix, num_cells, levels) -> int:
    """Plain enumeration, no memo: every raw choice of every remaining decision."""
    if len(prefix) == 4 * num_cells:
        return 1
    return sum(
        brute_force_completions((*prefix, c), num_cells, levels)
        for c in range(20)
        if legal(prefix, c, num_cells, levels)
    )


def test_canonical(genotype) -> tuple:
    """Test-side equivalence: unordered input pairs (both ops are order-free by definition)."""
    return tuple((frozenset((c.input1, c.input2)), c.level, c.op) for c in genotype.cells)


test_canonical.__test__ = False  # a helper, not a test


# ----------------------------------------------------------------- decisions, masks, codec


def test_decision_layout():
    space = NASFPNSpace()
    decisions = space.decisions
    assert len(decisions) == 28
    assert [d.name for d in decisions[:8]] == [
        "cell1.input1", "cell1.input2", "cell1.level", "cell1.op",
        "cell2.input1", "cell2.input2", "cell2.level", "cell2.op",
    ]  # fmt: skip
    assert [d.name for d in decisions[8:12]] == [
        "cell3.input1", "cell3.input2", "cell3.output_level", "cell3.op",
    ]  # fmt: skip
    for p, d in enumerate(decisions):
        assert d.num_choices == expected_num_choices(p)
    assert space.kinds() == {"input": 11, "level": 4, "binary_op": 2, "output_level": 5}
    assert [d.kind for d in decisions].count("output_level") == 5


@FEW
@given(legal_actions())
def test_mask_matches_independent_predicate(actions):
    space = NASFPNSpace()
    for p in range(len(actions)):
        mask = space.mask(actions[:p])
        assert mask == [legal(actions[:p], c) for c in range(expected_num_choices(p))]


@FEW
@given(legal_actions(num_cells=6, levels=(5, 7)))
def test_mask_matches_predicate_reduced_space(actions):
    space = NASFPNSpace(num_cells=6, intermediate_levels=(7, 5))
    for p in range(len(actions)):
        expected = [
            legal(actions[:p], c, 6, (5, 7)) for c in range(expected_num_choices(p, 6, (5, 7)))
        ]
        assert space.mask(actions[:p]) == expected


@FEW
@given(legal_actions())
def test_decode_encode_inverse(actions):
    space = NASFPNSpace()
    genotype = space.decode(actions)
    assert genotype.to_dict() == expected_dict(actions)
    assert space.encode(genotype) == actions
    data = json.loads(json.dumps(genotype.to_dict()))  # plain JSON types only
    assert NASFPNGenotype.from_dict(data) == genotype
    assert space.genotype_from_dict(data) == genotype
    assert sorted(genotype.output_levels) == [3, 4, 5, 6, 7]


def test_decode_rejects_illegal_sequences():
    space = NASFPNSpace()
    good = space.encode(PAPER)
    bad_same_input = list(good)
    bad_same_input[5] = bad_same_input[4]  # cell2 input2 == input1
    bad_future = list(good)
    bad_future[0] = 7  # cell1 may only read entries 0..4
    bad_perm = list(good)
    bad_perm[4 * 6 + 2] = bad_perm[4 * 5 + 2]  # cell7 repeats cell6's output level
    for actions, needle in (
        (bad_same_input, "cell2.input2"),
        (bad_future, "cell1.input1"),
        (bad_perm, "cell7.output_level"),
        (good[:-1], "expected 28 actions"),
    ):
        with pytest.raises(NasSearchError, match=needle):
            space.decode(actions)
    with pytest.raises(NasSearchError):
        space.mask(good)  # nothing left to decide


def test_sample_is_seeded_and_legal():
    space = NASFPNSpace()
    a = space.sample_actions(np.random.default_rng(3))
    assert a == space.sample_actions(np.random.default_rng(3))
    assert all(legal(a[:p], a[p]) for p in range(len(a)))


# ----------------------------------------------------------------- size


def test_size_default_closed_form():
    # Cell k reads an ordered pair of distinct entries from 5 + k; 2 intermediate cells pick one
    # of 4 levels; every cell picks one of 2 ops; the outputs take the 5! orders of 3..7.
    pairs = [(5 + k) * (4 + k) for k in range(7)]
    expected = math.prod(pairs) * 4**2 * 2**7 * math.factorial(5)
    assert NASFPNSpace().size() == expected == 247_210_809_753_600_000


@pytest.mark.parametrize(
    ("num_cells", "levels"), [(5, (4, 5, 6, 7)), (6, (5, 7)), (7, (4, 5, 6, 7)), (8, (3,))]
)
def test_size_equals_exhaustive_count(num_cells, levels):
    space = NASFPNSpace(num_cells=num_cells, intermediate_levels=levels)
    assert space.size() == count_completions((), num_cells, levels, {})


@pytest.mark.parametrize("seed", [0, 1])
def test_exhaustive_count_matches_plain_enumeration(seed):
    """The memoised counter agrees with unmemoised enumeration of the last two cells."""
    num_cells, levels = 5, (4, 5, 6, 7)
    space = NASFPNSpace(num_cells=num_cells)
    prefix = tuple(space.sample_actions(np.random.default_rng(seed))[: 4 * (num_cells - 2)])
    plain = brute_force_completions(prefix, num_cells, levels)
    assert (
        plain == count_completions(prefix, num_cells, levels, {}) == (8 * 7 * 2 * 2) * (9 * 8 * 2)
    )


# ----------------------------------------------------------------- key


@FEW
@given(legal_actions(), legal_actions())
def test_key_equal_iff_equivalent(a, b):
    space = NASFPNSpace()
    g1, g2 = space.decode(a), space.decode(b)
    assert (g1.key() == g2.key()) == (test_canonical(g1) == test_canonical(g2))
    swapped = NASFPNGenotype(tuple(c._replace(input1=c.input2, input2=c.input1) for c in g1.cells))
    assert swapped != g1 and swapped.key() == g1.key()


def test_key_changes_with_every_field():
    cells = list(PAPER.cells)
    variants = [
        cells[:1] + [cells[1]._replace(op="global_pool")] + cells[2:],
        [cells[0]._replace(level=5)] + cells[1:],
        cells[:2] + [cells[2]._replace(input2=1)] + cells[3:],
        cells[:5] + [cells[5]._replace(level=6), cells[6]._replace(level=7)],
    ]
    keys = {PAPER.key()} | {NASFPNGenotype(tuple(v)).key() for v in variants}
    assert len(keys) == 1 + len(variants)


@pytest.mark.parametrize("style", ["tensorflow", "mmdet"])
def test_equal_keys_build_equal_networks(style):
    """Swapping inputs (sum, GP across levels, GP on a level tie) gives the same function."""
    tie = PAPER.cells[1]._replace(op="global_pool")  # entries 5 and 1 are both level 4
    g1 = NASFPNGenotype((PAPER.cells[0], tie, *PAPER.cells[2:]))
    g2 = NASFPNGenotype(tuple(c._replace(input1=c.input2, input2=c.input1) for c in g1.cells))
    assert g1.key() == g2.key()
    n1 = NASFPNNeck(g1, IN_CHANNELS, 16, style=style).eval()
    n2 = NASFPNNeck(g2, IN_CHANNELS, 16, style=style).eval()
    n2.load_state_dict(n1.state_dict())
    feats = make_feats(128, 128)
    for a, b in zip(n1(feats), n2(feats), strict=True):
        assert torch.equal(a, b)


# ----------------------------------------------------------------- genotype validation


def paper_dict_with(cell_number, **changes):
    data = PAPER.to_dict()
    data["cells"][cell_number - 1].update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "needles"),
    [
        (paper_dict_with(3, inputs=[6, 9]), ["cell 3", "input2 = 9"]),
        (paper_dict_with(2, inputs=[5, 5]), ["cell 2", "entry 5 twice"]),
        (paper_dict_with(4, op="mul"), ["cell 4", "'mul'"]),
        (paper_dict_with(1, level=3), ["cell 1", "level 3"]),
        (paper_dict_with(5, level=8), ["cell 5", "level 8"]),
        (paper_dict_with(7, level=7), ["cells 3..7", "[3, 4, 5, 7, 7]"]),
        (paper_dict_with(6, inputs=[6, "9"]), ["cell 6", "'9'"]),
        (paper_dict_with(6, kernel=3), ["cell 6", "'kernel'"]),
        ({"cells": PAPER.to_dict()["cells"][:6]}, ["expected 7 cells", "got 6"]),
        ({"cells": PAPER.to_dict()["cells"] * 2}, ["expected 7 cells", "got 14"]),
        ({"space": "nasfcos", "cells": []}, ["'nasfcos'"]),
        ({"cells": PAPER.to_dict()["cells"], "extra": 1}, ["'extra'"]),
        ({"cells": 7}, ["'cells'"]),
    ],
)
def test_invalid_genotypes_raise_one_line(data, needles):
    with pytest.raises(NasSearchError) as info:
        NASFPNSpace().genotype_from_dict(data)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_encode_checks_space_options():
    with pytest.raises(NasSearchError, match="cell 1 level 4 is not an allowed"):
        NASFPNSpace(intermediate_levels=(5, 6, 7)).encode(PAPER)
    with pytest.raises(NasSearchError, match="expected 8 cells, got 7"):
        NASFPNSpace(num_cells=8).encode(PAPER)
    with pytest.raises(NasSearchError, match="num_cells"):
        NASFPNSpace(num_cells=4)
    with pytest.raises(NasSearchError, match="intermediate_levels"):
        NASFPNSpace(intermediate_levels=(4, 8))


# ----------------------------------------------------------------- named genotypes


def test_paper_matches_tensorflow_block_specs():
    # tensorflow/tpu nasfpn.py: (level, combine, input indices, is_output) per block.
    tf_specs = [
        (4, "attention", (1, 3), False),
        (4, "sum", (1, 5), False),
        (3, "sum", (0, 6), True),
        (4, "sum", (6, 7), True),
        (5, "attention", (7, 8), True),
        (7, "attention", (6, 9), True),
        (6, "attention", (9, 10), True),
    ]
    ops = {"attention": "global_pool", "sum": "sum"}
    for cell, (level, op, inputs, _) in zip(PAPER.cells, tf_specs, strict=True):
        assert (cell.level, cell.op, tuple(sorted((cell.input1, cell.input2)))) == (
            level,
            ops[op],
            inputs,
        )
    assert PAPER.output_levels == (3, 4, 5, 7, 6)
    # Inputs P5 (entry 2) and P7 (entry 4) are read by no cell: the unused-layer rule adds them.
    assert PAPER.unused_additions() == [(), (), (), (), (2,), (4,), ()]
    space = NASFPNSpace()
    assert space.decode(space.encode(PAPER)) == PAPER


def test_fpn_is_top_down_with_documented_differences():
    space = NASFPNSpace()
    assert space.decode(space.encode(FPN)) == FPN
    assert all(c.op == "sum" for c in FPN.cells)
    assert FPN.output_levels == (4, 3, 5, 6, 7)
    assert FPN.unused_additions() == [()] * 7
    levels = FPN.pool_levels()
    for n, cell in enumerate(FPN.cells[:6], start=1):
        # lateral (the input entry of the cell's level) + one entry exactly one level coarser
        ins = {cell.input1, cell.input2}
        assert cell.level - 3 in ins, n
        assert sorted(levels[i] for i in ins) == [cell.level, cell.level + 1], n
    # Documented difference: every cell needs two inputs, so P7 out = P7 + maxpool(P6).
    assert {FPN.cells[6].input1, FPN.cells[6].input2} == {4, 3} and FPN.cells[6].level == 7
    # The top-down path runs P7 -> cell1 (P6) -> cell2 (P5) -> cell3 (P4 out) -> cell4 (P3 out).
    assert [FPN.cells[k].input1 for k in range(4)] == [4, 5, 6, 7]


# ----------------------------------------------------------------- neck


def make_feats(h, w, batch=2, seed=0):
    """C3..C5 of an HxW image (strides 8, 16, 32, sizes rounded up)."""
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, c, -(-h // s), -(-w // s), generator=g)
        for c, s in zip(IN_CHANNELS, (8, 16, 32), strict=True)
    ]


def expected_params(in_channels, d, stacks, style, cells=7):
    """Hand count: 1x1 laterals + BN, (mmdet) 1x1+BN before the extra pools, cells' 3x3 + BN."""
    lateral = sum(in_channels) * d + 3 * 2 * d
    extra = 2 * (d * d + 2 * d) if style == "mmdet" else 0
    cell = 9 * d * d + 2 * d + (d if style == "mmdet" else 0)  # mmdet cell convs have a bias
    return lateral + extra + stacks * cells * cell


def num_params(module):
    return sum(p.numel() for p in module.parameters())


@BUILD
@given(
    legal_actions(),
    st.sampled_from(["tensorflow", "mmdet"]),
    st.sampled_from([1, 2]),
    st.sampled_from([(128, 128), (256, 128), (96, 160)]),
)
def test_sampled_genotypes_build_and_run(actions, style, stacks, image):
    space = NASFPNSpace()
    neck = NASFPNNeck(space.decode(actions), IN_CHANNELS, 16, stacks=stacks, style=style)
    assert neck.out_channels == 16
    assert num_params(neck) == expected_params(IN_CHANNELS, 16, stacks, style)
    feats = make_feats(*image)
    outs = neck(feats)
    h, w = feats[0].shape[-2:]
    assert len(outs) == 5
    for level, out in enumerate(outs):
        # P_{3+l}: the projected C3..C5 sizes, then ceil-halving for P6, P7
        assert out.shape == (2, 16, math.ceil(h / 2**level), math.ceil(w / 2**level))
        if image[0] % 128 == 0 and image[1] % 128 == 0:
            assert out.shape[-2:] == (image[0] // 2 ** (3 + level), image[1] // 2 ** (3 + level))
    assert all(torch.isfinite(o).all() for o in outs)


def test_odd_input_sizes():
    """96x160: C3..C5 are 12x20, 6x10, 3x5; P6, P7 are 2x3 and 1x2."""
    for genotype in (PAPER, FPN):
        for style in ("tensorflow", "mmdet"):
            neck = NASFPNNeck(genotype, IN_CHANNELS, 16, stacks=2, style=style)
            outs = neck(make_feats(96, 160))
            assert [tuple(o.shape[-2:]) for o in outs] == [
                (12, 20),
                (6, 10),
                (3, 5),
                (2, 3),
                (1, 2),
            ]


def test_parameter_counts():
    r50 = [512, 1024, 2048]
    mmdet = NASFPNNeck(PAPER, r50, 256, stacks=7, style="mmdet")
    assert num_params(mmdet) == 29_990_144  # mmdetection NASFPN(stack_times=7), R-50, BN
    assert num_params(mmdet) == expected_params(r50, 256, 7, "mmdet")
    for style in ("tensorflow", "mmdet"):
        for stacks in (1, 7):
            neck = NASFPNNeck(PAPER, r50, 256, stacks=stacks, style=style)
            assert num_params(neck) == expected_params(r50, 256, stacks, style)
    assert num_params(NASFPNNeck(PAPER, r50, 256, stacks=7)) == 29_845_504
    # mmdet: the P6/P7 1x1 convs carry no bias (BN follows); cell convs do.
    assert all(m[0].bias is None for m in mmdet.extra)
    assert all(cell[1].bias is not None for cell in mmdet.stacks[0].cells)


def up(x, factor):
    return x.repeat_interleave(factor, -2).repeat_interleave(factor, -1)


def gp_reference(coarse, fine, style):
    if style == "tensorflow":
        return coarse + fine * torch.sigmoid(coarse.amax(dim=(2, 3), keepdim=True))
    return fine + coarse * torch.sigmoid(fine.mean(dim=(2, 3), keepdim=True))


def paper_stack_reference(cells, p, style):
    """The paper's pyramid written out by hand (Fig. 6), using the module's R-C-B blocks."""
    p3, p4, p5, p6, p7 = p
    down = F.max_pool2d
    p4_1 = cells[0](gp_reference(up(p6, 4), p4, style))
    p4_2 = cells[1](p4_1 + p4)
    p3_out = cells[2](up(p4_2, 2) + p3)
    p4_out = cells[3](p4_2 + down(p3_out, 2))
    p5_out = cells[4](gp_reference(down(p4_out, 2), down(p3_out, 4), style) + p5)
    p7_out = cells[5](gp_reference(down(p5_out, 4), down(p4_2, 8), style) + p7)
    p6_out = cells[6](gp_reference(up(p7_out, 2), down(p5_out, 2), style))
    return [p3_out, p4_out, p5_out, p6_out, p7_out]


@pytest.mark.parametrize("style", ["tensorflow", "mmdet"])
def test_paper_neck_matches_hand_reference(style):
    neck = NASFPNNeck(PAPER, IN_CHANNELS, 16, stacks=2, style=style).eval()
    feats = make_feats(256, 128)
    with torch.no_grad():
        pyramid = [lat(f) for lat, f in zip(neck.lateral, feats, strict=True)]
        for extra in neck.extra:
            pyramid.append(F.max_pool2d(extra(pyramid[-1]), 2))
        for stack in neck.stacks:
            pyramid = paper_stack_reference(stack.cells, pyramid, style)
        outs = neck(feats)
    for got, want in zip(outs, pyramid, strict=True):
        torch.testing.assert_close(got, want)


def test_unused_layer_rule_feeds_inputs_p5_and_p7():
    neck = NASFPNNeck(PAPER, IN_CHANNELS, 16).eval()
    stack = neck.stacks[0]
    g = torch.Generator().manual_seed(1)
    pyramid = [torch.randn(1, 16, s, s, generator=g, requires_grad=True) for s in (16, 8, 4, 2, 1)]
    outs = stack(pyramid)
    # No cell reads entry 2 (P5) or 4 (P7): only the rule connects them.
    read = {i for c in PAPER.cells for i in (c.input1, c.input2)}
    assert {2, 4}.isdisjoint(read)
    (grad_p7,) = torch.autograd.grad(outs[4].sum(), pyramid[4], retain_graph=True)
    (grad_p5,) = torch.autograd.grad(outs[2].sum(), pyramid[2], retain_graph=True)
    assert grad_p7.abs().sum() > 0 and grad_p5.abs().sum() > 0
    with torch.no_grad():
        bumped = [p.clone() for p in pyramid]
        bumped[4] += 1.0
        assert not torch.allclose(stack(bumped)[4], outs[4])


def test_global_pool_direction_on_hand_made_tensors():
    coarse = torch.tensor([[[[0.0, 2.0], [1.0, -1.0]], [[-3.0, -1.0], [-2.0, -5.0]]]])
    fine = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 3.0]]]])

    def sig(v):
        return 1.0 / (1.0 + math.exp(-v))

    # tensorflow: coarse + fine * sigmoid(max(coarse)); channel maxima 2 and -1
    tf = torch.tensor(
        [[[[sig(2.0), 2.0], [1.0, -1.0]], [[-3.0, -1.0], [-2.0, -5.0 + 3 * sig(-1.0)]]]]
    )
    # mmdet: fine + coarse * sigmoid(mean(fine)); channel means 0.25 and 0.75
    a, b = sig(0.25), sig(0.75)
    mm = torch.tensor([[[[1.0, 2 * a], [a, -a]], [[-3 * b, -b], [-2 * b, 3.0 - 5 * b]]]])
    for style, want in (("tensorflow", tf), ("mmdet", mm)):
        # coarse by level (5 > 3), whichever argument it is
        torch.testing.assert_close(merge("global_pool", coarse, fine, 5, 3, style), want)
        torch.testing.assert_close(merge("global_pool", fine, coarse, 3, 5, style), want)
        # level tie: the first argument is the coarse one
        torch.testing.assert_close(merge("global_pool", coarse, fine, 4, 4, style), want)
    torch.testing.assert_close(merge("sum", coarse, fine, 3, 5, "tensorflow"), coarse + fine)


def test_neck_option_errors():
    space = NASFPNSpace()
    for kwargs, needle in (
        ({"style": "caffe"}, "style"),
        ({"norm": "ln"}, "norm"),
        ({"stacks": 0}, "stacks"),
        ({"norm": "gn"}, "divisible by 32"),
    ):
        with pytest.raises(NasSearchError, match=needle):
            NASFPNNeck(PAPER, IN_CHANNELS, 16, **kwargs)
    with pytest.raises(NasSearchError, match="in_channels"):
        NASFPNNeck(PAPER, [8, 16], 16)
    with pytest.raises(NasSearchError, match="expected 8 cells, got 7"):
        NASFPNSpace(num_cells=8).genotype_from_dict(PAPER.to_dict())
    neck = NASFPNNeck(space.genotype_from_dict(PAPER.to_dict()), IN_CHANNELS, 16)
    with pytest.raises(NasSearchError, match="3 feature maps"):
        neck(make_feats(128, 128)[:2])


def test_cell_tuple_coercion():
    genotype = NASFPNGenotype(tuple(tuple(c) for c in PAPER.cells))
    assert genotype == PAPER and isinstance(genotype.cells[0], NASFPNCell)
