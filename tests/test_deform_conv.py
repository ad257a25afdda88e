"""Tests for the pure-PyTorch modulated deformable convolution (DCNv2) against a per-pixel loop."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nassearch.detectors.ops import deform_conv
from nassearch.detectors.ops.deform_conv import (
    ModulatedDeformConv2d,
    deform_conv2d,
    torchvision_available,
)
from nassearch.errors import NasSearchError

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")

# Both pure-PyTorch samplers are held to the same per-pixel reference.
SAMPLERS = pytest.mark.parametrize("sampler", ["grid_sample", "gather"])


def _pure(*args, sampler: str) -> torch.Tensor:
    """deform_conv2d on the pure-PyTorch path with `sampler`."""
    return deform_conv2d(*args, use_torchvision=False, sampler=sampler)


def _bilinear(img: list[list[float]], y: float, x: float) -> float:
    """Bilinear sample of an H x W image with zero padding (torchvision's CPU kernel rule)."""
    h, w = len(img), len(img[0])
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0

    def px(i: int, j: int) -> float:
        return img[i][j] if 0 <= i < h and 0 <= j < w else 0.0

    return (
        (1 - ly) * (1 - lx) * px(y0, x0)
        + (1 - ly) * lx * px(y0, x0 + 1)
        + ly * (1 - lx) * px(y0 + 1, x0)
        + ly * lx * px(y0 + 1, x0 + 1)
    )


def _reference(x, offset, mask, weight, bias, stride, padding, dilation):
    """Direct loop over output pixels, output channels, input channels and kernel taps."""
    b_n, cin, _, _ = x.shape
    cout, cin_g, kh, kw = weight.shape
    k_n = kh * kw
    _, _, ho, wo = offset.shape
    dg = offset.shape[1] // (2 * k_n)
    groups = cin // cin_g
    cout_g = cout // groups
    xs, offs, ws = x.tolist(), offset.tolist(), weight.tolist()
    ms = None if mask is None else mask.tolist()
    out = torch.zeros(b_n, cout, ho, wo, dtype=F64)
    for b in range(b_n):
        for co in range(cout):
            g = co // cout_g
            for oy in range(ho):
                for ox in range(wo):
                    acc = 0.0 if bias is None else float(bias[co])
                    for cl in range(cin_g):
                        ci = g * cin_g + cl
                        d = ci // (cin // dg)
                        for i in range(kh):
                            for j in range(kw):
                                k = i * kw + j
                                dy = offs[b][2 * (d * k_n + k)][oy][ox]
                                dx = offs[b][2 * (d * k_n + k) + 1][oy][ox]
                                yy = oy * stride[0] - padding[0] + i * dilation[0] + dy
                                xx = ox * stride[1] - padding[1] + j * dilation[1] + dx
                                v = _bilinear(xs[b][ci], yy, xx)
                                if ms is not None:
                                    v *= ms[b][d * k_n + k][oy][ox]
                                acc += ws[co][cl][i][j] * v
                    out[b, co, oy, ox] = acc
    return out


def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _random_case(gen, b, cin, cout, h, w, k, stride, padding, dilation, dg, groups=1, spread=2.5):
    ho = _out_size(h, k, stride[0], padding[0], dilation[0])
    wo = _out_size(w, k, stride[1], padding[1], dilation[1])
    x = torch.randn(b, cin, h, w, generator=gen, dtype=F64)
    weight = torch.randn(cout, cin // groups, k, k, generator=gen, dtype=F64)
    bias = torch.randn(cout, generator=gen, dtype=F64)
    offset = (torch.rand(b, 2 * dg * k * k, ho, wo, generator=gen, dtype=F64) * 2 - 1) * spread
    # Some offsets far outside the image (must sample exactly zero).
    far = torch.rand(offset.shape, generator=gen) < 0.1
    offset = torch.where(far, offset.sign() * 9.0 + offset, offset)
    mask = torch.rand(b, dg * k * k, ho, wo, generator=gen, dtype=F64)
    return x, offset, mask, weight, bias


CONV_SETTINGS = [
    ((1, 1), (0, 0), (1, 1)),
    ((1, 1), (1, 1), (1, 1)),
    ((2, 2), (1, 1), (1, 1)),
    ((1, 1), (2, 2), (2, 2)),
    ((2, 1), (0, 1), (1, 2)),
]


@pytest.mark.parametrize("dg", [1, 2])
@pytest.mark.parametrize("stride,padding,dilation", CONV_SETTINGS)
@SAMPLERS
def test_matches_per_pixel_reference(stride, padding, dilation, dg, sampler):
    gen = torch.Generator().manual_seed(17 + dg)
    x, offset, mask, weight, bias = _random_case(
        gen, 2, 4, 3, 5, 6, 3, stride, padding, dilation, dg
    )
    got = _pure(x, offset, mask, weight, bias, stride, padding, dilation, sampler=sampler)
    want = _reference(x, offset, mask, weight, bias, stride, padding, dilation)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@SAMPLERS
def test_matches_reference_conv_groups_and_no_mask_no_bias(sampler):
    gen = torch.Generator().manual_seed(3)
    s, p, d = (1, 1), (1, 1), (1, 1)
    x, offset, _, weight, _ = _random_case(gen, 1, 4, 4, 5, 4, 3, s, p, d, dg=2, groups=2)
    got = deform_conv2d(
        x, offset, None, weight, None, s, p, d, use_torchvision=False, sampler=sampler
    )
    want = _reference(x, offset, None, weight, None, s, p, d)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@SAMPLERS
def test_chunking_does_not_change_result(monkeypatch, sampler):
    gen = torch.Generator().manual_seed(5)
    s, p, d = (1, 1), (1, 1), (1, 1)
    x, offset, mask, weight, bias = _random_case(gen, 2, 4, 3, 7, 9, 3, s, p, d, dg=2)
    whole = deform_conv2d(
        x, offset, mask, weight, bias, s, p, d, use_torchvision=False, sampler=sampler
    )
    # 2*4*9*5 elements per chunk -> chunks of 5 output pixels (63 pixels -> 13 chunks, last partial).
    monkeypatch.setattr(deform_conv, "_CHUNK_ELEMENTS", 2 * 4 * 9 * 5)
    chunked = deform_conv2d(
        x, offset, mask, weight, bias, s, p, d, use_torchvision=False, sampler=sampler
    )
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)


@SAMPLERS
def test_gradcheck_all_inputs(sampler):
    gen = torch.Generator().manual_seed(11)
    b, cin, cout, h, w, k, dg = 1, 4, 2, 4, 5, 3, 2
    x = torch.randn(b, cin, h, w, generator=gen, dtype=F64)
    # Integer part + fraction in [0.15, 0.85]: no sample within eps of a pixel row/column (kinks).
    n_off = 2 * dg * k * k
    whole = torch.randint(-2, 2, (b, n_off, h, w), generator=gen).to(F64)
    frac = 0.15 + 0.7 * torch.rand(b, n_off, h, w, generator=gen, dtype=F64)
    offset = whole + frac
    mask = torch.rand(b, dg * k * k, h, w, generator=gen, dtype=F64)
    weight = torch.randn(cout, cin, k, k, generator=gen, dtype=F64)
    bias = torch.randn(cout, generator=gen, dtype=F64)
    inputs = tuple(t.requires_grad_() for t in (x, offset, mask, weight, bias))

    def fn(x, offset, mask, weight, bias):
        return deform_conv2d(
            x, offset, mask, weight, bias, 1, 1, 1, use_torchvision=False, sampler=sampler
        )

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)
    # Offsets really get gradient (floor() must not cut the path).
    fn(*inputs).square().sum().backward()
    assert offset.grad.abs().sum() > 0 and mask.grad.abs().sum() > 0


