"""Profile: where one architecture's proxy evaluation spends its seconds, end to end.

Two parts, one table each, both written to JSON:

1. **Search.** A real search of `--archs` architectures (the config's controller, Ray Tune
   trials, records), no baselines. Every record carries the seconds of its phases
   (`ProxyResult.timings`): Ray scheduling and worker start, set-up (config, datasets or feature
   cache), detector build, cost measurement (parameters, MACs, latency), the training loop's data
   loading, steps, checkpoints, evaluation and epoch reports, the reward evaluation, and the
   driver's record. The table gives each phase's median per architecture (all repeats summed) and
   the overhead outside training and evaluation (everything but data, step and reward).
2. **Inside one training step and one reward evaluation**, in this process on `--threads`
   threads, for the first architecture the controller's space samples with `--seed`: forward of
   the neck, forward of the head, loss, backward and optimiser step (median of `--steps` steps
   after warm-up), the neck's share of the step (the full step minus the step on the neck's
   outputs, detached), and the reward split's inference, decoding + NMS and COCOeval.

    python scripts/profile_trial.py experiments/quickstart.yaml --archs 6 --out profile.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
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
from nassearch.data.collate import collate_detection
from nassearch.detectors.build import build_detector
from nassearch.device import resolve_device
from nassearch.engine.evaluate import coco_evaluate, predict
from nassearch.engine.optim import build_optimizer
from nassearch.proxy_eval.feature_cache import (
    CachedFeatureDataset,
    CachedFeatureDetector,
    unpack_features,
)
from nassearch.proxy_eval.proxy_data import proxy_data
from nassearch.proxy_result import TIMING_PHASES
from nassearch.records import read_records
from nassearch.search_spaces import get_space

QUICKSTART = Path(__file__).resolve().parent.parent / "experiments" / "quickstart.yaml"
# Phases that are the proxy's work itself; everything else is overhead.
WORK_PHASES = ("data", "step", "reward")


def load(path: str, overrides: list[str]) -> ExperimentConfig:
    return validate_config(apply_overrides(read_yaml(path), overrides), path)


# ----------------------------------------------------------------------------- part 1: search


def profile_search(cfg: ExperimentConfig, archs: int, storage: Path) -> dict[str, Any]:
    """Run a search of `archs` architectures and summarise the phases of its records."""
    from nassearch.search import run_search

    cfg = cfg.model_copy(
        update={
            "name": "profile",
            "search": cfg.search.model_copy(
                update={"num_architectures": archs, "baselines": [], "reevaluate_top": None}
            ),
        }
    )
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        run_search(cfg, storage=str(storage), log=lambda line: None)
    wall = time.perf_counter() - started
    records = [r for r in read_records(storage / cfg.name / "architectures.jsonl")]
    timed = [r for r in records if r.timings]
    phases = {
        phase: statistics.median(float(r.timings.get(phase) or 0.0) for r in timed)
        for phase in TIMING_PHASES
    }
    overheads = [
        sum(float(v or 0.0) for k, v in r.timings.items() if k not in WORK_PHASES) for r in timed
    ]
    return {
        "architectures": len(records),
        "wall_s": wall,
        "wall_s_per_architecture": wall / max(len(records), 1),
        "median_train_seconds": statistics.median(r.train_seconds or 0.0 for r in records),
        "median_phase_s": phases,
        "median_overhead_s": statistics.median(overheads),
        "rewards": {r.key: r.reward for r in records},
    }


# ----------------------------------------------------------------------------- part 2: one step


def _median_ms(fn, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def profile_step(cfg: ExperimentConfig, seed: int, steps: int, warmup: int) -> dict[str, Any]:
    """Forward (neck, head, loss), backward and optimiser milliseconds of one training step, the
    neck's share, and the reward evaluation's parts, for one sampled architecture."""
    device = resolve_device(cfg.device)
    space = get_space(cfg.search.space, **cfg.search.space_options)
    genotype = space.sample(np.random.default_rng(seed))
    with tempfile.TemporaryDirectory(prefix="nassearch-profile-") as cache_dir:
        train_set, reward_set = proxy_data(cfg, cache_dir, progress=False)
        detector = build_detector(
            cfg.candidate_model(genotype.space), len(train_set.cat_ids), genotype, seed=cfg.seed
        ).to(device)
        cached = isinstance(train_set, CachedFeatureDataset)
        model = CachedFeatureDetector.from_cache(detector, train_set.cache) if cached else detector
        model.train()
        optimizer = build_optimizer(model, cfg.train.optimizer)
        collate = functools.partial(collate_detection, size_divisor=cfg.input.size_divisor)
        batch = collate([train_set[i] for i in range(cfg.train.batch_size)])
        images = batch[0].to(device)
        targets = batch[1]
        image_shape = tuple(images.shape[-2:])
        if cached:
            image_shape = model.image_shape

        def features():
            if cached:
                return unpack_features(images, model.feature_shapes)  # part of the step
            with torch.no_grad():  # a frozen or trained backbone runs here too
                return detector.backbone(images)

        parts: dict[str, float] = {}
        feats = features()
        parts["backbone_forward_ms"] = _median_ms(features, steps, warmup)
        parts["neck_forward_ms"] = _median_ms(lambda: detector.neck(feats), steps, warmup)
        pyramid = detector.neck(feats)
        parts["head_forward_ms"] = _median_ms(lambda: detector.head(pyramid), steps, warmup)
        outputs = detector.head(pyramid)
        parts["loss_ms"] = _median_ms(
            lambda: detector.loss(outputs, targets, image_shape), steps, warmup
        )

        def full_step() -> None:
            losses = detector.loss(detector.head(detector.neck(features())), targets, image_shape)
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()

        fixed = [p.detach() for p in pyramid]

        def head_step() -> None:
            losses = detector.loss(detector.head(fixed), targets, image_shape)
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()

        def optimizer_step() -> None:
            optimizer.step()

        parts["step_ms"] = _median_ms(full_step, steps, warmup)
        parts["step_without_neck_ms"] = _median_ms(head_step, steps, warmup)
        full_step()  # every parameter has a gradient again
        parts["optimizer_ms"] = _median_ms(optimizer_step, steps, warmup)
        forward = sum(
            parts[k]
            for k in ("backbone_forward_ms", "neck_forward_ms", "head_forward_ms", "loss_ms")
        )
        parts["backward_ms"] = parts["step_ms"] - forward - parts["optimizer_ms"]
        parts["neck_share"] = 1 - parts["step_without_neck_ms"] / parts["step_ms"]

        kwargs = {
            "device": device,
            "batch_size": cfg.eval.batch_size,
            "size_divisor": cfg.input.size_divisor,
        }
        model.eval()
        t0 = time.perf_counter()
        with torch.no_grad():
            for start in range(0, len(reward_set), cfg.eval.batch_size):
                chunk = collate(
                    [
                        reward_set[i]
                        for i in range(start, min(start + cfg.eval.batch_size, len(reward_set)))
                    ]
                )
                if cached:
                    detector.head_outputs(
                        unpack_features(chunk[0].to(device), model.feature_shapes)
                    )
                else:
                    detector.head_outputs(detector.backbone(chunk[0].to(device)))
        parts["reward_inference_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        results = predict(model, reward_set, **kwargs)
        parts["reward_predict_s"] = time.perf_counter() - t0
        parts["reward_decode_nms_s"] = parts["reward_predict_s"] - parts["reward_inference_s"]
        t0 = time.perf_counter()
        coco_evaluate(reward_set.coco, results, image_ids=reward_set.image_ids)
        parts["reward_cocoeval_s"] = time.perf_counter() - t0
        parts["reward_images"] = len(reward_set)
        parts["reward_detections"] = len(results)
    return {"genotype_key": genotype.key(), **parts}


# ----------------------------------------------------------------------------- output


def print_tables(search: dict[str, Any] | None, step: dict[str, Any]) -> None:
    if search is not None:
        print(
            f"search: {search['architectures']} architectures in {search['wall_s']:.1f} s "
            f"({search['wall_s_per_architecture']:.1f} s each); median train_seconds "
            f"{search['median_train_seconds']:.2f}"
        )
        print(f"{'phase (median s per architecture)':<36}{'s':>8}")
        for phase, seconds in search["median_phase_s"].items():
            tag = "" if phase in WORK_PHASES else "  (overhead)"
            print(f"{phase:<36}{seconds:>8.2f}{tag}")
        print(f"{'overhead outside training and reward':<36}{search['median_overhead_s']:>8.2f}")
        print()
    print(f"one training step and one reward evaluation (architecture {step['genotype_key']})")
    for name, value in step.items():
        if name == "genotype_key":
            continue
        shown = (
            f"{value:.1%}"
            if name == "neck_share"
            else f"{value:.2f}"
            if isinstance(value, float)
            else str(value)
        )
        print(f"{name:<36}{shown:>10}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default=str(QUICKSTART))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    ap.add_argument("--archs", type=int, default=6, help="architectures of the profiled search")
    ap.add_argument("--no-search", action="store_true", help="only the in-process step profile")
    ap.add_argument("--seed", type=int, default=0, help="seed of the step profile's architecture")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="default: search.cpus_per_trial")
    ap.add_argument("--storage", default=None, help="search folder (default: a temporary one)")
    ap.add_argument("--out", default="profile_trial.json")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    cfg = load(args.config, args.overrides)
    threads = args.threads or max(1, int(cfg.search.cpus_per_trial))

    search = None
    if not args.no_search:
        with tempfile.TemporaryDirectory(prefix="nassearch-profile-") as tmp:
            search = profile_search(cfg, args.archs, Path(args.storage or tmp))
    torch.set_num_threads(threads)
    step = profile_step(cfg, args.seed, args.steps, args.warmup)
    print_tables(search, step)
    meta = {
        "config": args.config,
        "overrides": args.overrides,
        "torch": torch.__version__,
        "threads": threads,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "search": search, "step": step}, f, indent=2)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
