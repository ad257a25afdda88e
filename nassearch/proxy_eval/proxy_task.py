"""Scoring one sampled architecture: build it, proxy-train it briefly, evaluate it, measure its cost.

`evaluate_candidate(genotype, cfg)` never raises: a NaN/Inf loss, an exception, CUDA running out
of memory or the time limit become a `ProxyResult` with that status, the configured failure
reward and a one-line message, so one bad architecture cannot stop a search.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nassearch.config import CostConfig, ExperimentConfig
from nassearch.console import silent
from nassearch.detectors.build import build_detector
from nassearch.device import resolve_device
from nassearch.engine.evaluate import evaluate_detector, evaluate_with_loss, validation_loss
from nassearch.engine.trainer import Trainer
from nassearch.proxy_eval.feature_cache import CachedFeatureDataset, CachedFeatureDetector
from nassearch.proxy_eval.model_cost import ModelCost, backbone_cost, measure_cost
from nassearch.proxy_eval.proxy_data import proxy_datasets
from nassearch.proxy_result import ProxyResult
from nassearch.search_spaces.base import Genotype
from nassearch.status import Status


def cost_value(cost: CostConfig, result: ProxyResult) -> float:
    return {"params": result.params, "macs": result.macs, "latency_ms": result.latency_ms}[
        cost.metric
    ]


def apply_cost(reward: float, cost: CostConfig | None, value: float) -> float:
    """MnasNet's soft constraint reward * (value/target)^w; for negative rewards (neg_loss) the
    loss is scaled the other way, so a costlier architecture is always worse."""
    if cost is None or cost.hard_limit:
        return reward
    factor = (value / cost.target) ** cost.weight
    return reward * factor if reward >= 0 else reward / factor


def evaluate_candidate(
    genotype: Genotype,
    cfg: ExperimentConfig,
    *,
    datasets: tuple[Any, Any] | None = None,
    work_dir: str | Path | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    resume: bool = False,
    seed: int | None = None,
    cost: ModelCost | None = None,
) -> ProxyResult:
    """Proxy-train and score one architecture; never raises (failures become statuses).

    `seed` (default `cfg.seed`) seeds the detector's initialisation and the trainer (batch order);
    the data, its augmentation draws and a frozen backbone's cached features stay those of
    `cfg.seed`, so two seeds differ only in what the training itself draws.

    With `work_dir`, the trainer keeps `work_dir/checkpoints/last.pth` after every epoch and
    `resume=True` continues from it (an interrupted trial picks up where it stopped).
    `datasets` (default: `proxy_datasets(cfg)`) may be cached features (`proxy_data`): then only
    neck and head run, while parameters, MACs and latency still count the whole detector.
    `cost`, when given (another seed of the same architecture measured it), is not measured again:
    the detector's cost does not depend on the seed.
    """
    proxy = cfg.proxy
    seed = cfg.seed if seed is None else seed
    result = ProxyResult(reward=proxy.failure_reward, genotype_key=genotype.key())
    started = time.perf_counter()
    timings = result.timings
    try:
        device = resolve_device(cfg.device)
        train_set, reward_set = datasets or proxy_datasets(cfg)
        model_cfg = cfg.candidate_model(genotype.space)
        model = build_detector(model_cfg, len(train_set.cat_ids), genotype, seed=seed)
        model.to(device)
        measuring = time.perf_counter()
        timings["build"] = measuring - started
        cached = isinstance(train_set, CachedFeatureDataset)
        if cost is None:
            # A frozen backbone costs the same in every architecture: measured once per search.
            frozen = (
                backbone_cost(model, cfg, device, train_set.cache.cache_dir) if cached else None
            )
            cost = measure_cost(model, cfg, device, backbone=frozen)
        result.params, result.macs, result.latency_ms = cost.params, cost.macs, cost.latency_ms
        timings["measure"] = time.perf_counter() - measuring
        if cached:
            model = CachedFeatureDetector.from_cache(model, train_set.cache)
        if proxy.cost is not None and proxy.cost.hard_limit:
            value = cost_value(proxy.cost, result)
            if value > proxy.cost.target:
                result.message = f"{proxy.cost.metric} {value:g} over the hard limit {proxy.cost.target:g}: not trained"
                return result
        kwargs = {
            "device": device,
            "batch_size": cfg.eval.batch_size,
            "size_divisor": cfg.input.size_divisor,
        }
        if cfg.search.scheduler == "asha" and on_epoch_end is not None:  # a search trial
            on_epoch_end = _with_rung_metric(model, reward_set, kwargs, cfg, on_epoch_end)
        trained = Trainer(
            model,
            train_set,
            cfg.train,
            device=device,
            seed=seed,
            work_dir=work_dir,
            size_divisor=cfg.input.size_divisor,
            on_epoch_end=on_epoch_end,
            progress=False,
            log=silent,
            time_limit_s=proxy.time_limit_s,
            keep_epoch_checkpoints=False,
            checkpoint_every_s=proxy.checkpoint_every_s,
        ).fit(resume=resume)
        result.train_seconds = trained.seconds
        timings.update(trained.timings)
        if trained.status != Status.OK:
            result.status, result.message = trained.status, trained.message
            return result
        scoring = time.perf_counter()
        if proxy.reward == "neg_loss":  # AP and the loss from one pass over the reward split
            metrics, losses = evaluate_with_loss(model, reward_set, **kwargs)
            result.val_loss = losses["loss"]
        else:
            metrics = evaluate_detector(model, reward_set, **kwargs)
        result.metrics = dict(metrics)
        result.ap, result.ap50 = metrics["AP"], metrics["AP50"]
        if proxy.reward == "neg_loss":
            if not math.isfinite(result.val_loss):
                result.status, result.message = Status.NAN, f"validation loss is {result.val_loss}"
                return result
            raw = -result.val_loss
        else:
            raw = result.ap if proxy.reward == "ap" else result.ap50
        timings["reward"] = time.perf_counter() - scoring
        value = cost_value(proxy.cost, result) if proxy.cost is not None else 0.0
        result.reward = apply_cost(raw, proxy.cost, value)
        result.scores = [result.reward]
        result.message = f"trained {trained.iterations} iterations in {trained.seconds:.1f} s"
        return result
    except torch.cuda.OutOfMemoryError as exc:
        result.status, result.message = Status.OOM, _one_line(exc)
    except Exception as exc:  # a failing architecture must not stop the search
        if "out of memory" in str(exc).lower():
            result.status = Status.OOM
        else:
            result.status = Status.ERROR
        result.message = _one_line(exc)
    finally:
        if not result.train_seconds:
            result.train_seconds = time.perf_counter() - started
    return result


def rung_metric(cfg: ExperimentConfig) -> tuple[str, str]:
    """The per-epoch report key early stopping compares at its rungs, and its mode."""
    if cfg.search.rung_metric == "val_loss":
        return "epoch_val_loss", "min"
    return "epoch_reward", "max"


def _with_rung_metric(
    model: nn.Module,
    reward_set: Any,
    kwargs: dict[str, Any],
    cfg: ExperimentConfig,
    on_epoch_end: Callable[[int, dict[str, Any]], None],
) -> Callable[[int, dict[str, Any]], None]:
    """`on_epoch_end` with `rung_metric(cfg)` on the reward split added (and the seconds it
    took, `epoch_metric_seconds`), for ASHA's rungs: the detection loss, or the proxy reward
    before any cost term. It draws nothing from torch's RNG that training would see."""
    key, _ = rung_metric(cfg)
    reward = cfg.proxy.reward

    def epoch_end(epoch: int, info: dict[str, Any]) -> None:
        started = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            if key == "epoch_val_loss" or reward == "neg_loss":
                value = validation_loss(model, reward_set, **kwargs)["loss"]
                value = value if key == "epoch_val_loss" else -value
            else:
                metrics = evaluate_detector(model, reward_set, **kwargs)
                value = metrics["AP"] if reward == "ap" else metrics["AP50"]
        on_epoch_end(
            epoch, {**info, key: value, "epoch_metric_seconds": time.perf_counter() - started}
        )

    return epoch_end


