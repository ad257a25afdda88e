"""What an architecture costs to run: parameters, MACs per image and latency of the whole detector.

A search measures every architecture once (`measure_cost`). Behind a frozen backbone (a feature-
cache trial) the backbone's share is the same for every architecture, so it is measured once per
search and machine (`BackboneCost`, kept beside the feature cache) and each architecture measures
only its neck and head on features of the backbone's output shapes. Parameters and MACs are sums of
exact counts, so they equal the whole detector's; the latency is the sum of the two medians.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from nassearch.atomic import atomic_write_text
from nassearch.config import ExperimentConfig
from nassearch.detectors.complexity import count_macs, count_parameters
from nassearch.device import use_bf16
from nassearch.proxy_result import ProxyResult

__all__ = [
    "BackboneCost",
    "ModelCost",
    "backbone_cost",
    "measure_cost",
    "measure_latency_ms",
]

BACKBONE_COST_PREFIX = "backbone-cost-"


@dataclass(frozen=True)
class ModelCost:
    """What an architecture costs to run, measured once on its built detector (the whole
    detector, backbone included, at the proxy's network input size)."""

    params: int
    macs: int
    latency_ms: float

    @classmethod
    def of(cls, result: ProxyResult) -> ModelCost:
        return cls(result.params, result.macs, result.latency_ms)


@dataclass(frozen=True)
class BackboneCost:
    """A backbone's parameters, MACs per image and median latency at one input size, and the
    shapes (C, H, W) of the feature maps it hands the neck."""

    params: int
    macs: int
    latency_ms: float
    feature_shapes: tuple[tuple[int, int, int], ...]

    @classmethod
    def from_dict(cls, data: dict) -> BackboneCost:
        return cls(
            params=int(data["params"]),
            macs=int(data["macs"]),
            latency_ms=float(data["latency_ms"]),
            feature_shapes=tuple(tuple(int(x) for x in s) for s in data["feature_shapes"]),
        )


def _median_ms(run: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall milliseconds of `repeats` calls of `run` after one warm-up call."""
    times = []
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(device)):
            run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first run warms up
            times.append((time.perf_counter() - start) * 1000)
    return sorted(times)[len(times) // 2]


@torch.no_grad()
def measure_latency_ms(
    model: nn.Module,
    size: tuple[int, int],
    device: torch.device,
    *,
    batch: int = 1,
    repeats: int = 5,
) -> float:
    """Median wall time of backbone + neck + head on one batch (no NMS), in milliseconds."""
    was_training = model.training
    model.eval()
    images = torch.zeros(batch, 3, *size, device=device)
    try:
        return _median_ms(lambda: model.head_outputs(model.backbone(images)), device, repeats)
    finally:
        model.train(was_training)


def measure_cost(
    model: nn.Module,
    cfg: ExperimentConfig,
    device: torch.device,
    *,
    backbone: BackboneCost | None = None,
) -> ModelCost:
    """Parameters, MACs per image and median latency of the detector `model` (on `device`,
    `proxy.latency_batch`). With `backbone` (the frozen backbone's measured cost) only the neck
    and head run here, on zero features of the backbone's output shapes."""
    size = cfg.input.network_size()
    batch = cfg.proxy.latency_batch
    params = count_parameters(model)["total"]
    if backbone is None:
        return ModelCost(
            params=params,
            macs=count_macs(model, size)["total"],
            latency_ms=measure_latency_ms(model, size, device, batch=batch),
        )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            one = _zero_features(backbone.feature_shapes, 1, device)
            with FlopCounterMode(display=False) as counter:
                model.head_outputs(one)
            feats = _zero_features(backbone.feature_shapes, batch, device)
            latency = _median_ms(lambda: model.head_outputs(feats), device, repeats=5)
    finally:
        model.train(was_training)
    # FlopCounterMode counts a multiply-add as two FLOPs (see count_macs).
    return ModelCost(
        params=params,
        macs=backbone.macs + counter.get_total_flops() // 2,
        latency_ms=backbone.latency_ms + latency,
    )


def _zero_features(
    shapes: Sequence[tuple[int, int, int]], batch: int, device: torch.device
) -> list[Tensor]:
    return [torch.zeros(batch, *shape, device=device) for shape in shapes]


@torch.no_grad()
def _measure_backbone(
    model: nn.Module, size: tuple[int, int], device: torch.device, batch: int
) -> BackboneCost:
    was_training = model.training
    model.eval()
    try:
        feats = model.backbone(torch.zeros(1, 3, *size, device=device))
        images = torch.zeros(batch, 3, *size, device=device)
        latency = _median_ms(lambda: model.backbone(images), device, repeats=5)
    finally:
        model.train(was_training)
    return BackboneCost(
        params=count_parameters(model)["backbone"],
        macs=count_macs(model, size)["backbone"],
        latency_ms=latency,
        feature_shapes=tuple(tuple(int(x) for x in f.shape[1:]) for f in feats),
    )


def backbone_cost(
    model: nn.Module, cfg: ExperimentConfig, device: torch.device, folder: str | Path
) -> BackboneCost:
    """The frozen backbone's cost, read from `folder` (a feature cache, which belongs to one
    backbone and input) or measured and written there for the next architecture.

    The file is named after what the latency depends on: machine, device, torch threads, input
    size and latency batch; another node of a cluster or a GPU trial measures its own. An
    unreadable file is measured again; a folder that cannot be written only loses the reuse.
    """
    size = cfg.input.network_size()
    batch = cfg.proxy.latency_batch
    where = {
        "node": platform.node(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "input_size": list(size),
        "latency_batch": batch,
    }
    digest = hashlib.sha256(json.dumps(where, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(folder) / f"{BACKBONE_COST_PREFIX}{digest}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("where") == where:
            return BackboneCost.from_dict(data["cost"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    cost = _measure_backbone(model, size, device, batch)
    with contextlib.suppress(OSError):
        atomic_write_text(path, json.dumps({"where": where, "cost": asdict(cost)}, indent=2))
    return cost
