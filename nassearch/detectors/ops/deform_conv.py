"""Modulated deformable convolution v2 (Zhu et al. 2019, "Deformable ConvNets v2"), in plain PyTorch.

Used by the NAS-FCOS ops (`def_conv_3x3`). Semantics and tensor layouts are those of
``torchvision.ops.deform_conv2d`` and mmcv's ``modulated_deform_conv2d``:

* ``offset`` [B, 2*dg*kh*kw, Ho, Wo]: for deformable group ``g`` and kernel position ``k``
  (row-major over the kh x kw window, ``k = i*kw + j``) channel ``2*(g*K + k)`` is the vertical
  offset dy and channel ``2*(g*K + k) + 1`` the horizontal offset dx, in input pixels (K = kh*kw).
* ``mask`` [B, dg*kh*kw, Ho, Wo]: channel ``g*K + k`` multiplies the value sampled for that group and
  kernel position (the bias is added afterwards, unmodulated).
* Deformable group ``g`` covers the input channels ``[g*Cin/dg, (g+1)*Cin/dg)``.
* Output pixel (oy, ox) samples kernel position (i, j) at
  ``y = oy*stride_h - pad_h + i*dil_h + dy``, ``x = ox*stride_w - pad_w + j*dil_w + dx`` by bilinear
  interpolation with zero padding: corners outside the image count as 0, so any point outside
  (-1, H) x (-1, W) samples exactly 0.

The pure path builds the sampled "columns" tensor [B, Cin, K, L] (L = Ho*Wo) and contracts it with
the weight; autograd supplies the backward pass for input, offset, mask, weight and bias. Output
pixels are processed in chunks to bound the size of the temporaries. Two samplers build the columns:

* ``grid_sample`` (default): one fused ``F.grid_sample`` call per chunk, about 2x faster than
  ``gather`` forward + backward on CPU (16 channels at 96x96: 88 vs 162 ms). The input is
  zero-padded on the bottom/right to 2**m + 1 rows/columns (zeros there = outside, as above) so that
  the normalisation 2/(size - 1) is a power of two: integer sampling positions (every position at
  zero offsets, i.e. at initialisation) round-trip exactly, and the bilinear corners -- hence the
  one-sided gradient with respect to the offsets -- are those of the exact coordinate, as in
  torchvision and mmcv. Elsewhere it agrees with ``gather`` to float rounding.
* ``gather``: four ``torch.gather`` calls and the corner weights spelled out; used whenever the op is
  traced (ONNX export), whatever ``sampler`` says.

Where ``torchvision.ops.deform_conv2d`` imports it is used instead (compiled kernels).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nassearch.errors import NasSearchError

__all__ = ["ModulatedDeformConv2d", "deform_conv2d", "torchvision_available"]

# Upper bound on elements of one chunk's columns tensor (B * Cin * K * chunk_len); ~64 MB in float32.
_CHUNK_ELEMENTS = 1 << 24

Sampler = Literal["grid_sample", "gather"]
SAMPLERS: tuple[str, ...] = ("grid_sample", "gather")


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if len(value) != 2:
        raise NasSearchError(f"deform_conv2d: {name} must be an int or a pair, got {value!r}")
    return int(value[0]), int(value[1])


@functools.lru_cache(maxsize=1)
def _torchvision_op() -> Callable[..., Tensor] | None:
    """torchvision's compiled deform_conv2d, or None where torchvision does not import."""
    try:
        from torchvision.ops import deform_conv2d as tv_deform_conv2d
    except Exception:  # ImportError, or a torchvision built against another torch (RuntimeError)
        return None
    return tv_deform_conv2d