@pytest.mark.parametrize("stride,padding,dilation", CONV_SETTINGS)
@SAMPLERS
def test_zero_offset_unit_mask_is_conv2d(stride, padding, dilation, sampler):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 6, 9, 8, generator=gen, dtype=F64)
    weight = torch.randn(5, 6, 3, 3, generator=gen, dtype=F64)
    bias = torch.randn(5, generator=gen, dtype=F64)
    want = F.conv2d(x, weight, bias, stride, padding, dilation)
    ho, wo = want.shape[-2:]
    offset = torch.zeros(2, 2 * 3 * 9, ho, wo, dtype=F64)  # dg = 3
    mask = torch.ones(2, 3 * 9, ho, wo, dtype=F64)
    for m in (mask, None):
        got = _pure(x, offset, m, weight, bias, stride, padding, dilation, sampler=sampler)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@SAMPLERS
def test_zero_offset_grouped_conv(sampler):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1, 6, 7, 7, generator=gen, dtype=F64)
    weight = torch.randn(9, 2, 3, 3, generator=gen, dtype=F64)  # groups = 3
    offset = torch.zeros(1, 2 * 9, 7, 7, dtype=F64)
    got = deform_conv2d(
        x, offset, None, weight, None, 1, 1, 1, use_torchvision=False, sampler=sampler
    )
    torch.testing.assert_close(got, F.conv2d(x, weight, None, 1, 1, 1, groups=3))


