"""Benchmark: proxy evaluation cost per architecture, with and without the frozen-backbone feature cache.

K architectures are sampled (seeded) from the config's search space, and each is scored with
`evaluate_candidate` in every mode; the reported time per architecture is the wall time of that
call (build, MACs, latency, proxy training, reward evaluation), `train s` its training part.

- `live`: frozen backbone (frozen_stages 4, norm_eval), live images (`proxy_datasets`, with the
  config's augmentation): the backbone runs on every step, as `nassearch run` does with
  `proxy.feature_cache: false`.
- `cache`: the same frozen backbone, features cached once (`proxy_data(cfg, tmpdir)`, the config's
  `proxy.feature_cache_dtype`, no augmentation); neck and head train on them. The one-off cache
  build (both splits) is timed separately and the cache's size on disk reported.
- `trainable` (`--trainable-backbone [N|config]`): live images, backbone trained too (the
  NAS-FPN-style proxy): frozen_stages N (default 1) with norm_eval, or `config`: the config's own
  backbone settings (the quickstart trains all of ResNet-10 from scratch).

One untimed warm-up evaluation (1 iteration) first pays the process's one-off costs (lazy
imports, allocator); a search pays them again in every trial process, with the trial's start-up,
which is not timed here. Modes then take turns per architecture (the order rotates), so load from
other processes does not fall on one mode. Architectures per hour = 3600 / mean s per
architecture x parallel trials, parallel trials = floor(cores / --threads) with cores =
os.cpu_count(): an upper bound, since trials sharing a machine also share its memory bandwidth.
Prints a table and writes JSON.

Default config: `experiments/quickstart.yaml` if it exists, else (or with `--config builtin`) a
NAS-FCOS-style proxy built here: synthetic 200 images at 128 px, FCOS, ResNet-18 (random weights),
NAS-FCOS FPN space, 64 channels, 2 convs per head branch, 2 epochs of batch 8, negative-loss reward.
`--quick` shrinks any config to a smoke run of under a minute.

    python scripts/bench_proxy.py --archs 3 --out bench_proxy.json
    python scripts/bench_proxy.py --config builtin --archs 3 --trainable-backbone --out bench_proxy.json
    python scripts/bench_proxy.py --config experiments/quickstart.yaml --set train.epochs=1 --trainable-backbone config
    python scripts/bench_proxy.py --quick --archs 1 --out /tmp/bench_proxy.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nassearch.config import ExperimentConfig, apply_overrides, read_yaml, validate_config
from nassearch.device import resolve_device
from nassearch.errors import NasSearchError
from nassearch.proxy_eval.proxy_data import backbone_is_frozen, proxy_data, proxy_datasets
from nassearch.proxy_eval.proxy_task import evaluate_candidate
from nassearch.proxy_result import ProxyResult
from nassearch.search_spaces import Genotype, get_space

QUICKSTART = Path(__file__).resolve().parent.parent / "experiments" / "quickstart.yaml"
BUILTIN = "builtin"  # --config value naming the built-in NAS-FCOS-style proxy
# --quick: tiny sizes, applied on top of any config (before --set).
QUICK_OVERRIDES = (
    "data.type=synthetic",
    "data.synthetic.num_train=24",
    "data.synthetic.num_val=2",
    "data.synthetic.image_size=64",
    "data.synthetic.max_object_size=48",
    "input.mode=square",
    "input.size=64",
    "input.size_divisor=32",
    "model.backbone.depth=10",
    "model.backbone.weights=null",
    "model.neck.out_channels=16",
    # FCOS's GroupNorm(32) head fails on 1x1 levels (P7 at 64 px) with 32 channels at batch 1.
    "model.feat_channels=64",
    "model.num_convs=1",
    "train.epochs=1",
    "train.max_iters=null",
    "train.batch_size=4",
    "proxy.reward_holdout=8",
    "eval.batch_size=8",
)


def default_raw_config() -> dict[str, Any]:
    """A quick NAS-FCOS-style proxy on this CPU: synthetic data, FCOS, frozen ResNet-18, FPN space."""
    return {
        "name": "bench-proxy",
        "seed": 0,
        "device": "auto",
        "data": {
            "type": "synthetic",
            "synthetic": {"num_train": 200, "num_val": 20, "image_size": 128},
        },
        "input": {"mode": "square", "size": 128, "size_divisor": 32},
        "model": {
            "type": "fcos",
            "backbone": {"depth": 18, "frozen_stages": 4, "norm_eval": True},
            "neck": {"out_channels": 64},
            "num_convs": 2,
            "feat_channels": 64,
        },
        "train": {"epochs": 2, "batch_size": 8, "tensorboard": False},
        "eval": {"batch_size": 8},
        # NAS-FCOS rewards with the negative detection loss on held-out images.
        "proxy": {"reward": "neg_loss", "reward_holdout": 64},
        "search": {"space": "nasfcos", "space_options": {"part": "fpn"}},
    }


def load_bench_config(
    path: str | None, overrides: list[str], quick: bool
) -> tuple[ExperimentConfig, str]:
    """The config to time (file, quickstart or built-in), with --quick and --set applied."""
    if path is None and QUICKSTART.is_file():
        path = str(QUICKSTART)
    if path in (None, BUILTIN):
        raw, source = default_raw_config(), "built-in NAS-FCOS proxy"
    else:
        raw, source = read_yaml(path), path
    raw = apply_overrides(raw, [*(QUICK_OVERRIDES if quick else ()), *overrides])
    cfg = validate_config(raw, source)
    # Timing only: no TensorBoard writers, whatever the config says.
    cfg.train.tensorboard = False
    return cfg, source


def backbone_variant(cfg: ExperimentConfig, frozen_stages: int) -> ExperimentConfig:
    """`cfg` with the backbone frozen up to `frozen_stages` and BN statistics fixed."""
    out = cfg.model_copy(deep=True)
    out.model.backbone.frozen_stages = frozen_stages
    out.model.backbone.norm_eval = True
    return out


def sample_genotypes(cfg: ExperimentConfig, k: int, seed: int) -> list[Genotype]:
    """K architectures drawn uniformly (per decision) from the config's search space."""
    space = get_space(cfg.search.space, **cfg.search.space_options)
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(k)]