def torchvision_available() -> bool:
    """Whether the torchvision fast path can be used (checked once per process)."""
    return _torchvision_op() is not None


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    *,
    use_torchvision: bool | None = None,
    sampler: Sampler = "grid_sample",
) -> Tensor:
    """Modulated deformable convolution (DCNv2); ``mask=None`` gives DCNv1. Returns [B, Cout, Ho, Wo].

    Conv groups are inferred from ``weight.shape[1]`` (= Cin / groups) and deformable groups from
    ``offset.shape[1]`` (= 2 * dg * kh * kw), as in torchvision. ``use_torchvision``: None uses
    torchvision's kernel when it imports, True requires it, False forces the pure-PyTorch path,
    whose columns ``sampler`` builds (see the module docstring).
    """
    if sampler not in SAMPLERS:
        raise NasSearchError(
            f"deform_conv2d: sampler {sampler!r} is not one of {', '.join(SAMPLERS)}"
        )
    stride, padding, dilation = (
        _pair(stride, "stride"),
        _pair(padding, "padding"),
        _pair(dilation, "dilation"),
    )
    groups, dg, out_hw = _check_shapes(input, offset, mask, weight, bias, stride, padding, dilation)
    tv_op = _torchvision_op()
    if use_torchvision and tv_op is None:
        raise NasSearchError(
            "deform_conv2d: use_torchvision=True but torchvision cannot be imported"
        )
    if use_torchvision is not False and tv_op is not None:
        return tv_op(input, offset, weight, bias, stride, padding, dilation, mask)
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        sampler = "gather"  # traced shapes are tensors; the exported graph is plain Gather/Mul ops
    return _deform_conv2d_pure(
        input, offset, mask, weight, bias, stride, padding, dilation, groups, dg, out_hw, sampler
    )


