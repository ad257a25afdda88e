"""CUDA check: two search trials sharing one GPU with bf16 autocast; peak memory; GPU vs CPU epoch speed.

(a) A small search (`nassearch.search.run_search`) on synthetic data: random controller, 4
architectures, no baselines, `search.gpus_per_trial: 0.5` and `max_concurrent: 2` (two trials on
one GPU), `train.amp: bf16` and `train.channels_last: on`. Reported per trial: its record's
training seconds and status, and its [start, end] from its last Tune report
(`<exp>/tune/trial_*/result.json`: timestamp - time_total_s, whole seconds), from which the most
trials running at once for over a second is computed (2: the trials did share the GPU); also the
search's wall time and `ray.cluster_resources()`. Peak GPU memory per trial is not in the
records, so the first two recorded architectures are evaluated again in this process with
`evaluate_candidate` (after one untimed 1-iteration warm-up), each after
`torch.cuda.reset_peak_memory_stats()`, reading `max_memory_allocated` / `max_memory_reserved`
(one trial's tensors; each trial process also holds its own CUDA context, ~0.5 GB, not counted).
(b) GPU vs CPU speed of one proxy epoch: the first architecture, `train.epochs: 1`, evaluated on
CUDA (bf16, warm: (a) already ran it) and on CPU (all of torch's threads); training seconds of
each and their ratio.

(c) `--concurrency 1 2 4`: the same search once per setting, with k trials per GPU
(`gpus_per_trial` 1/k, `max_concurrent` k, more architectures so each slot sees several), and
architectures per GPU-hour from its wall time: whether packing small trials pays, measured.

Without CUDA it prints one line, writes `{"cuda": false, ...}` with `--out`, and exits 0 (1 with
`--require-cuda`). Prints tables and writes JSON (`--out`).

    python scripts/gpu_check.py --out gpu_check.json
    python scripts/gpu_check.py --archs 6 --epochs 3 --set data.synthetic.image_size=320 input.size=320
    python scripts/gpu_check.py --concurrency 1 2 4 --archs 8 --out packing.json

`--device cpu` (hidden) runs the same code on CPU with tiny settings, to check the logic without
a GPU (gpus_per_trial 0; peak GPU memory is then not measured).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nassearch.config import ExperimentConfig, apply_overrides, validate_config
from nassearch.errors import NasSearchError

NAME = "gpu-check"


def raw_config(device: str, archs: int, epochs: float, cpus_per_trial: float) -> dict[str, Any]:
    """The search config: NAS-FCOS FPN space, FCOS R-18 on 256 px images (tiny on CPU)."""
    gpu = device != "cpu"
    size = 256 if gpu else 64
    return {
        "name": NAME,
        "seed": 0,
        "device": device,
        "data": {
            "type": "synthetic",
            "synthetic": {
                "num_train": 256 if gpu else 16,
                "num_val": 8 if gpu else 2,
                "image_size": size,
                "max_object_size": 128 if gpu else 48,
            },
        },
        "input": {"mode": "square", "size": size, "size_divisor": 32},
        "model": {
            "type": "fcos",
            # A trained backbone (no feature cache): the GPU runs backbone, neck and head.
            "backbone": {"depth": 18 if gpu else 10, "frozen_stages": 1, "norm_eval": True},
            "neck": {"out_channels": 64 if gpu else 16},
            # 64, not 32: FCOS's GroupNorm(32) head fails on a 1x1 P7 with 32 channels at batch 1.
            "feat_channels": 64,
            "num_convs": 2 if gpu else 1,
        },
        "train": {
            "epochs": epochs,
            "batch_size": 8 if gpu else 4,
            "amp": "bf16",
            "channels_last": "on",
            "tensorboard": False,
        },
        "eval": {"batch_size": 8 if gpu else 4},
        "proxy": {"reward": "ap", "reward_holdout": 32 if gpu else 4},
        "search": {
            "space": "nasfcos",
            "space_options": {"part": "fpn"},
            "controller": "random",
            "num_architectures": archs,
            "max_concurrent": 2,
            "cpus_per_trial": cpus_per_trial,
            "gpus_per_trial": 0.5 if gpu else 0,
            "baselines": [],
        },
    }


def build_config(args: argparse.Namespace) -> ExperimentConfig:
    """The validated search config for these flags (tiny defaults with --device cpu)."""
    cpu = args.device == "cpu"
    archs = args.archs or (2 if cpu else 4)
    epochs = args.epochs or (1 if cpu else 2)
    cpus = args.cpus_per_trial or (1 if cpu else 2)
    raw = raw_config(args.device, archs, epochs, cpus)
    raw["seed"] = args.seed
    return validate_config(apply_overrides(raw, args.overrides), "gpu_check config")


def trial_intervals(tune_dir: Path) -> dict[str, tuple[float, float]]:
    """Per trial id: (start, end) Unix time from its last report (timestamp - time_total_s)."""
    out = {}
    for path in sorted(tune_dir.glob("trial_*/result.json")):
        reports = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if reports:
            last = reports[-1]
            end = float(last["timestamp"])
            out[path.parent.name.removeprefix("trial_")] = (end - last["time_total_s"], end)
    return out


def concurrency_seconds(intervals: list[tuple[float, float]]) -> dict[int, float]:
    """Seconds during which exactly k intervals overlap, for every k >= 1 that occurs."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    seconds: dict[int, float] = {}
    running, previous = 0, None
    for time_point, step in events:
        if running and previous is not None:
            seconds[running] = seconds.get(running, 0.0) + time_point - previous
        running, previous = running + step, time_point
    return seconds