def dir_size_mb(path: Path) -> float:
    """Total size of the files under `path`, in MB."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def trainable_variant(cfg: ExperimentConfig, spec: str) -> ExperimentConfig:
    """The trainable-backbone config: frozen_stages `spec` with norm_eval, or the config's own."""
    if spec != "config":
        return backbone_variant(cfg, int(spec))
    if backbone_is_frozen(cfg.model.backbone):
        raise NasSearchError(
            "--trainable-backbone config: the config's backbone is frozen (frozen_stages 4); "
            "give a number of frozen stages instead, e.g. --trainable-backbone 1"
        )
    return cfg.model_copy(deep=True)


def prepare_modes(
    cfg: ExperimentConfig, cache_dir: Path, trainable: str | None
) -> dict[str, dict[str, Any]]:
    """Config, datasets and one-off costs of every mode (the cache is built here, and timed)."""
    frozen = backbone_variant(cfg, 4)
    frozen.proxy.feature_cache = True
    proxy_datasets(frozen)  # generates synthetic data once, outside every timing
    modes = {"live": {"cfg": frozen, "datasets": proxy_datasets(frozen)}}
    start = time.perf_counter()
    cached = proxy_data(frozen, cache_dir, progress=False)
    modes["cache"] = {
        "cfg": frozen,
        "datasets": cached,
        "cache_build_s": time.perf_counter() - start,
        "cache_mb": dir_size_mb(cache_dir),
    }
    if trainable is not None:
        live = trainable_variant(cfg, trainable)
        modes["trainable"] = {"cfg": live, "datasets": proxy_datasets(live)}
    return modes


def time_candidate(genotype: Genotype, mode: dict[str, Any]) -> tuple[float, ProxyResult]:
    """Wall seconds of one `evaluate_candidate` call in a mode, and its result."""
    start = time.perf_counter()
    result = evaluate_candidate(genotype, mode["cfg"], datasets=mode["datasets"])
    return time.perf_counter() - start, result