def _check_shapes(
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int, tuple[int, int]]:
    """Validate shapes; return (conv groups, deformable groups, (Ho, Wo))."""
    if input.dim() != 4 or weight.dim() != 4 or offset.dim() != 4:
        raise NasSearchError(
            f"deform_conv2d: input, offset and weight must be 4-D, got {tuple(input.shape)}, "
            f"{tuple(offset.shape)}, {tuple(weight.shape)}"
        )
    b, cin, h, w = input.shape
    cout, cin_per_group, kh, kw = weight.shape
    if cin_per_group == 0 or cin % cin_per_group or cout % (cin // cin_per_group):
        raise NasSearchError(
            f"deform_conv2d: weight {tuple(weight.shape)} does not fit {cin} input channels"
        )
    groups = cin // cin_per_group
    k = kh * kw
    if offset.shape[1] % (2 * k) or offset.shape[1] == 0:
        raise NasSearchError(
            f"deform_conv2d: offset has {offset.shape[1]} channels, not a multiple of 2*kh*kw={2 * k}"
        )
    dg = offset.shape[1] // (2 * k)
    if cin % dg:
        raise NasSearchError(f"deform_conv2d: {dg} deformable groups do not divide {cin} channels")
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if ho <= 0 or wo <= 0:
        raise NasSearchError(f"deform_conv2d: input {h}x{w} too small for the kernel, output empty")
    if tuple(offset.shape) != (b, 2 * dg * k, ho, wo):
        raise NasSearchError(
            f"deform_conv2d: offset shape {tuple(offset.shape)}, expected {(b, 2 * dg * k, ho, wo)}"
        )
    if mask is not None and tuple(mask.shape) != (b, dg * k, ho, wo):
        raise NasSearchError(
            f"deform_conv2d: mask shape {tuple(mask.shape)}, expected {(b, dg * k, ho, wo)}"
        )
    if bias is not None and tuple(bias.shape) != (cout,):
        raise NasSearchError(f"deform_conv2d: bias shape {tuple(bias.shape)}, expected {(cout,)}")
    return groups, dg, (ho, wo)


def _deform_conv2d_pure(
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    dg: int,
    out_hw: tuple[int, int],
    sampler: Sampler = "grid_sample",
) -> Tensor:
    """DCNv2 as sampled columns [B, Cin, K, L] contracted with the weight, chunked over L."""
    b, cin, h, w = input.shape
    cout, _, kh, kw = weight.shape
    ho, wo = out_hw
    k, length = kh * kw, ho * wo
    dev, dt = input.device, input.dtype

    # Sampling positions without offsets, [K, L]: output pixel origin + dilated kernel tap.
    oy = torch.arange(ho, device=dev, dtype=dt) * stride[0] - padding[0]
    ox = torch.arange(wo, device=dev, dtype=dt) * stride[1] - padding[1]
    ky = torch.arange(kh, device=dev, dtype=dt).repeat_interleave(kw) * dilation[0]
    kx = torch.arange(kw, device=dev, dtype=dt).repeat(kh) * dilation[1]
    base_y = (ky[:, None, None] + oy[None, :, None]).expand(k, ho, wo).reshape(k, length)
    base_x = (kx[:, None, None] + ox[None, None, :]).expand(k, ho, wo).reshape(k, length)

    off = offset.reshape(b, dg, k, 2, length)  # interleaved (dy, dx) pairs, torchvision layout
    msk = None if mask is None else mask.reshape(b, dg, k, length)
    flat = input.reshape(b, dg, cin // dg, h * w)
    w_mat = weight.reshape(groups, cout // groups, (cin // groups) * k)

    if sampler == "grid_sample":
        # Padded source and grid coordinates; the scales are powers of two (exact products).
        hp, wp = _power_of_two_plus_one(h), _power_of_two_plus_one(w)
        scale_y, scale_x = 2.0 / (hp - 1), 2.0 / (wp - 1)
        source = F.pad(input, (0, wp - w, 0, hp - h)).reshape(b * dg, cin // dg, hp, wp)
        base_y, base_x = base_y * scale_y - 1, base_x * scale_x - 1

    chunk = max(1, _CHUNK_ELEMENTS // max(1, b * cin * k))
    outs = []
    for start in range(0, length, chunk):
        sl = slice(start, min(start + chunk, length))
        chunk_mask = None if msk is None else msk[..., sl]
        if sampler == "grid_sample":
            gy = base_y[:, sl] + off[:, :, :, 0, sl] * scale_y  # [B, dg, K, Lc]
            gx = base_x[:, sl] + off[:, :, :, 1, sl] * scale_x
            cols = _grid_sample_columns(source, gy, gx, chunk_mask)
        else:
            y = base_y[:, sl] + off[:, :, :, 0, sl]  # [B, dg, K, Lc]
            x = base_x[:, sl] + off[:, :, :, 1, sl]
            cols = _bilinear_columns(flat, y, x, h, w, chunk_mask)
        cols = cols.reshape(b, groups, (cin // groups) * k, -1)  # channel-major, then kernel tap
        outs.append(torch.matmul(w_mat, cols).reshape(b, cout, -1))
    out = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]
    if bias is not None:
        out = out + bias[:, None]
    return out.reshape(b, cout, ho, wo)


def _power_of_two_plus_one(size: int) -> int:
    """The smallest 2**m + 1 >= size (m >= 0): a padded size whose (size - 1) is a power of two."""
    return (1 << max(0, size - 2).bit_length()) + 1


def _grid_sample_columns(source: Tensor, gy: Tensor, gx: Tensor, mask: Tensor | None) -> Tensor:
    """Bilinear samples (zero padding) of source [B*dg, Cg, Hp, Wp] at normalised (align_corners)
    gy, gx [B, dg, K, Lc] -> [B, Cin, K, Lc], times the mask [B, dg, K, Lc] if given."""
    b, dg, k, lc = gy.shape
    grid = torch.stack((gx, gy), dim=-1).reshape(b * dg, k, lc, 2)
    vals = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    vals = vals.reshape(b, dg, -1, k, lc)  # [B, dg, Cg, K, Lc]
    if mask is not None:
        vals = vals * mask[:, :, None]
    return vals.reshape(b, -1, k, lc)


def _bilinear_columns(
    flat: Tensor, y: Tensor, x: Tensor, h: int, w: int, mask: Tensor | None
) -> Tensor:
    """Bilinear samples (zero padding) of flat [B, dg, Cg, H*W] at y, x [B, dg, K, Lc] -> [B, Cin, K, Lc]."""
    b, dg, cg, _ = flat.shape
    _, _, k, lc = y.shape
    y0, x0 = torch.floor(y), torch.floor(x)
    ly, lx = y - y0, x - x0  # gradients w.r.t. offsets flow through these fractions
    y0l, x0l = y0.long(), x0.long()
    cols = None
    for dy, wy in ((0, 1 - ly), (1, ly)):
        yi = y0l + dy
        valid_y = (yi >= 0) & (yi < h)
        for dx, wx in ((0, 1 - lx), (1, lx)):
            xi = x0l + dx
            valid = valid_y & (xi >= 0) & (xi < w)
            corner_w = wy * wx * valid.to(wy.dtype)
            if mask is not None:
                corner_w = corner_w * mask
            idx = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).reshape(b, dg, 1, k * lc)
            vals = torch.gather(flat, 3, idx.expand(b, dg, cg, k * lc))
            term = vals * corner_w.reshape(b, dg, 1, k * lc)
            cols = term if cols is None else cols + term
    return cols.reshape(b, dg * cg, k, lc)


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 layer that predicts its own offsets and mask, like mmcv's ``ModulatedDeformConv2dPack``.

    ``conv_offset`` = Conv2d(in_channels, deform_groups*3*k*k, k, stride, padding, dilation, bias=True),
    zero-initialised. Its output's first 2*dg*k*k channels are the offset (torchvision layout, see the
    module docstring; mmcv's ``o1, o2, m = chunk(3); cat(o1, o2)`` is the same split) and the last
    dg*k*k channels, through a sigmoid, are the mask. At initialisation offsets are 0 and the mask is
    sigmoid(0) = 0.5, so the layer equals ``0.5 * conv2d(x, weight) + bias``.

    Parameters (as mmcv): Cout*Cin/groups*k*k (weight) + Cout (bias, if any)
    + dg*3*k*k*Cin*k*k (conv_offset weight) + dg*3*k*k (conv_offset bias); e.g. 256->256, k=3, dg=2:
    589,824 + 256 + 124,416 + 54 = 714,550.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 1,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        deform_groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise NasSearchError(
                f"ModulatedDeformConv2d: groups={groups} must divide in_channels={in_channels} "
                f"and out_channels={out_channels}"
            )
        if in_channels % deform_groups:
            raise NasSearchError(
                f"ModulatedDeformConv2d: deform_groups={deform_groups} must divide "
                f"in_channels={in_channels}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        self.groups, self.deform_groups = groups, deform_groups
        # None: torchvision's kernel where it imports; False forces the pure path (ONNX export).
        self.use_torchvision: bool | None = None
        self.sampler: Sampler = "grid_sample"
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.conv_offset = nn.Conv2d(
            in_channels,
            deform_groups * 3 * kh * kw,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            bias=True,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """mmcv's init: weight ~ U(-1/sqrt(n), 1/sqrt(n)) with n = in_channels*kh*kw, zero bias and offsets."""
        n = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        bound = 1.0 / math.sqrt(n)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def offset_and_mask(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Predicted offset [B, 2*dg*K, Ho, Wo] and sigmoid mask [B, dg*K, Ho, Wo]."""
        n_off = 2 * self.deform_groups * self.kernel_size[0] * self.kernel_size[1]
        out = self.conv_offset(x)
        offset, mask = out[:, :n_off], out[:, n_off:]
        return offset, torch.sigmoid(mask)

    def forward(self, x: Tensor) -> Tensor:
        offset, mask = self.offset_and_mask(x)
        return deform_conv2d(
            x,
            offset,
            mask,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            use_torchvision=self.use_torchvision,
            sampler=self.sampler,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, deform_groups={self.deform_groups}, bias={self.bias is not None}"
        )
