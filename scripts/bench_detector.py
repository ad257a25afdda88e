"""Benchmark: train-step time, inference time and peak memory of RetinaNet-R50-FPN and FCOS-R50-FPN.

Each (detector, input size) runs in its own subprocess so that peak memory is its own. On CPU the
peak is the process's maximum resident set size (it includes Python and torch, ~0.3 GB; the
`rss_model_mb` column is the resident size after building the model, for reference); on CUDA it is
torch's peak allocated memory. Prints a table and writes JSON.

    python scripts/bench_detector.py --sizes 256 640 --batch 2 --out bench_detector.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import torch

DETECTORS = {"retinanet": "RetinaNet-R50-FPN", "fcos": "FCOS-R50-FPN"}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _fake_targets(
    batch: int, size: int, num_classes: int, gen: torch.Generator, device
) -> list[dict]:
    targets = []
    for _ in range(batch):
        n = 5
        xy = torch.rand(n, 2, generator=gen) * size * 0.7
        wh = 16 + torch.rand(n, 2, generator=gen) * size * 0.3
        boxes = torch.cat([xy, (xy + wh).clamp(max=size - 1)], dim=1)
        labels = torch.randint(0, num_classes, (n,), generator=gen)
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return targets


def run_one(
    detector: str, size: int, batch: int, iters: int, warmup: int, device_spec: str
) -> dict:
    from nassearch.config import validate_config
    from nassearch.detectors.build import build_detector
    from nassearch.device import resolve_device, use_bf16

    device = resolve_device(device_spec)
    cfg = validate_config({"model": {"type": detector, "backbone": {"depth": 50}}})
    torch.manual_seed(0)
    model = build_detector(cfg.model, num_classes=80).to(device)
    rss_model = _rss_mb()
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=gen).to(device)
    targets = _fake_targets(batch, size, 80, gen, device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    amp = use_bf16(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def train_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    for _ in range(warmup):
        train_step()
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        train_step()
    sync()
    train_s = (time.perf_counter() - t0) / iters

    model.eval()
    with torch.no_grad():
        for _ in range(warmup):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                model(images)
        sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                model(images)
        sync()
        infer_s = (time.perf_counter() - t0) / iters

    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _rss_mb()
    return {
        "detector": DETECTORS[detector],
        "input": f"{size}x{size}",
        "batch": batch,
        "device": str(device),
        "train_step_s": round(train_s, 4),
        "inference_s": round(infer_s, 4),
        "inference_img_per_s": round(batch / infer_s, 2),
        "peak_memory_mb": round(peak, 1),
        "peak_memory_kind": "cuda_allocated" if device.type == "cuda" else "process_max_rss",
        "rss_model_mb": round(rss_model, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 640])
    ap.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=list(DETECTORS))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    ap.add_argument("--out", default="bench_detector.json")
    ap.add_argument("--worker", nargs=2, metavar=("DETECTOR", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.worker:
        det, size = args.worker
        print(json.dumps(run_one(det, int(size), args.batch, args.iters, args.warmup, args.device)))
        return

    rows = []
    for det in args.detectors:
        for size in args.sizes:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                det,
                str(size),
                "--batch",
                str(args.batch),
                "--iters",
                str(args.iters),
                "--warmup",
                str(args.warmup),
                "--device",
                args.device,
            ]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"benchmark {det} {size} failed:\n{out.stderr}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))

    header = f"{'detector':<20}{'input':>9}{'batch':>6}{'device':>8}{'train step s':>14}{'infer s':>9}{'img/s':>7}{'peak MB':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['detector']:<20}{r['input']:>9}{r['batch']:>6}{r['device']:>8}"
            f"{r['train_step_s']:>14.3f}{r['inference_s']:>9.3f}{r['inference_img_per_s']:>7.1f}"
            f"{r['peak_memory_mb']:>9.0f}"
        )
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "results": rows}, f, indent=2)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