def max_concurrent(intervals: list[tuple[float, float]], resolution: float = 1.0) -> int:
    """The most trials running at once for longer than `resolution` (Tune timestamps are whole seconds)."""
    seconds = concurrency_seconds(intervals)
    return max((k for k, s in seconds.items() if s > resolution), default=min(1, len(intervals)))


def run_search_part(cfg: ExperimentConfig, storage: Path) -> dict[str, Any]:
    """Run the search; records, trial intervals, overlap, wall time and Ray resources."""
    import ray

    from nassearch.search import experiment_dir, run_search

    resources = dict(ray.cluster_resources())  # before Tune adds its placement-group entries
    start = time.perf_counter()
    records = run_search(cfg, storage=str(storage), log=print)
    wall = time.perf_counter() - start
    intervals = trial_intervals(experiment_dir(cfg, str(storage)) / "tune")
    t0 = min((s for s, _ in intervals.values()), default=0.0)
    trials = []
    for r in records:
        span = intervals.get(r.trial_id)
        trials.append(
            {
                "trial_id": r.trial_id,
                "key": r.key,
                "genotype": r.genotype,
                "status": str(r.status),
                "message": r.message,
                "reward": r.reward,
                "train_seconds": r.train_seconds,
                "start_s": None if span is None else span[0] - t0,
                "end_s": None if span is None else span[1] - t0,
            }
        )
    most = max_concurrent(list(intervals.values()))
    return {
        "wall_seconds": wall,
        "trials": trials,
        "concurrency_seconds": concurrency_seconds(list(intervals.values())),
        "max_concurrent_trials": most,
        "overlapped": most >= 2,
        "ray_cluster_resources": resources,
    }


def search_on_own_ray(cfg: ExperimentConfig, storage: Path) -> dict[str, Any]:
    """`run_search_part` on a Ray instance of its own (never one a `ray start` left running), in
    a short folder: Ray's Unix socket paths must stay short."""
    import ray

    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    ray.init(
        address="local",
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _temp_dir=ray_tmp,
    )
    try:
        return run_search_part(cfg, storage)
    finally:
        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def concurrency_sweep(args: argparse.Namespace, storage: Path) -> list[dict[str, Any]]:
    """Part (c): one search per k in --concurrency, k trials sharing each GPU."""

    rows = []
    for k in args.concurrency:
        cfg = build_config(args)
        gpu = args.device != "cpu"
        search = cfg.search.model_copy(
            update={"max_concurrent": k, "gpus_per_trial": (1 / k) if gpu else 0}
        )
        cfg = cfg.model_copy(update={"search": search, "name": f"{NAME}-x{k}"})
        part = search_on_own_ray(cfg, storage)
        done = sum(t["status"] == "ok" for t in part["trials"])
        gpus = 1 if gpu else 0
        rows.append(
            {
                "trials_per_gpu": k,
                "gpus_per_trial": search.gpus_per_trial,
                "architectures": len(part["trials"]),
                "ok": done,
                "wall_seconds": part["wall_seconds"],
                "max_concurrent_trials": part["max_concurrent_trials"],
                "architectures_per_gpu_hour": (
                    3600 * done / (part["wall_seconds"] * gpus) if gpus else None
                ),
                "architectures_per_hour": 3600 * done / part["wall_seconds"],
            }
        )
        print(
            f"{k} trial(s) per GPU: {done}/{len(part['trials'])} ok in "
            f"{part['wall_seconds']:.0f} s, at most {part['max_concurrent_trials']} at once, "
            f"{rows[-1]['architectures_per_hour']:.1f} architectures/hour"
        )
    return rows


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warm_up(genotype: Any, cfg: ExperimentConfig, datasets: Any) -> float:
    """An untimed 1-iteration run: CUDA context, cuDNN, lazy imports; returns its seconds."""
    from nassearch.proxy_eval.proxy_task import evaluate_candidate

    short = cfg.model_copy(deep=True)
    short.train.max_iters = 1
    start = time.perf_counter()
    evaluate_candidate(genotype, short, datasets=datasets)
    return time.perf_counter() - start