def _shift_pad(x: torch.Tensor, dy: int, dx: int, pad: int) -> torch.Tensor:
    """Zero-padded image read at (y + dy, x + dx): out[..., i, j] = x[..., i - pad + dy, j - pad + dx]."""
    h, w = x.shape[-2:]
    p = pad + max(abs(dy), abs(dx))
    padded = F.pad(x, (p, p, p, p))
    r, c = p - pad + dy, p - pad + dx
    return padded[..., r : r + h + 2 * pad, c : c + w + 2 * pad]


@SAMPLERS
def test_integer_offsets_per_deform_group_shift_the_image(sampler):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 4, 6, 7, generator=gen, dtype=F64)
    weight = torch.randn(3, 4, 3, 3, generator=gen, dtype=F64)
    shifts = [(1, -2), (-1, 3)]  # (dy, dx) for deformable groups 0 (channels 0-1) and 1 (2-3)
    offset = torch.zeros(2, 2, 9, 2, 6, 7, dtype=F64)  # [B, dg, K, (dy,dx), Ho, Wo]
    for g, (dy, dx) in enumerate(shifts):
        offset[:, g, :, 0] = dy
        offset[:, g, :, 1] = dx
    got = deform_conv2d(
        x,
        offset.reshape(2, 36, 6, 7),
        None,
        weight,
        None,
        1,
        1,
        1,
        use_torchvision=False,
        sampler=sampler,
    )
    shifted = torch.cat(
        [_shift_pad(x[:, :2], *shifts[0], 1), _shift_pad(x[:, 2:], *shifts[1], 1)], dim=1
    )
    torch.testing.assert_close(got, F.conv2d(shifted, weight), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tap", [0, 5])
@SAMPLERS
def test_offset_channel_layout_is_interleaved_dy_dx_row_major(tap, sampler):
    """Channel 2*(g*K+k) moves tap k of group g vertically, channel 2*(g*K+k)+1 horizontally."""
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(1, 2, 6, 6, generator=gen, dtype=F64)
    weight = torch.randn(2, 2, 3, 3, generator=gen, dtype=F64)
    offset = torch.zeros(1, 2 * 2 * 9, 6, 6, dtype=F64)
    g, dy, dx = 1, 2, -1
    offset[:, 2 * (g * 9 + tap)] = dy
    offset[:, 2 * (g * 9 + tap) + 1] = dx
    got = deform_conv2d(
        x, offset, None, weight, None, 1, 1, 1, use_torchvision=False, sampler=sampler
    )
    tap_only = torch.zeros_like(weight)
    tap_only[:, 1].view(2, 9)[:, tap] = weight[:, 1].reshape(2, 9)[:, tap]  # group 1 = channel 1
    want = F.conv2d(x, weight - tap_only, None, 1, 1)
    want = want + F.conv2d(_shift_pad(x, dy, dx, 1), tap_only)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@SAMPLERS
def test_fractional_offset_interpolates_and_outside_is_zero(sampler):
    x = torch.arange(12, dtype=F64).reshape(1, 1, 3, 4)
    weight = torch.ones(1, 1, 1, 1, dtype=F64)
    offset = torch.zeros(1, 2, 3, 4, dtype=F64)
    offset[0, 0, 0, 0], offset[0, 1, 0, 0] = 0.5, 0.25  # (0.5, 0.25): mean of rows 0/1 at x=0.25
    offset[0, 0, 0, 1] = -0.5  # y=-0.5: half of row 0 (zero padding above)
    offset[0, 1, 2, 3] = 1.0  # x=4 = W: outside
    offset[0, 0, 1, 1] = -2.0  # y=-1: on the border of the zero region
    got = deform_conv2d(x, offset, None, weight, None, use_torchvision=False, sampler=sampler)[0, 0]
    assert got[0, 0].item() == pytest.approx((0.25 + 4.25) / 2)
    assert got[0, 1].item() == pytest.approx(0.5 * 1.0)
    assert got[2, 3].item() == 0.0 and got[1, 1].item() == 0.0
    assert got[2, 2].item() == 10.0


@SAMPLERS
@pytest.mark.parametrize("size", [(7, 10), (96, 96), (1, 3)])
def test_offset_gradient_at_integer_positions_is_the_forward_difference(size, sampler):
    """At zero offsets (initialisation) every sample sits on a pixel; d out / d dy there is
    x[y + 1] - x[y] (zero past the border), the bilinear corners of floor(y) as in torchvision.
    grid_sample's coordinate normalisation must round-trip integers exactly for this to hold."""
    gen = torch.Generator().manual_seed(12)
    h, w = size
    x = torch.randn(1, 1, h, w, generator=gen)  # float32: rounding would show
    offset = torch.zeros(1, 2, h, w, requires_grad=True)
    weight = torch.ones(1, 1, 1, 1)
    out = deform_conv2d(x, offset, None, weight, use_torchvision=False, sampler=sampler)
    torch.testing.assert_close(out, x, rtol=0, atol=0)
    out.sum().backward()
    below = F.pad(x, (0, 0, 0, 1))[..., 1:, :]
    right = F.pad(x, (0, 1))[..., 1:]
    torch.testing.assert_close(offset.grad[:, 0:1], below - x, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(offset.grad[:, 1:2], right - x, rtol=1e-6, atol=1e-6)


def test_samplers_agree_in_float32_on_a_realistic_layer():
    """The fast sampler is the gather sampler up to float rounding: forward and every gradient."""
    gen = torch.Generator().manual_seed(13)
    x = torch.randn(2, 16, 40, 40, generator=gen)
    offset = torch.randn(2, 36, 40, 40, generator=gen) * 2
    mask = torch.rand(2, 18, 40, 40, generator=gen)
    weight = torch.randn(16, 16, 3, 3, generator=gen) * 0.1
    results = {}
    for sampler in ("grid_sample", "gather"):
        inputs = [t.clone().requires_grad_() for t in (x, offset, mask, weight)]
        out = deform_conv2d(*inputs, None, 1, 1, 1, use_torchvision=False, sampler=sampler)
        out.square().sum().backward()
        results[sampler] = [out, *(t.grad for t in inputs)]
    (out, x_grad, off_fast, mask_grad, w_grad) = results["grid_sample"]
    (want, x_want, off_slow, mask_want, w_want) = results["gather"]
    for fast, slow in ((out, want), (x_grad, x_want), (mask_grad, mask_want), (w_grad, w_want)):
        assert (fast - slow).abs().max() <= 1e-4 * slow.abs().max()
    # Offsets: the few samples within rounding of a pixel row may take the other one-sided
    # derivative; everywhere else the gradients agree to rounding.
    close = (off_fast - off_slow).abs() <= 1e-4 * off_slow.abs().max()
    assert close.float().mean() > 0.999


def test_unknown_sampler_raises():
    x, weight = torch.randn(1, 2, 4, 4), torch.randn(2, 2, 3, 3)
    with pytest.raises(NasSearchError, match="sampler 'bicubic' is not one of grid_sample, gather"):
        deform_conv2d(x, torch.zeros(1, 18, 4, 4), None, weight, padding=1, sampler="bicubic")


def test_bad_shapes_raise():
    x = torch.randn(1, 4, 5, 5)
    weight = torch.randn(3, 4, 3, 3)
    with pytest.raises(NasSearchError, match="offset shape"):
        deform_conv2d(x, torch.zeros(1, 18, 4, 4), None, weight, padding=1)
    with pytest.raises(NasSearchError, match="mask shape"):
        deform_conv2d(x, torch.zeros(1, 18, 5, 5), torch.ones(1, 18, 5, 5), weight, padding=1)
    with pytest.raises(NasSearchError, match="deformable groups"):
        deform_conv2d(x, torch.zeros(1, 54, 5, 5), None, weight, padding=1)


@pytest.mark.skipif(torchvision_available(), reason="torchvision importable")
def test_forcing_missing_torchvision_raises():
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(NasSearchError, match="torchvision"):
        deform_conv2d(
            x,
            torch.zeros(1, 18, 4, 4),
            None,
            torch.randn(1, 2, 3, 3),
            padding=1,
            use_torchvision=True,
        )


def _param_count(cin, cout, k, groups, dg, bias):
    return cout * cin // groups * k * k + (cout if bias else 0) + dg * 3 * k * k * (cin * k * k + 1)


def test_module_parameter_count_matches_mmcv():
    assert sum(
        p.numel() for p in ModulatedDeformConv2d(256, 256, deform_groups=2).parameters()
    ) == (714_550)
    for cin, cout, k, groups, dg, bias in [(8, 6, 3, 2, 4, False), (5, 7, 1, 1, 1, True)]:
        m = ModulatedDeformConv2d(cin, cout, k, 1, k // 2, 1, groups, dg, bias)
        n = sum(p.numel() for p in m.parameters())
        assert n == _param_count(cin, cout, k, groups, dg, bias)


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 2, 2)])
def test_module_at_init_is_half_conv_plus_bias(stride, padding, dilation):
    torch.manual_seed(0)
    m = ModulatedDeformConv2d(6, 4, 3, stride, padding, dilation, deform_groups=2).double()
    with torch.no_grad():
        m.bias.normal_()  # mmcv zero-initialises it; nonzero shows the bias is not modulated
    x = torch.randn(2, 6, 9, 10, dtype=F64)
    want = 0.5 * F.conv2d(x, m.weight, None, stride, padding, dilation) + m.bias[:, None, None]
    torch.testing.assert_close(m(x), want, rtol=1e-12, atol=1e-12)
    # Offsets are learnable from the zero init: conv_offset receives gradient.
    m(x).square().sum().backward()
    assert m.conv_offset.weight.grad.abs().sum() > 0