def repeat_seed(cfg: ExperimentConfig, repeat: int) -> int:
    """The seed of an architecture's `repeat`-th score (0-based): cfg.seed, cfg.seed + 1, ..."""
    return cfg.seed + repeat


def summed_timings(results: list[ProxyResult]) -> dict[str, float]:
    """Seconds by phase over several evaluations (phases in the order they first appear)."""
    total: dict[str, float] = {}
    for result in results:
        for phase, seconds in result.timings.items():
            total[phase] = total.get(phase, 0.0) + seconds
    return total


def combine_repeats(results: list[ProxyResult]) -> ProxyResult:
    """One result from R scores of one architecture: the mean reward (and AP, loss), every score,
    their std and the summed training time. One failed repeat makes the whole evaluation fail,
    as a failed single evaluation would."""
    failed = next((r for r in results if r.status != Status.OK), None)
    first = results[0]
    if len(results) == 1 or failed is not None:
        out = replace(failed or first)
        out.train_seconds = sum(r.train_seconds for r in results)
        out.timings = summed_timings(results)
        if failed is not None:
            out.scores = []
        return out
    scores = [r.reward for r in results]
    out = replace(
        first,
        reward=float(np.mean(scores)),
        scores=scores,
        reward_std=float(np.std(scores, ddof=1)),
        ap=float(np.mean([r.ap for r in results])),
        ap50=float(np.mean([r.ap50 for r in results])),
        val_loss=float(np.mean([r.val_loss for r in results])),
        train_seconds=sum(r.train_seconds for r in results),
        timings=summed_timings(results),
        metrics={
            k: float(np.mean([r.metrics.get(k, math.nan) for r in results])) for k in first.metrics
        },
        message=f"mean of {len(results)} seeds; " + first.message,
    )
    return out