def measure_peak(genotype: Any, cfg: ExperimentConfig, datasets: Any) -> dict[str, Any]:
    """One architecture evaluated here: wall and training seconds, peak CUDA memory in MB."""
    from nassearch.device import resolve_device
    from nassearch.proxy_eval.proxy_task import evaluate_candidate

    device = resolve_device(cfg.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    result = evaluate_candidate(genotype, cfg, datasets=datasets)
    sync(device)
    return {
        "key": genotype.key(),
        "device": str(device),
        "status": result.status,
        "message": result.message,
        "seconds": time.perf_counter() - start,
        "train_seconds": result.train_seconds,
        "peak_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
        "peak_reserved_mb": torch.cuda.max_memory_reserved(device) / 2**20 if cuda else None,
        "params": result.params,
        "macs": result.macs,
    }


def epoch_speed(genotype: Any, cfg: ExperimentConfig, datasets: Any) -> dict[str, Any]:
    """One proxy epoch of the same architecture and data on the configured device and on CPU."""
    one = cfg.model_copy(deep=True)
    one.train.epochs = 1
    one.train.max_iters = None
    cpu = one.model_copy(deep=True)
    cpu.device = "cpu"
    fast = measure_peak(genotype, one, datasets)
    slow = measure_peak(genotype, cpu, datasets)
    ratio = slow["train_seconds"] / fast["train_seconds"] if fast["train_seconds"] else None
    iters = -(-len(datasets[0]) // cfg.train.batch_size)
    return {
        "iterations": iters,
        "cpu_threads": torch.get_num_threads(),
        "gpu": fast,
        "cpu": slow,
        "cpu_over_gpu": ratio,
    }


def print_tables(report: dict[str, Any]) -> None:
    """The search's trials, the peak-memory runs, the epoch comparison."""

    def num(v: float | None, width: int, fmt: str = ".1f") -> str:
        return f"{'-':>{width}}" if v is None else f"{v:>{width}{fmt}}"

    search = report.get("search")
    if search:
        head = f"{'trial':<12}{'key':<18}{'status':<8}{'reward':>8}{'train s':>9}{'start s':>9}{'end s':>8}"
        print("\n" + head + "\n" + "-" * len(head))
        for t in search["trials"]:
            print(
                f"{t['trial_id']:<12}{t['key']:<18}{t['status']:<8}{num(t['reward'], 8, '.4f')}"
                f"{num(t['train_seconds'], 9)}{num(t['start_s'], 9)}{num(t['end_s'], 8)}"
            )
        for t in search["trials"]:
            if t["status"] != "ok":
                print(f"  {t['trial_id']} {t['status']}: {t['message']}")
        print(
            f"search wall {search['wall_seconds']:.1f} s; at most {search['max_concurrent_trials']} "
            f"trials at once for over 1 s ({'overlapped' if search['overlapped'] else 'NOT overlapped'}; "
            f"seconds at each count {search['concurrency_seconds']}); "
            f"Ray resources {search['ray_cluster_resources']}"
        )
    head = f"{'run':<14}{'key':<18}{'device':<8}{'status':<8}{'s':>7}{'train s':>9}{'peak alloc MB':>15}{'peak reserved MB':>18}"
    print("\n" + head + "\n" + "-" * len(head))
    rows = [(f"peak {i + 1}", p) for i, p in enumerate(report["peak_memory"])]
    speed = report["epoch_speed"]
    rows += [(f"1 epoch {r['device']}", r) for r in (speed["gpu"], speed["cpu"])]
    for label, r in rows:
        print(
            f"{label:<14}{r['key']:<18}{r['device']:<8}{r['status']:<8}{r['seconds']:>7.1f}"
            f"{r['train_seconds']:>9.2f}{num(r['peak_allocated_mb'], 15, '.0f')}"
            f"{num(r['peak_reserved_mb'], 18, '.0f')}"
        )
        if r["status"] != "ok":
            print(f"  {r['status']}: {r['message']}")
    ratio = speed["cpu_over_gpu"]
    print(
        f"one proxy epoch ({speed['iterations']} iterations): {speed['gpu']['device']} "
        f"{speed['gpu']['train_seconds']:.2f} s, cpu ({speed['cpu_threads']} threads) "
        f"{speed['cpu']['train_seconds']:.2f} s"
        + ("" if ratio is None else f" -> {ratio:.1f}x faster on {speed['gpu']['device']}")
    )


def machine() -> dict[str, Any]:
    """torch version, CUDA device, CPU count."""
    cuda = torch.cuda.is_available()
    return {
        "cuda": cuda,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "bf16_supported": torch.cuda.is_bf16_supported() if cuda else None,
        "cpu_count": os.cpu_count(),
    }


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    """Write the report when --out is given."""
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=2, default=str)
        print(f"written to {path}")


def check(args: argparse.Namespace, storage: Path) -> dict[str, Any]:
    """Parts (a) and (b); returns the report."""

    from nassearch.proxy_eval.proxy_data import proxy_datasets
    from nassearch.search_spaces import genotype_from_dict, get_space

    cfg = build_config(args)
    report: dict[str, Any] = {**machine(), "config": json.loads(cfg.model_dump_json())}
    genotypes = []
    if not args.skip_search:
        report["search"] = search_on_own_ray(cfg, storage)
        genotypes = [genotype_from_dict(t["genotype"]) for t in report["search"]["trials"][:2]]
    if len(genotypes) < 2:  # no search, or fewer records than asked: seeded samples instead
        space = get_space(cfg.search.space, **cfg.search.space_options)
        rng = np.random.default_rng(args.seed)
        genotypes += [space.sample(rng) for _ in range(2 - len(genotypes))]
    datasets = proxy_datasets(cfg)
    report["warmup_seconds"] = warm_up(genotypes[0], cfg, datasets)
    report["peak_memory"] = [measure_peak(g, cfg, datasets) for g in genotypes]
    report["epoch_speed"] = epoch_speed(genotypes[0], cfg, datasets)
    return report


def main(argv: list[str] | None = None) -> int:
    """Parse flags; without CUDA say so, else run the check, print tables, write JSON."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=None, help="architectures searched (default 4)")
    ap.add_argument("--epochs", type=float, default=None, help="proxy epochs (default 2)")
    ap.add_argument("--cpus-per-trial", type=float, default=None, help="default 2 (CPU: 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.batch_size=16",
    )
    ap.add_argument("--skip-search", action="store_true", help="only the direct runs, no Ray")
    ap.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=None,
        metavar="K",
        help="also run the search with K trials per GPU for each K (e.g. 1 2 4)",
    )
    ap.add_argument("--storage", help="keep the search experiment here (default: a temp dir)")
    ap.add_argument("--out", help="write the report as JSON")
    ap.add_argument("--require-cuda", action="store_true", help="exit 1 without CUDA")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.concurrency and min(args.concurrency) < 1:
        ap.error(f"--concurrency: trials per GPU must be at least 1, got {min(args.concurrency)}")

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device (torch.cuda.is_available() is false), so the GPU check was not run")
        write_json(args.out, {**machine(), "ran": False, "reason": "no CUDA device"})
        return 1 if args.require_cuda else 0
    try:
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            storage = Path(args.storage) if args.storage else Path(tmp)
            report = check(args, storage)
            if args.concurrency:
                report["concurrency"] = concurrency_sweep(args, storage)
    except NasSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report["ran"] = True
    print_tables(report)
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
