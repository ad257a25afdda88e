"""Device selection: `auto` picks CUDA when present; bf16 autocast and channels_last only on CUDA;
CPU intra-op threads for a block."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from nassearch.errors import NasSearchError


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn a config value (`auto`, `cpu`, `cuda`, `cuda:N`) into a torch.device, refusing unusable ones."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise NasSearchError(
            f"device: unknown device {spec!r} (use auto, cpu, cuda or cuda:N)"
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise NasSearchError(
                f"device: {spec!r} requested but CUDA is not available on this machine"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise NasSearchError(
                f"device: {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    return device


def use_bf16(device: torch.device, amp: str = "auto") -> bool:
    """bf16 autocast is used on CUDA only: `auto` and `bf16` enable it there, `off` never."""
    return device.type == "cuda" and amp in ("auto", "bf16")


def use_channels_last(device: torch.device, setting: str = "auto") -> bool:
    """channels_last memory format: `auto` uses it on CUDA only, `on` everywhere, `off` never.

    On CPU it speeds up large convolutions too (oneDNN skips its layout reorders: RetinaNet R-50
    NAS-FPN 7x256 trains 16% faster at 256 px, scripts/bench_detector.py), but it changes the
    floating-point summation order, so `auto` leaves CPU runs, whose proxy rewards are pinned,
    bit for bit as they were."""
    if setting == "on":
        return True
    return device.type == "cuda" and setting == "auto"


def follow_ray_threads() -> None:
    """Inside a Ray worker: torch takes the trial's CPU count, which Ray puts in OMP_NUM_THREADS."""
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch on `n` intra-op threads for the block, then back to what it had."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
