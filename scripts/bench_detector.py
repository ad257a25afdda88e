"""Benchmark: train-step time, inference time and peak memory of our detectors, optionally side by
side with mmdetection's identical models.

Detectors: RetinaNet R-50 FPN, FCOS R-50 FPN, RetinaNet R-50 NAS-FPN 7x256 (the paper genotype,
`style: mmdet`, so its 59,979,828 parameters are mmdetection's) and FCOS R-50 NAS-FCOS (the
paper's decoder and head, 38,567,674 parameters as in mmdetection). Each (detector, input size,
implementation) runs in its own subprocess so that peak memory is its own. On CPU the peak is
the process's maximum resident set size (it includes Python and torch, ~0.3 GB; `rss_model_mb` is
the resident size after building the model); on CUDA it is torch's peak allocated memory.

`--mmdet PYTHON` adds mmdetection's runs (scripts/mmdet_step.py run by that interpreter, for
example a separate virtualenv with mmdet 3.x and mmcv built with its ops): same input (random
images, 5 random boxes each, seeded), batch, optimiser (SGD), threads and timing; the two
implementations alternate `--rounds` times, so a drift of the machine's speed falls on both.
mmdetection is never a dependency: without `--mmdet` (or with an interpreter that cannot import
mmdet) that part is skipped with a message. Prints a table and writes JSON.

    python scripts/bench_detector.py --sizes 256 640 --batch 2 --out bench_detector.json
    python scripts/bench_detector.py --detectors retinanet_nasfpn --sizes 256 --threads 2 \
        --mmdet /path/to/mmdet-venv/bin/python --rounds 2
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
DETECTORS = {
    "retinanet": "RetinaNet-R50-FPN",
    "fcos": "FCOS-R50-FPN",
    "retinanet_nasfpn": "RetinaNet-R50-NASFPN-7x256",
    "fcos_nasfcos": "FCOS-R50-NASFCOS",
}
# Our model of each detector: a shipped config and overrides (the mmdetection variant of NAS-FPN).
CONFIGS = {
    "retinanet": (None, {"model": {"type": "retinanet", "backbone": {"depth": 50}}}),
    "fcos": (None, {"model": {"type": "fcos", "backbone": {"depth": 50}}}),
    "retinanet_nasfpn": (
        "experiments/retrain/retinanet_r50_nasfpn_7x256.yaml",
        ["model.neck.style=mmdet"],
    ),
    "fcos_nasfcos": ("experiments/retrain/fcos_r50_nasfcos.yaml", []),
}
MMDET_WORKER = Path(__file__).resolve().parent / "mmdet_step.py"


def model_config(detector: str):
    """The `model` section our side builds for `detector`."""
    from nassearch.config import apply_overrides, read_yaml, validate_config

    path, extra = CONFIGS[detector]
    if path is None:
        return validate_config(extra).model
    raw = apply_overrides(read_yaml(REPO / path), extra)
    return validate_config(raw, path, require_data=False).model


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
    detector: str,
    size: int,
    batch: int,
    iters: int,
    warmup: int,
    device_spec: str,
    channels_last: str = "auto",
) -> dict:
    from nassearch.detectors.build import build_detector
    from nassearch.device import resolve_device, use_bf16, use_channels_last

    device = resolve_device(device_spec)
    torch.manual_seed(0)
    model = build_detector(model_config(detector), num_classes=80).to(device)
    rss_model = _rss_mb()
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=gen).to(device)
    targets = _fake_targets(batch, size, 80, gen, device)
    memory_format = use_channels_last(device, channels_last)  # as train.channels_last does
    if memory_format:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
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

    def infer():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            model(images)

    model.train()
    train_s = median_seconds(train_step, iters, warmup, sync)
    model.eval()
    infer_s = median_seconds(infer, iters, warmup, sync)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _rss_mb()
    return {
        "detector": DETECTORS[detector],
        "implementation": "nassearch" + ("+cl" if memory_format else ""),
        "input": f"{size}x{size}",
        "batch": batch,
        "device": str(device),
        "params": sum(p.numel() for p in model.parameters()),
        "train_step_s": round(train_s, 4),
        "inference_s": round(infer_s, 4),
        "inference_img_per_s": round(batch / infer_s, 2),
        "peak_memory_mb": round(peak, 1),
        "peak_memory_kind": "cuda_allocated" if device.type == "cuda" else "process_max_rss",
        "rss_model_mb": round(rss_model, 1),
    }


def median_seconds(fn, iters: int, warmup: int, sync=lambda: None) -> float:
    """Median seconds of `iters` calls of `fn` after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _worker_command(python: str, script: str, detector: str, size: int, args) -> list[str]:
    cmd = [python, script, "--worker", detector, str(size), "--batch", str(args.batch)]
    cmd += ["--iters", str(args.iters), "--warmup", str(args.warmup), "--device", args.device]
    return cmd + (["--threads", str(args.threads)] if args.threads else [])


