"""Batch collation for detection: pad images bottom/right to a common, stride-friendly size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nassearch.errors import NasSearchError


def _round_up(x: int, d: int | None) -> int:
    return x if not d or d <= 1 else -(-x // d) * d


def collate_detection(
    batch: Sequence[tuple[torch.Tensor, dict[str, Any]]],
    size_divisor: int | None = 32,
    pad_to: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Stack (image [3,h,w], target) samples into images [B,3,Hp,Wp] padded with 0, and targets.

    Hp, Wp = batch max rounded up to `size_divisor`, or the fixed `pad_to` (h, w) when given
    (NAS-FPN's square inputs). Padding is bottom/right so box coordinates stay valid.
    """
    if len(batch) == 0:
        raise ValueError("collate_detection got an empty batch")
    images = [img for img, _ in batch]
    targets = [tgt for _, tgt in batch]
    max_h = max(int(img.shape[-2]) for img in images)
    max_w = max(int(img.shape[-1]) for img in images)
    if pad_to is not None:
        ph, pw = int(pad_to[0]), int(pad_to[1])
        if max_h > ph or max_w > pw:
            raise NasSearchError(
                f"collate_detection: image {max_h}x{max_w} does not fit the fixed pad size {ph}x{pw}"
            )
    else:
        ph, pw = _round_up(max_h, size_divisor), _round_up(max_w, size_divisor)
    out = images[0].new_zeros((len(images), images[0].shape[0], ph, pw))
    for i, img in enumerate(images):
        out[i, :, : img.shape[-2], : img.shape[-1]].copy_(img)
    return out, targets
