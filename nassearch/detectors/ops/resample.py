"""Resampling feature maps between pyramid levels: the NAS-FPN cells' nearest/max-pool rule and
the NAS-FCOS decoder's interpolation."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor


def resize(x: Tensor, size: Sequence[int], mode: str = "bilinear") -> Tensor:
    """Resize to `size` (no-op when already there); bilinear uses align_corners=False."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "bilinear":
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    return F.interpolate(x, size=tuple(size), mode=mode)


def fit(x: Tensor, size: Sequence[int]) -> Tensor:
    """Crop (bottom/right) or edge-pad a map to exactly `size` (H, W)."""
    h, w = int(size[0]), int(size[1])
    x = x[..., :h, :w]
    ph, pw = h - x.shape[-2], w - x.shape[-1]
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x


def resample(x: Tensor, src_level: int, dst_level: int, size: Sequence[int]) -> Tensor:
    """NAS-FPN's rule: nearest upsampling by 2^d or max pooling with kernel = stride = 2^d, then
    fit to `size`.

    Pooling uses ceil_mode (windows cut at the bottom/right border), like TF's SAME padding up
    to where the border falls, so odd sizes give ceil(s / 2^d).
    """
    if src_level > dst_level:
        x = F.interpolate(x, scale_factor=2 ** (src_level - dst_level), mode="nearest")
    elif src_level < dst_level:
        factor = 2 ** (dst_level - src_level)
        x = F.max_pool2d(x, factor, factor, ceil_mode=True)
    return fit(x, size)
