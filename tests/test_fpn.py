"""FPN neck: shapes on odd sizes, wiring against a functional reference, extra-level sources."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nassearch.detectors.necks.fpn import FPN
from nassearch.errors import NasSearchError

IN_CHANNELS = [16, 24, 40]


pytestmark = pytest.mark.usefixtures("one_thread")


def odd_features(batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    """C3..C5 of a 100x132 image: sizes follow ResNet's ceil-halving 100->50->25->13->7->4."""
    g = torch.Generator().manual_seed(seed)
    sizes = [(13, 17), (7, 9), (4, 5)]
    return [
        torch.randn(batch, c, h, w, generator=g)
        for c, (h, w) in zip(IN_CHANNELS, sizes, strict=True)
    ]


def conv_out(size: int) -> int:
    """Output size of a 3x3, stride-2, padding-1 conv."""
    return (size + 2 - 3) // 2 + 1


def up2_crop(x: torch.Tensor, size) -> torch.Tensor:
    """Nearest 2x upsampling by repetition, cropped to the finer map (bottom/right)."""
    return x.repeat_interleave(2, -2).repeat_interleave(2, -1)[..., : size[0], : size[1]]


def reference_fpn(fpn: FPN, feats):
    """Straight-line FPN from the module's weights (no norm): the paper's equations."""

    def conv(m, x, stride=1):
        return F.conv2d(x, m.conv.weight, m.conv.bias, stride=stride, padding=m.conv.padding)

    c3, c4, c5 = feats
    m5 = conv(fpn.lateral_convs[2], c5)
    m4 = conv(fpn.lateral_convs[1], c4) + up2_crop(m5, c4.shape[-2:])
    m3 = conv(fpn.lateral_convs[0], c3) + up2_crop(m4, c3.shape[-2:])
    p3, p4, p5 = (conv(fpn.fpn_convs[i], m) for i, m in enumerate([m3, m4, m5]))
    p6 = conv(fpn.extra_convs[0], c5 if fpn.extra_source == "input" else p5, stride=2)
    p7 = conv(fpn.extra_convs[1], F.relu(p6) if fpn.relu_before_extra else p6, stride=2)
    return [p3, p4, p5, p6, p7]


@pytest.mark.parametrize("extra_source", ["input", "output"])
def test_shapes_strides_channels_on_odd_sizes(extra_source):
    fpn = FPN(IN_CHANNELS, out_channels=32, extra_source=extra_source)
    outs = fpn(odd_features())
    h6, w6 = conv_out(4), conv_out(5)
    expected = [(13, 17), (7, 9), (4, 5), (h6, w6), (conv_out(h6), conv_out(w6))]
    assert [tuple(o.shape) for o in outs] == [(2, 32, h, w) for h, w in expected]
    assert (h6, w6) == (2, 3)
    assert fpn.out_channels == 32
    assert fpn.out_strides == [8, 16, 32, 64, 128]


@pytest.mark.parametrize("extra_source", ["input", "output"])
@pytest.mark.parametrize("relu_before_extra", [True, False])
def test_forward_matches_reference(extra_source, relu_before_extra):
    torch.manual_seed(0)
    fpn = FPN(IN_CHANNELS, 32, extra_source=extra_source, relu_before_extra=relu_before_extra)
    for m in fpn.modules():  # the zero-bias init would hide a missing bias
        if isinstance(m, nn.Conv2d):
            nn.init.uniform_(m.bias, -1, 1)
    feats = odd_features()
    with torch.no_grad():
        for got, ref in zip(fpn(feats), reference_fpn(fpn, feats), strict=True):
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_relu_before_extra_changes_p7():
    feats = odd_features()
    torch.manual_seed(0)
    with_relu = FPN(IN_CHANNELS, 32, relu_before_extra=True)
    torch.manual_seed(0)
    without = FPN(IN_CHANNELS, 32, relu_before_extra=False)
    a, b = with_relu(feats), without(feats)
    for i in range(4):
        torch.testing.assert_close(a[i], b[i])
    assert not torch.allclose(a[4], b[4])