def warm_up(genotype: Genotype, mode: dict[str, Any]) -> tuple[float, ProxyResult]:
    """One untimed 1-iteration evaluation (the process's one-off costs): seconds and result."""
    cfg = mode["cfg"].model_copy(deep=True)
    cfg.train.max_iters = 1
    start = time.perf_counter()
    result = evaluate_candidate(genotype, cfg, datasets=mode["datasets"])
    return time.perf_counter() - start, result


def run_all(
    genotypes: list[Genotype], modes: dict[str, dict[str, Any]], log: bool = True
) -> list[dict[str, Any]]:
    """Score every genotype in every mode, the mode order rotating per architecture."""
    names = list(modes)
    runs = []
    for i, genotype in enumerate(genotypes):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            seconds, result = time_candidate(genotype, modes[name])
            run = {
                "mode": name,
                "arch": i,
                "key": genotype.key(),
                "seconds": seconds,
                "train_seconds": result.train_seconds,
                "status": result.status,
                "message": result.message,
                "reward": result.reward,
                "params": result.params,
                "macs": result.macs,
                "latency_ms": result.latency_ms,
            }
            runs.append(run)
            if log:
                print(
                    f"arch {i + 1}/{len(genotypes)} {genotype.key()} {name:<9} "
                    f"{seconds:6.1f} s (train {result.train_seconds:.1f} s) {result.status}"
                    + ("" if result.status == "ok" else f": {result.message}"),
                    flush=True,
                )
    return runs


def summarise(
    runs: list[dict[str, Any]], modes: dict[str, dict[str, Any]], parallel: int
) -> list[dict[str, Any]]:
    """One row per mode: mean/median s per architecture, training s, architectures per hour."""
    rows = []
    for name, mode in modes.items():
        mine = [r for r in runs if r["mode"] == name]
        secs = [r["seconds"] for r in mine]
        mean = statistics.fmean(secs)
        rows.append(
            {
                "mode": name,
                "frozen_stages": mode["cfg"].model.backbone.frozen_stages,
                "norm_eval": mode["cfg"].model.backbone.norm_eval,
                "archs": len(mine),
                "failed": sum(r["status"] != "ok" for r in mine),
                "s_per_arch_mean": mean,
                "s_per_arch_median": statistics.median(secs),
                "train_s_mean": statistics.fmean(r["train_seconds"] for r in mine),
                "archs_per_hour": 3600 / mean * parallel,
                "cache_build_s": mode.get("cache_build_s"),
                "cache_mb": mode.get("cache_mb"),
            }
        )
    by_mode = {r["mode"]: r for r in rows}
    for row in rows:
        row["speedup_vs_live"] = by_mode["live"]["s_per_arch_mean"] / row["s_per_arch_mean"]
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    """The per-mode table."""

    def opt(v: float | None, width: int, fmt: str) -> str:
        return f"{'-':>{width}}" if v is None else f"{v:>{width}{fmt}}"

    head = (
        f"{'mode':<10}{'frozen':>7}{'archs':>6}{'failed':>7}{'s/arch mean':>13}{'median':>8}{'train s':>9}"
        f"{'archs/hour':>12}{'vs live':>9}{'cache build s':>15}{'cache MB':>10}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['mode']:<10}{r['frozen_stages']:>7}{r['archs']:>6}{r['failed']:>7}{r['s_per_arch_mean']:>13.1f}"
            f"{r['s_per_arch_median']:>8.1f}{r['train_s_mean']:>9.1f}{r['archs_per_hour']:>12.0f}"
            f"{r['speedup_vs_live']:>8.2f}x{opt(r['cache_build_s'], 15, '.1f')}"
            f"{opt(r['cache_mb'], 10, '.1f')}"
        )