def evaluate_repeated(
    genotype: Genotype,
    cfg: ExperimentConfig,
    *,
    datasets: tuple[Any, Any] | None = None,
    work_dir: str | Path | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    resume: bool = False,
    done: list[ProxyResult] | None = None,
    on_repeat_end: Callable[[list[ProxyResult]], None] | None = None,
) -> ProxyResult:
    """`proxy.repeats` evaluations of one architecture under seeds `repeat_seed(cfg, r)`, combined.

    `done` holds repeats already scored (a resumed trial); `resume` then continues the next
    repeat from `work_dir`'s checkpoint. `on_repeat_end(done)` is called after each repeat, so a
    trial can checkpoint the finished scores. Stops at the first failed repeat.
    """
    done = list(done or [])
    datasets = datasets or proxy_datasets(cfg)
    while len(done) < cfg.proxy.repeats:
        repeat = len(done)
        measured = next((r for r in done if r.params), None)
        result = evaluate_candidate(
            genotype,
            cfg,
            datasets=datasets,
            work_dir=None if work_dir is None else Path(work_dir) / f"repeat-{repeat}",
            on_epoch_end=on_epoch_end,
            resume=resume,
            seed=repeat_seed(cfg, repeat),
            cost=None if measured is None else ModelCost.of(measured),
        )
        resume = False
        done.append(result)
        if on_repeat_end is not None:
            on_repeat_end(done)
        if result.status != Status.OK:
            break
    return combine_repeats(done)


def _one_line(exc: BaseException) -> str:
    """`Type: message (at file.py:line in function)`, on one line, where the exception was raised."""
    text = " ".join(str(exc).split())[:400]
    frames = traceback.extract_tb(exc.__traceback__)
    where = (
        f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})"
        if frames
        else ""
    )
    return f"{type(exc).__name__}: {text}{where}"
