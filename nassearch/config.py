"""Typed experiment configuration: pydantic models, YAML loading, `--set` overrides, one-line errors."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class OptimizerConfig(Strict):
    type: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    # mmdetection's paramwise option: no weight decay on norm weights and biases.
    no_decay_norm_bias: bool = False
    bias_lr_mult: float = Field(1.0, gt=0)


class ScheduleConfig(Strict):
    type: Literal["step", "cosine", "constant"] = "step"
    # Step decay points, in epochs (fractions allowed); the learning rate is multiplied by `gamma` at each.
    milestones: list[float] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0)
    warmup_iters: int = Field(0, ge=0)
    # Linear warm-up starts at lr * warmup_ratio.
    warmup_ratio: float = Field(0.001, gt=0, le=1)
    # Cosine schedules decay to lr * min_lr_ratio.
    min_lr_ratio: float = Field(0.0, ge=0, le=1)


class TrainConfig(Strict):
    epochs: float = Field(12, gt=0)
    # Optional hard cap on optimiser steps (overrides epochs when smaller); useful for proxy tasks.
    max_iters: int | None = Field(None, gt=0)
    batch_size: int = Field(2, ge=1)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    # Clip the global gradient norm to this value; None disables clipping.
    grad_clip: float | None = Field(None, gt=0)
    # bf16 autocast: "auto" enables it on CUDA only; never on CPU.
    amp: Literal["auto", "off", "bf16"] = "auto"
    channels_last: Literal["auto", "off", "on"] = "auto"
    log_interval: int = Field(20, ge=1)
    # Evaluate every N epochs (0: only at the end).
    eval_interval: int = Field(0, ge=0)
    # Save a checkpoint every N epochs (always at the end).
    checkpoint_interval: int = Field(1, ge=1)
    num_workers: int = Field(0, ge=0)
    tensorboard: bool = True