def config_summary(cfg: ExperimentConfig, source: str, modes: dict[str, dict[str, Any]]) -> dict:
    """What the proxy task is: data, input, detector, training length, search space."""
    train_set, reward_set = modes["live"]["datasets"]
    iters = -(-len(train_set) // cfg.train.batch_size)
    return {
        "source": source,
        "data": cfg.data.type,
        "train_images": len(train_set),
        "reward_images": len(reward_set),
        "input": "x".join(map(str, cfg.input.network_size())),
        "model": cfg.model.type,
        "backbone_depth": cfg.model.backbone.depth,
        "neck_out_channels": cfg.model.neck.out_channels,
        "feat_channels": cfg.model.feat_channels,
        "num_convs": cfg.model.num_convs,
        "space": cfg.search.space,
        "space_options": cfg.search.space_options,
        "epochs": cfg.train.epochs,
        "max_iters": cfg.train.max_iters,
        "batch_size": cfg.train.batch_size,
        "iters_per_epoch": iters,
        "reward": cfg.proxy.reward,
        "feature_cache_dtype": cfg.proxy.feature_cache_dtype,
        "frozen_stages": {name: m["cfg"].model.backbone.frozen_stages for name, m in modes.items()},
    }


def machine_info(cfg: ExperimentConfig, threads: int, parallel: int) -> dict[str, Any]:
    """CPU count, torch threads and version, device."""
    device = resolve_device(cfg.device)
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "threads_per_trial": threads,
        "parallel_trials": parallel,
        "torch": torch.__version__,
        "device": str(device),
        "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "machine": platform.machine(),
        "processor": platform.processor(),
    }


def main(argv: list[str] | None = None) -> None:
    """Parse flags, time every mode, print the table, write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--config",
        help="experiment YAML, or `builtin` (default: experiments/quickstart.yaml if present)",
    )
    ap.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=1",
    )
    ap.add_argument("--archs", type=int, default=3, help="architectures sampled (same per mode)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the architecture sample")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per trial")
    ap.add_argument(
        "--trainable-backbone",
        nargs="?",
        const="1",
        metavar="N|config",
        help="add a live row with a trained backbone: N frozen stages (default 1), or the config's",
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run under a minute")
    ap.add_argument("--out", default="bench_proxy.json")
    args = ap.parse_args(argv)
    if args.archs < 1 or args.threads < 1:
        ap.error("--archs and --threads must be >= 1")
    spec = args.trainable_backbone
    if spec is not None and spec != "config" and spec.lstrip("-") not in {"0", "1", "2", "3"}:
        ap.error(f"--trainable-backbone: expected -1 to 3 or config, got {spec!r}")
    try:
        bench(args)
    except NasSearchError as exc:
        raise SystemExit(f"error: {exc}") from None


def bench(args: argparse.Namespace) -> None:
    """Time every mode, print the table, write JSON."""

    torch.set_num_threads(args.threads)
    cores = os.cpu_count() or 1
    parallel = max(1, cores // args.threads)
    cfg, source = load_bench_config(args.config, args.overrides, args.quick)
    genotypes = sample_genotypes(cfg, args.archs, args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        modes = prepare_modes(cfg, Path(tmp) / "features", args.trainable_backbone)
        summary = config_summary(cfg, source, modes)
        print(
            f"{source}: {summary['model']} R-{summary['backbone_depth']}, {summary['space']} "
            f"{summary['space_options']}, {summary['train_images']} train / "
            f"{summary['reward_images']} reward images at {summary['input']}, "
            f"epochs {summary['epochs']:g} x {summary['iters_per_epoch']} iterations",
            flush=True,
        )
        warmup_s, result = warm_up(genotypes[0], modes["live"])
        print(f"warm-up (1 iteration, untimed): {warmup_s:.1f} s, {result.status}", flush=True)
        if result.status == "error":  # a config problem, most likely: every run would fail
            raise NasSearchError(f"the warm-up evaluation failed: {result.message}")
        runs = run_all(genotypes, modes)
    rows = summarise(runs, modes, parallel)
    print()
    print_table(rows)
    meta = machine_info(cfg, args.threads, parallel)
    meta["warmup_s"] = warmup_s
    print(
        f"\n{meta['cpu_count']} cores, {args.threads} thread(s) per trial -> {parallel} parallel "
        f"trial(s); torch {meta['torch']} on {meta['device']}"
    )
    payload = {
        "meta": meta,
        "config": summary,
        "args": vars(args),
        "results": rows,
        "runs": runs,
    }
    with open(args.out, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
