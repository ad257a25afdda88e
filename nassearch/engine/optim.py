"""Optimiser and learning-rate schedule of the training loop (mmdetection-style options)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from nassearch.config import OptimizerConfig, ScheduleConfig, TrainConfig
from nassearch.errors import NasSearchError

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def param_groups(model: nn.Module, cfg: OptimizerConfig) -> list[dict[str, Any]]:
    """Trainable parameters split into weight/bias x decay/no-decay groups (mmdetection's paramwise options)."""
    buckets: dict[str, list[nn.Parameter]] = {
        "weight": [],
        "weight_no_decay": [],
        "bias": [],
        "bias_no_decay": [],
    }
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            is_bias = name == "bias"
            no_decay = cfg.no_decay_norm_bias and (is_bias or isinstance(module, _NORM_TYPES))
            buckets[("bias" if is_bias else "weight") + ("_no_decay" if no_decay else "")].append(
                param
            )
    groups = []
    for name, params in buckets.items():
        if not params:
            continue
        lr_mult = cfg.bias_lr_mult if name.startswith("bias") else 1.0
        groups.append(
            {
                "params": params,
                "name": name,
                "lr": cfg.lr * lr_mult,
                "weight_decay": 0.0 if name.endswith("no_decay") else cfg.weight_decay,
            }
        )
    if not groups:
        raise NasSearchError(
            "optimizer: the model has no trainable parameters (requires_grad=False everywhere)"
        )
    return groups


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW over `param_groups(model, cfg)`."""
    groups = param_groups(model, cfg)
    if cfg.type == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def total_iterations(cfg: TrainConfig, iters_per_epoch: int) -> int:
    """ceil(epochs * iters_per_epoch), capped by max_iters; fractional epochs stop mid-epoch."""
    # The small epsilon keeps e.g. 0.1 * 30 = 3.0000000000000004 from rounding up to 4.
    total = max(1, math.ceil(cfg.epochs * iters_per_epoch - 1e-9))
    return min(total, cfg.max_iters) if cfg.max_iters is not None else total


def lr_factor(iteration: int, cfg: ScheduleConfig, total_iters: int, iters_per_epoch: int) -> float:
    """Multiplier of the base lr for optimiser step `iteration` (0-based): schedule x linear warm-up."""
    if cfg.type == "step":
        milestones = [round(m * iters_per_epoch) for m in cfg.milestones]
        factor = cfg.gamma ** sum(iteration >= m for m in milestones)
    elif cfg.type == "cosine":
        progress = min(iteration / total_iters, 1.0)
        factor = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (
            1 + math.cos(math.pi * progress)
        )
    else:
        factor = 1.0
    if iteration < cfg.warmup_iters:
        # mmdetection's linear warm-up: scales the regular schedule from warmup_ratio up to 1.
        factor *= cfg.warmup_ratio + (1 - cfg.warmup_ratio) * iteration / cfg.warmup_iters
    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_iters: int, iters_per_epoch: int
) -> LambdaLR:
    """An iteration-based LambdaLR (call `.step()` after every optimiser step)."""

    def factor(iteration: int) -> float:
        return lr_factor(iteration, cfg, total_iters, iters_per_epoch)

    return LambdaLR(optimizer, factor)