def _our_command(detector: str, size: int, args, channels_last: str) -> list[str]:
    cmd = _worker_command(sys.executable, __file__, detector, size, args)
    return cmd + ["--channels-last", channels_last]


def _run_worker(cmd: list[str], what: str) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"benchmark {what} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def mmdet_available(python: str) -> str | None:
    """None when `python` can import mmdet (and our worker's needs), else why not."""
    try:
        out = subprocess.run(
            [python, "-c", "import mmdet, mmcv, mmengine; print(mmdet.__version__)"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{python}: {exc}"
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines()
        return f"{python} cannot import mmdetection ({lines[-1] if lines else 'failed'})"
    return None


def step_ratios(rows: list[dict]) -> dict[tuple[str, str, str], dict[str, float]]:
    """Per (detector, input, our variant): our median seconds over mmdetection's, train step and
    inference."""

    def median(group: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in group)

    out = {}
    runs = dict.fromkeys((r["detector"], r["input"], r["implementation"]) for r in rows)
    for det, size, impl in runs:
        if impl == "mmdetection":
            continue
        mine = [
            r for r in rows if (r["detector"], r["input"], r["implementation"]) == (det, size, impl)
        ]
        theirs = [
            r
            for r in rows
            if (r["detector"], r["input"], r["implementation"]) == (det, size, "mmdetection")
        ]
        if theirs:
            out[(det, size, impl)] = {
                "train": median(mine, "train_step_s") / median(theirs, "train_step_s"),
                "inference": median(mine, "inference_s") / median(theirs, "inference_s"),
            }
    return out


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
    ap.add_argument(
        "--mmdet",
        default="auto",
        metavar="PYTHON",
        help="interpreter with mmdetection for side-by-side runs (auto: this one, if it has it)",
    )
    ap.add_argument(
        "--channels-last",
        nargs="+",
        default=["auto"],
        choices=["auto", "on", "off"],
        help="our side's train.channels_last setting(s); `on` is channels_last on CPU too",
    )
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds of every run")
    ap.add_argument("--out", default="bench_detector.json")
    ap.add_argument("--worker", nargs=2, metavar=("DETECTOR", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.worker:
        det, size = args.worker
        (setting,) = args.channels_last
        row = run_one(det, int(size), args.batch, args.iters, args.warmup, args.device, setting)
        print(json.dumps(row))
        return

    mmdet = sys.executable if args.mmdet == "auto" else args.mmdet
    skip = mmdet_available(mmdet)
    if skip is not None:
        print(f"mmdetection side skipped: {skip}")
    rows = []
    for _ in range(args.rounds):
        for det in args.detectors:
            for size in args.sizes:
                for setting in args.channels_last:
                    ours = _our_command(det, size, args, setting)
                    rows.append(_run_worker(ours, f"{det} {size}"))
                if skip is None:
                    theirs = _worker_command(mmdet, str(MMDET_WORKER), det, size, args)
                    rows.append(_run_worker(theirs, f"mmdetection {det} {size}"))

    header = (
        f"{'detector':<28}{'impl':>11}{'input':>9}{'batch':>6}{'device':>8}{'params':>12}"
        f"{'train step s':>14}{'infer s':>9}{'img/s':>7}{'peak MB':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['detector']:<28}{r['implementation']:>11}{r['input']:>9}{r['batch']:>6}"
            f"{r['device']:>8}{r['params']:>12,}{r['train_step_s']:>14.3f}{r['inference_s']:>9.3f}"
            f"{r['inference_img_per_s']:>7.1f}{r['peak_memory_mb']:>9.0f}"
        )
    ratios = step_ratios(rows)
    for (det, size, impl), ratio in ratios.items():
        print(
            f"{det} {size}: {impl} / mmdetection train step {ratio['train']:.2f}x, "
            f"inference {ratio['inference']:.2f}x (medians over rounds)"
        )
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    with open(args.out, "w") as f:
        json.dump(
            {
                "meta": meta,
                "results": rows,
                "ratios": {" ".join(k): r for k, r in ratios.items()},
            },
            f,
            indent=2,
        )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