def test_extra_source_wiring():
    feats = [f.requires_grad_() for f in odd_features()]
    on_input = FPN(IN_CHANNELS, 32, extra_source="input")
    on_output = FPN(IN_CHANNELS, 32, extra_source="output")
    assert on_input.extra_convs[0].conv.in_channels == IN_CHANNELS[-1]
    assert on_output.extra_convs[0].conv.in_channels == 32

    # "input": P6 is a function of C5 alone, bypassing P5's lateral and output convs
    on_input(feats)[3].sum().backward()
    assert on_input.fpn_convs[2].conv.weight.grad is None
    assert on_input.lateral_convs[2].conv.weight.grad is None
    assert feats[2].grad is not None and feats[0].grad is None and feats[1].grad is None

    # "output": P6 reads P5, so P5's lateral and output convs receive gradient from P6
    on_output(feats)[3].sum().backward()
    assert on_output.fpn_convs[2].conv.weight.grad is not None
    assert on_output.lateral_convs[2].conv.weight.grad is not None
    assert on_output.fpn_convs[1].conv.weight.grad is None


def test_top_down_pathway_reaches_fine_levels_only():
    fpn = FPN(IN_CHANNELS, 32)
    feats = odd_features()
    base = fpn(feats)
    bumped = fpn([feats[0], feats[1], feats[2] + 1.0])  # perturb C5
    assert all(not torch.allclose(a, b) for a, b in zip(base, bumped, strict=True))
    bumped = fpn([feats[0] + 1.0, feats[1], feats[2]])  # perturb C3: only P3 changes
    assert not torch.allclose(base[0], bumped[0])
    assert all(torch.equal(a, b) for a, b in zip(base[1:], bumped[1:], strict=True))


def test_init_xavier_uniform_zero_bias():
    torch.manual_seed(0)
    fpn = FPN([256, 512, 1024], out_channels=256)
    w = fpn.fpn_convs[0].conv.weight  # fan_in = fan_out = 256 * 9
    bound = (6.0 / (2 * 256 * 9)) ** 0.5
    assert w.abs().max().item() <= bound
    assert abs(w.std().item() / (bound / 3**0.5) - 1) < 0.02
    for m in fpn.modules():
        if isinstance(m, nn.Conv2d):
            assert torch.all(m.bias == 0)


@pytest.mark.parametrize(("norm", "norm_type"), [("bn", nn.BatchNorm2d), ("gn", nn.GroupNorm)])
def test_norm_layers(norm, norm_type):
    fpn = FPN(IN_CHANNELS, 64, norm=norm)
    convs = list(fpn.lateral_convs) + list(fpn.fpn_convs) + list(fpn.extra_convs)
    assert all(isinstance(m.norm, norm_type) and m.conv.bias is None for m in convs)
    outs = fpn(odd_features())
    assert [o.shape[1] for o in outs] == [64] * 5
    # normalised outputs: each BN/GN output has zero mean over its normalisation set
    if norm == "gn":
        g = outs[0].reshape(2, 32, -1)
        torch.testing.assert_close(g.mean(-1), torch.zeros(2, 32), atol=1e-5, rtol=0)


def test_num_outs_and_in_strides():
    fpn = FPN(IN_CHANNELS, 32, num_outs=3)
    assert len(fpn(odd_features())) == 3 and len(fpn.extra_convs) == 0
    assert fpn.out_strides == [8, 16, 32]
    four = FPN([8, 16, 24, 40], 32, num_outs=6)
    assert four.out_strides == [4, 8, 16, 32, 64, 128]
    assert FPN(IN_CHANNELS, 32, in_strides=[4, 8, 16]).out_strides == [4, 8, 16, 32, 64]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_outs": 2},
        {"extra_source": "p5"},
        {"norm": "ln"},
        {"norm": "gn", "out_channels": 48},
        {"in_strides": [8, 16]},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(NasSearchError) as info:
        FPN(IN_CHANNELS, **{"out_channels": 32, **kwargs})
    assert "\n" not in str(info.value)


def test_wrong_number_of_inputs():
    with pytest.raises(ValueError, match="expects 3"):
        FPN(IN_CHANNELS, 32)(odd_features()[:2])