def test_module_splits_conv_offset_output_into_offset_then_mask():
    m = ModulatedDeformConv2d(2, 3, 3, deform_groups=2).double()
    dg_k = 2 * 9
    with torch.no_grad():
        m.conv_offset.bias.copy_(torch.linspace(-1, 1, 3 * dg_k, dtype=F64))
    x = torch.randn(1, 2, 5, 5, dtype=F64)
    offset, mask = m.offset_and_mask(x)
    b = m.conv_offset.bias
    torch.testing.assert_close(offset, b[: 2 * dg_k, None, None].expand(1, -1, 5, 5))
    torch.testing.assert_close(
        mask, torch.sigmoid(b[2 * dg_k :])[:, None, None].expand(1, -1, 5, 5)
    )
    want = deform_conv2d(x, offset, mask, m.weight, m.bias, 1, 1, 1, use_torchvision=False)
    torch.testing.assert_close(m(x), want)


@pytest.mark.skipif(not torchvision_available(), reason="torchvision not importable")
@pytest.mark.parametrize("stride,padding,dilation", CONV_SETTINGS[1:4])
def test_torchvision_fast_path_agrees(stride, padding, dilation):
    gen = torch.Generator().manual_seed(9)
    x, offset, mask, weight, bias = _random_case(
        gen, 2, 4, 4, 6, 7, 3, stride, padding, dilation, dg=2, groups=2
    )
    grads = []
    for use_tv in (False, True):
        inputs = [t.clone().requires_grad_() for t in (x, offset, mask, weight, bias)]
        out = deform_conv2d(*inputs, stride, padding, dilation, use_torchvision=use_tv)
        out.sin().sum().backward()
        grads.append([out.detach()] + [t.grad for t in inputs])
    for pure, tv in zip(*grads, strict=True):
        torch.testing.assert_close(pure, tv, rtol=1e-7, atol=1e-7)
