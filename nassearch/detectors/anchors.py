"""RetinaNet anchors: several scales and aspect ratios at every location of every pyramid level."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from nassearch.errors import NasSearchError

if TYPE_CHECKING:
    from nassearch.config import RetinaNetConfig


class AnchorGenerator:
    """Anchors for pyramid levels of the given strides (RetinaNet paper, section 4).

    At a level of stride s the anchor sizes are s * octave_base_scale * 2**(i / scales_per_octave),
    i < scales_per_octave, each at every ratio r = h / w with the area kept. Anchor index
    a = ratio_index * scales_per_octave + scale_index; anchors are laid out location-major
    (y, then x, then a), the order of head outputs permuted (B, A*C, H, W) -> (B, H*W*A, C).
    """

    @classmethod
    def from_config(cls, cfg: RetinaNetConfig, strides: Sequence[int]) -> AnchorGenerator:
        return cls(
            strides=strides,
            octave_base_scale=cfg.octave_base_scale,
            scales_per_octave=cfg.scales_per_octave,
            ratios=tuple(cfg.ratios),
        )

    def __init__(
        self,
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        octave_base_scale: float = 4,
        scales_per_octave: int = 3,
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
        center_offset: float = 0.0,
    ) -> None:
        if not strides or any(s <= 0 for s in strides):
            raise NasSearchError(f"anchors: strides must be positive, got {list(strides)}")
        if scales_per_octave < 1 or octave_base_scale <= 0:
            raise NasSearchError(
                f"anchors: need scales_per_octave >= 1 and octave_base_scale > 0, "
                f"got {scales_per_octave} and {octave_base_scale}"
            )
        if not ratios or any(r <= 0 for r in ratios):
            raise NasSearchError(f"anchors: ratios must be positive, got {list(ratios)}")
        self.strides = tuple(int(s) for s in strides)
        self.octave_base_scale = float(octave_base_scale)
        self.scales_per_octave = int(scales_per_octave)
        self.ratios = tuple(float(r) for r in ratios)
        self.center_offset = float(center_offset)
        # Anchors of the feature-map sizes seen so far: a fixed input size asks for the same
        # ones at every step. Keyed by (sizes, device, dtype); a handful of sizes at most.
        self._cache: dict[tuple, tuple[list[Tensor], Tensor]] = {}

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map location."""
        return len(self.ratios) * self.scales_per_octave

    def base_anchors(self, stride: int) -> Tensor:
        """The [A, 4] anchors of one location centred at (0, 0), in float64."""
        octave = torch.arange(self.scales_per_octave, dtype=torch.float64) / self.scales_per_octave
        sizes = stride * self.octave_base_scale * 2.0**octave
        ratios = torch.tensor(self.ratios, dtype=torch.float64)
        h_ratio = ratios.sqrt()
        w_ratio = 1.0 / h_ratio
        ws = (w_ratio[:, None] * sizes[None, :]).reshape(-1)
        hs = (h_ratio[:, None] * sizes[None, :]).reshape(-1)
        return torch.stack((-ws, -hs, ws, hs), dim=1) / 2

    def grid_anchors(
        self,
        feature_shapes: Sequence[tuple[int, int]],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> list[Tensor]:
        """Per level, the [H*W*A, 4] xyxy anchors of a feature map of shape (H, W) (cached;
        the tensors are shared, do not modify them in place)."""
        return list(self._cached(feature_shapes, device, dtype)[0])

    def all_anchors(
        self,
        feature_shapes: Sequence[tuple[int, int]],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """`grid_anchors` of every level concatenated, [N, 4] (cached and shared likewise)."""
        return self._cached(feature_shapes, device, dtype)[1]

    def _cached(
        self, feature_shapes: Sequence[tuple[int, int]], device, dtype: torch.dtype
    ) -> tuple[list[Tensor], Tensor]:
        key = (
            tuple((int(h), int(w)) for h, w in feature_shapes),
            str(torch.device(device or "cpu")),
            dtype,
        )
        if key not in self._cache:
            if len(self._cache) >= 16:  # multi-scale training: keep the most recent sizes
                self._cache.pop(next(iter(self._cache)))
            levels = self._compute(key[0], device, dtype)
            self._cache[key] = (levels, torch.cat(levels, dim=0))
        return self._cache[key]

    def _compute(
        self, feature_shapes: Sequence[tuple[int, int]], device, dtype: torch.dtype
    ) -> list[Tensor]:
        if len(feature_shapes) != len(self.strides):
            raise NasSearchError(
                f"anchors: got {len(feature_shapes)} feature maps for {len(self.strides)} strides "
                f"{list(self.strides)}"
            )
        out = []
        for (h, w), stride in zip(feature_shapes, self.strides, strict=True):
            # Sizes are computed in float64 on the CPU, the grid in float32 on the target device
            # (some accelerators have no float64).
            base = self.base_anchors(stride).to(device=device, dtype=torch.float32)
            offset = self.center_offset * stride
            xs = torch.arange(w, dtype=torch.float32, device=device) * stride + offset
            ys = torch.arange(h, dtype=torch.float32, device=device) * stride + offset
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            shifts = torch.stack((xx, yy, xx, yy), dim=-1).reshape(-1, 1, 4)
            out.append((shifts + base[None]).reshape(-1, 4).to(dtype))
        return out
