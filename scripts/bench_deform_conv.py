"""Benchmark: pure-PyTorch modulated deformable conv (DCNv2) against F.conv2d of the same shape.

Times forward and forward+backward (gradients for input, offset, mask, weight, bias) at B x C x S x S
feature maps with a 3x3 kernel, stride 1, padding 1; median over --iters after --warmup runs. Offsets
are random (std 1 pixel), masks random in (0, 1). The pure path is timed with its default
`grid_sample` sampler and with the `gather` one (what ONNX export traces); where torchvision
imports its kernel is timed too.
`cols MB` is the size of the sampled-columns tensor [B, C, 9, S*S] (float32) the pure path builds.
Prints a table and writes JSON.

    python scripts/bench_deform_conv.py --sizes 25 50 100 --batch 2 --channels 256 --out bench_deform_conv.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from nassearch.detectors.ops.deform_conv import deform_conv2d, torchvision_available


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], None], iters: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_one(
    size: int, batch: int, channels: int, dg: int, iters: int, warmup: int, device: torch.device
) -> dict:
    gen = torch.Generator().manual_seed(0)
    k = 9
    x = torch.randn(batch, channels, size, size, generator=gen).to(device)
    weight = (torch.randn(channels, channels, 3, 3, generator=gen) * 0.02).to(device)
    bias = torch.zeros(channels).to(device)
    offset = torch.randn(batch, 2 * dg * k, size, size, generator=gen).to(device)
    mask = torch.rand(batch, dg * k, size, size, generator=gen).to(device)
    leaves = [t.requires_grad_() for t in (x, weight, bias, offset, mask)]

    def conv_fwd() -> None:
        with torch.no_grad():
            F.conv2d(x, weight, bias, 1, 1)

    def conv_fwd_bwd() -> None:
        F.conv2d(x, weight, bias, 1, 1).sum().backward()

    def dcn(use_tv: bool, backward: bool, sampler: str = "grid_sample") -> Callable[[], None]:
        def fn() -> None:
            with torch.set_grad_enabled(backward):
                out = deform_conv2d(
                    x, offset, mask, weight, bias, 1, 1, 1, use_torchvision=use_tv, sampler=sampler
                )
                if backward:
                    out.sum().backward()

        return fn

    def clear() -> None:
        for t in leaves:
            t.grad = None

    row = {
        "size": size,
        "batch": batch,
        "channels": channels,
        "deform_groups": dg,
        "device": device.type,
        "cols_mb": batch * channels * k * size * size * 4 / 2**20,
        "conv2d_fwd_s": _time(conv_fwd, iters, warmup, device),
        "conv2d_fwd_bwd_s": _time(lambda: (clear(), conv_fwd_bwd()), iters, warmup, device),
        "pure_fwd_s": _time(dcn(False, False), iters, warmup, device),
        "pure_fwd_bwd_s": _time(lambda: (clear(), dcn(False, True)()), iters, warmup, device),
        "gather_fwd_s": _time(dcn(False, False, "gather"), iters, warmup, device),
        "gather_fwd_bwd_s": _time(
            lambda: (clear(), dcn(False, True, "gather")()), iters, warmup, device
        ),
        "torchvision_fwd_s": None,
        "torchvision_fwd_bwd_s": None,
    }
    if torchvision_available():
        row["torchvision_fwd_s"] = _time(dcn(True, False), iters, warmup, device)
        row["torchvision_fwd_bwd_s"] = _time(
            lambda: (clear(), dcn(True, True)()), iters, warmup, device
        )
    return row


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--channels", type=int, default=256)
    ap.add_argument("--deform-groups", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--out", default="bench_deform_conv.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    rows = [
        run_one(s, args.batch, args.channels, args.deform_groups, args.iters, args.warmup, device)
        for s in args.sizes
    ]
    header = (
        f"{'size':>5}{'cols MB':>9}{'conv fwd s':>12}{'dcn fwd s':>11}{'x':>7}"
        f"{'conv f+b s':>12}{'dcn f+b s':>11}{'x':>7}{'gather f+b s':>14}{'tv fwd s':>10}"
        f"{'tv f+b s':>10}"
    )
    print(
        f"B={args.batch} C={args.channels}->{args.channels} 3x3 s1 p1 dg={args.deform_groups} "
        f"device={device} threads={torch.get_num_threads()} (median of {args.iters})"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['size']:>5}{r['cols_mb']:>9.0f}{r['conv2d_fwd_s']:>12.4f}{r['pure_fwd_s']:>11.4f}"
            f"{r['pure_fwd_s'] / r['conv2d_fwd_s']:>7.1f}{r['conv2d_fwd_bwd_s']:>12.4f}"
            f"{r['pure_fwd_bwd_s']:>11.4f}{r['pure_fwd_bwd_s'] / r['conv2d_fwd_bwd_s']:>7.1f}"
            f"{r['gather_fwd_bwd_s']:>14.4f}"
            f"{_fmt(r['torchvision_fwd_s']):>10}{_fmt(r['torchvision_fwd_bwd_s']):>10}"
        )
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "torchvision": torchvision_available(),
        "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "results": rows}, f, indent=2)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
