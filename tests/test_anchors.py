"""Anchor generator on hand-computed cases: sizes, ratios, centres and location-major order."""

from __future__ import annotations

import math

import pytest
import torch

from nassearch.detectors.anchors import AnchorGenerator
from nassearch.errors import NasSearchError


def test_single_scale_square_anchors_by_hand():
    gen = AnchorGenerator(strides=(8,), octave_base_scale=2, scales_per_octave=1, ratios=(1.0,))
    (anchors,) = gen.grid_anchors([(2, 2)], device="cpu")
    # Size 8 * 2 = 16; centres (0,0), (8,0), (0,8), (8,8): x varies fastest.
    expected = [[-8, -8, 8, 8], [0, -8, 16, 8], [-8, 0, 8, 16], [0, 0, 16, 16]]
    assert anchors.tolist() == expected


def test_ratios_keep_area_and_center_offset():
    gen = AnchorGenerator(
        strides=(8,),
        octave_base_scale=2,
        scales_per_octave=1,
        ratios=(0.25, 4.0),
        center_offset=0.5,
    )
    (anchors,) = gen.grid_anchors([(1, 2)], device="cpu")
    # Size 16, area 256: h/w = 1/4 -> 32 x 8; h/w = 4 -> 8 x 32. Centres (4,4) and (12,4).
    expected = [
        [4 - 16, 4 - 4, 4 + 16, 4 + 4],
        [4 - 4, 4 - 16, 4 + 4, 4 + 16],
        [12 - 16, 4 - 4, 12 + 16, 4 + 4],
        [12 - 4, 4 - 16, 12 + 4, 4 + 16],
    ]
    assert anchors.tolist() == expected


def test_default_retinanet_anchors_2x2_stride_8():
    gen = AnchorGenerator()
    assert gen.num_anchors == 9
    levels = gen.grid_anchors([(2, 2), (1, 1), (1, 1), (1, 1), (1, 1)], device="cpu")
    assert [lvl.shape for lvl in levels] == [(36, 4), (9, 4), (9, 4), (9, 4), (9, 4)]
    anchors = levels[0]
    expected = []
    for y in range(2):
        for x in range(2):
            cx, cy = 8.0 * x, 8.0 * y
            for ratio in (0.5, 1.0, 2.0):
                for i in range(3):
                    size = 8 * 4 * 2 ** (i / 3)  # 32, 40.3, 50.8
                    w, h = size / math.sqrt(ratio), size * math.sqrt(ratio)
                    expected.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    torch.testing.assert_close(anchors, torch.tensor(expected, dtype=torch.float32))
    # First anchor: ratio 0.5, size 32 -> 45.25 x 22.63 at (0, 0).
    torch.testing.assert_close(
        anchors[0],
        torch.tensor([-16 * math.sqrt(2), -8 * math.sqrt(2), 16 * math.sqrt(2), 8 * math.sqrt(2)]),
    )
    # Level 4 (stride 128): its square anchors are 512, 645, 813 wide.
    widths = levels[4][3:6, 2] - levels[4][3:6, 0]
    torch.testing.assert_close(
        widths, torch.tensor([512.0, 512 * 2 ** (1 / 3), 512 * 2 ** (2 / 3)])
    )


def test_layout_matches_permuted_head_output():
    """Anchor k of a level lines up with row k of (B, A*C, H, W) -> (B, H*W*A, C)."""
    gen = AnchorGenerator(strides=(16,))
    h, w, a = 3, 5, gen.num_anchors
    (anchors,) = gen.grid_anchors([(h, w)], device="cpu")
    assert anchors.shape == (h * w * a, 4)
    # Encode each location/anchor index into a fake head output and permute it like the detector.
    y, x, k = torch.meshgrid(torch.arange(h), torch.arange(w), torch.arange(a), indexing="ij")
    fake = torch.stack([y, x, k], dim=-1).float()  # [H, W, A, 3]
    head = fake.permute(2, 3, 0, 1).reshape(1, a * 3, h, w)  # [B, A*C, H, W] with C = 3
    rows = head.view(1, a, 3, h, w).permute(0, 3, 4, 1, 2).reshape(-1, 3)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    torch.testing.assert_close(centres[:, 0], rows[:, 1] * 16)
    torch.testing.assert_close(centres[:, 1], rows[:, 0] * 16)
    base = gen.base_anchors(16).float()
    torch.testing.assert_close(anchors - torch.cat([centres, centres], 1), base[rows[:, 2].long()])


def test_dtype_and_bad_input():
    gen = AnchorGenerator()
    levels = gen.grid_anchors([(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)], "cpu", torch.float64)
    assert all(lvl.dtype == torch.float64 for lvl in levels)
    with pytest.raises(NasSearchError, match="feature maps"):
        gen.grid_anchors([(4, 4)], "cpu")
    with pytest.raises(NasSearchError, match="ratios"):
        AnchorGenerator(ratios=(0.0,))
