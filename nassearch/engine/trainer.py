"""One training loop for proxy training (inside Tune trials) and full retraining, with exact resume.

Everything random in the loop is derived from `seed`: the sample order of epoch `e` comes from a
generator seeded with (seed, e), and checkpoints store the global RNG states, so a run resumed from
`last.pth` reproduces the uninterrupted run's losses exactly (on CPU).

Distributed (torchrun, `distributed=` a DistributedContext): `cfg.batch_size` stays the global batch,
each rank takes its slice of the same global batches, gradients are averaged by DDP, and loss
normalisers are averaged over ranks by the detectors, so training equals the single-process run
with the same config. Side effects (checkpoints, TensorBoard, metrics.jsonl, log lines,
evaluation) happen on rank 0 only; checkpoints hold the unwrapped model and load at any world size.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler

from nassearch.atomic import atomic_write_text
from nassearch.config import TrainConfig
from nassearch.console import silent
from nassearch.data.collate import collate_detection
from nassearch.device import use_bf16, use_channels_last
from nassearch.distributed import (
    DistributedContext,
    any_process,
    average_over_processes,
    broadcast_from_main,
)
from nassearch.engine.checkpoint import (
    TRAINER_CHECKPOINT_FORMAT,
    is_trainer_checkpoint,
    load_checkpoint,
    load_state_checked,
    save_checkpoint,
)
from nassearch.engine.optim import build_optimizer, build_scheduler, lr_factor, total_iterations
from nassearch.errors import NasSearchError, first_line
from nassearch.status import Status

Evaluator = Callable[[nn.Module, int], dict[str, float]]
TRAIN_PHASES = ("data", "step", "checkpoint", "evaluation", "callback")
EpochCallback = Callable[[int, dict[str, Any]], None]


@dataclass
class TrainResult:
    """Outcome of `Trainer.fit`: status OK, NAN (stopped on a non-finite loss), TIMEOUT or
    INTERRUPTED (stopped on request, resumable)."""

    status: Status
    message: str
    epochs_completed: int
    iterations: int
    loss_history: list[float] = field(default_factory=list)
    last_losses: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    # With `save_best`: {"metric", "value", "epoch"} of the best evaluation (best.pth's).
    best: dict[str, Any] = field(default_factory=dict)
    # Seconds of this invocation by phase (`TRAIN_PHASES`): waiting for batches, the optimiser
    # steps (forward, backward, update), checkpoint writes, evaluation and the epoch callback.
    timings: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- data order


def _mix_seed(*parts: int) -> int:
    """A 56-bit seed derived from integers, so (seed, epoch) pairs give unrelated generators."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:7], "little")


def epoch_order(size: int, seed: int, epoch: int) -> list[int]:
    """The shuffled sample order of one epoch, a function of (seed, epoch) only."""
    generator = torch.Generator().manual_seed(_mix_seed(seed, epoch))
    return torch.randperm(size, generator=generator).tolist()


class GlobalBatchSampler(Sampler[list[int]]):
    """This rank's share of each global batch of an epoch, from global batch `start_batch` on.

    Global batch k holds positions [k*B, (k+1)*B) of `epoch_order` (the last one may be shorter);
    rank r of W takes its r-th contiguous slice (B/W images each, the remainder spread over the first
    ranks of a short last batch). Every rank gets at least one image: a last batch with fewer images
    than ranks is topped up from the start of the epoch (as torch's DistributedSampler pads).
    With one rank this is plain shuffled batching.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        epoch: int,
        *,
        start_batch: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.size, self.batch_size, self.seed, self.epoch = size, batch_size, seed, epoch
        self.start_batch, self.rank, self.world_size = start_batch, rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        order = epoch_order(self.size, self.seed, self.epoch)
        for k in range(self.start_batch, len(self) + self.start_batch):
            batch = order[k * self.batch_size : (k + 1) * self.batch_size]
            if len(batch) < self.world_size:
                batch = batch + order[: self.world_size - len(batch)]
            share, extra = divmod(len(batch), self.world_size)
            first = self.rank * share + min(self.rank, extra)
            yield batch[first : first + share + (self.rank < extra)]

    def __len__(self) -> int:
        return max(0, math.ceil(self.size / self.batch_size) - self.start_batch)


# ----------------------------------------------------------------------------- trainer


@dataclass
class _RunState:
    iteration: int = 0
    epochs_completed: int = 0
    loss_history: list[float] = field(default_factory=list)
    last_losses: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    # Training seconds of earlier invocations (a resumed run counts them too).
    seconds_before: float = 0.0
    best: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TRAIN_PHASES, 0.0))

    def seconds(self, started: float) -> float:
        """Training seconds so far: earlier invocations' and this one's (since `started`)."""
        return self.seconds_before + time.perf_counter() - started


class _NonFiniteLoss(Exception):
    """Internal signal: the loss at the current step is NaN or infinite (carries the loss values)."""

    def __init__(self, message: str, losses: dict[str, float]) -> None:
        super().__init__(message)
        self.losses = losses


class _TimeLimit(Exception):
    """Internal signal: the run's time limit has passed."""


class _StopRequested(Exception):
    """Internal signal: `stop_requested()` turned true (a SIGTERM from a scheduler, a Ctrl-C)."""


class Trainer:
    """Trains a detector whose training-mode forward returns a dict of `loss_*` tensors.

    `evaluator(model, epoch)` runs every `cfg.eval_interval` epochs and after the last one; its
    metrics go to metrics.jsonl, TensorBoard and `TrainResult.metrics`. `on_epoch_end(epoch, info)`
    runs after each epoch's checkpoint with mean losses, lr, iteration and any new metrics (epochs
    are counted from 1). Checkpoints: work_dir/checkpoints/last.pth after every epoch (a resume
    loses at most one), epoch_{k}.pth kept every `cfg.checkpoint_interval` epochs and after the
    final (possibly partial) one.
    `time_limit_s` stops training (status `timeout`) at the first iteration past the limit.
    `stop_requested()`, asked at every step (on every rank, agreed on with the step's loss
    reduction), stops training with status `interrupted` after writing last.pth at that step, from
    which `fit(resume=True)` continues.
    `keep_epoch_checkpoints=False` writes last.pth only (proxy trials, where disk adds up).
    `checkpoint_every_s` > 0 writes last.pth at an epoch's end only once that many seconds of
    training passed since the last write (short proxy epochs: a resume then loses at most that
    much); the epoch callback's `info["checkpointed"]` says whether this epoch wrote one.
    """

    def __init__(
        self,
        model: nn.Module,
        train_set: Dataset,
        cfg: TrainConfig,
        *,
        device: torch.device,
        seed: int = 0,
        work_dir: str | os.PathLike | None = None,
        size_divisor: int = 32,
        evaluator: Evaluator | None = None,
        on_epoch_end: EpochCallback | None = None,
        progress: bool | None = None,
        log: Callable[[str], Any] | None = print,
        time_limit_s: float | None = None,
        keep_epoch_checkpoints: bool = True,
        distributed: DistributedContext | None = None,
        stop_requested: Callable[[], bool] | None = None,
        checkpoint_every_s: float = 0.0,
    ) -> None:
        self.cfg = cfg
        self.checkpoint_every_s = checkpoint_every_s
        self._last_saved: float | None = None  # training seconds at the last last.pth
        self.stop_requested = stop_requested
        self.time_limit_s = time_limit_s
        self.keep_epoch_checkpoints = keep_epoch_checkpoints
        self.device = torch.device(device)
        self.seed = seed
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.size_divisor = size_divisor
        self.evaluator = evaluator
        self.on_epoch_end = on_epoch_end
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.log = log or silent
        self.distributed = distributed
        # Ranks other than 0 of a distributed run write no files and print nothing.
        self.is_main_process = distributed is None or distributed.is_main
        self.train_set = train_set
        if len(train_set) == 0:
            raise NasSearchError("training set is empty: nothing to train on")
        world_size = distributed.world_size if distributed is not None else 1
        if cfg.batch_size % world_size:
            raise NasSearchError(
                f"train.batch_size: {cfg.batch_size} images per step do not split evenly over "
                f"{world_size} processes (it is the global batch)"
            )
        self.bf16 = use_bf16(self.device, cfg.amp)
        self.channels_last = use_channels_last(self.device, cfg.channels_last)
        if cfg.sync_bn and distributed is not None:
            if self.device.type != "cuda":
                raise NasSearchError(
                    f"train.sync_bn: torch's SyncBatchNorm runs on CUDA only (this run is on "
                    f"{self.device.type}); set it to false"
                )
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # `model` is the plain module (evaluation, checkpoints); `train_model` runs the training
        # forward (the DDP wrapper in a distributed run).
        self.model = model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.train_model: nn.Module = self.model
        if distributed is not None:
            # Every parameter of our detectors receives a gradient at every step (checked for
            # sampled NAS-FPN and NAS-FCOS architectures), so no unused-parameter search.
            self.train_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.iters_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
        self.total_iters = total_iterations(cfg, self.iters_per_epoch)
        self.num_epochs = math.ceil(self.total_iters / self.iters_per_epoch)
        self.optimizer = build_optimizer(self.model, cfg.optimizer)
        self.scheduler = build_scheduler(
            self.optimizer, cfg.schedule, self.total_iters, self.iters_per_epoch
        )
        self._params = [p for g in self.optimizer.param_groups for p in g["params"]]

    # -- paths

    @property
    def checkpoint_dir(self) -> Path | None:
        return self.work_dir / "checkpoints" if self.work_dir is not None else None

    def current_lr(self, iteration: int) -> float:
        """Learning rate of non-bias parameters at optimiser step `iteration`."""
        return self.cfg.optimizer.lr * lr_factor(
            iteration, self.cfg.schedule, self.total_iters, self.iters_per_epoch
        )

    # -- main entry point

    def fit(self, resume: bool = False) -> TrainResult:
        """Train to the configured length; with resume=True continue from work_dir/checkpoints/last.pth."""
        started = time.perf_counter()
        state = _RunState()
        if resume:
            self._restore(state)
        # Events up to the checkpoint (its last losses, its evaluation) stay; later ones are rewritten.
        writer = self._open_writer(purge_step=state.iteration + 1 if resume else None)
        bar = self._open_bar(state.iteration)
        status, message = Status.OK, ""
        try:
            self._train(state, writer, bar, started)
        except _NonFiniteLoss as exc:
            status, message = Status.NAN, str(exc)
            state.last_losses = exc.losses
        except _TimeLimit as exc:
            status, message = Status.TIMEOUT, str(exc)
        except _StopRequested:
            self._save(state, state.epochs_completed, False, state.seconds(started))
            status = Status.INTERRUPTED
            message = (
                f"stopped on request at iteration {state.iteration} of {self.total_iters}; "
                "last.pth holds this step (continue with --resume)"
            )
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        if status == Status.OK:
            message = f"trained {state.iteration} iterations ({state.epochs_completed} epochs)"
        return TrainResult(
            status=status,
            message=message,
            epochs_completed=state.epochs_completed,
            iterations=state.iteration,
            loss_history=list(state.loss_history),
            last_losses=dict(state.last_losses),
            metrics=dict(state.metrics),
            seconds=state.seconds(started),
            best=dict(state.best),
            timings=dict(state.timings),
        )

    def _train(self, state: _RunState, writer: Any, bar: Any, started: float) -> None:
        ipe, total = self.iters_per_epoch, self.total_iters
        first_iteration = state.iteration
        window: dict[str, float] = {}
        window_steps = 0
        while state.iteration < total:
            epoch = state.iteration // ipe  # 0-based epoch in progress
            self.train_model.train()
            if hasattr(self.train_set, "set_epoch"):
                self.train_set.set_epoch(epoch)
            loader = self._make_loader(epoch, start_batch=state.iteration - epoch * ipe)
            epoch_sums: dict[str, float] = {}
            epoch_steps = 0
            lr = self.current_lr(state.iteration)
            stop = False
            batches = iter(loader)
            while True:
                waited = time.perf_counter()
                batch = next(batches, None)
                stepped = time.perf_counter()
                state.timings["data"] += stepped - waited
                if batch is None:
                    break
                images, targets = batch
                lr = self.current_lr(state.iteration)
                losses, stop = self._step(images, targets, state.iteration, epoch)
                state.timings["step"] += time.perf_counter() - stepped
                state.iteration += 1
                state.loss_history.append(losses["loss"])
                state.last_losses = losses
                epoch_steps += 1
                window_steps += 1
                for key, value in losses.items():
                    epoch_sums[key] = epoch_sums.get(key, 0.0) + value
                    window[key] = window.get(key, 0.0) + value
                if bar is not None:
                    bar.set_postfix(loss=f"{losses['loss']:.4f}", lr=f"{lr:.3g}", refresh=False)
                    bar.update(1)
                if state.iteration % self.cfg.log_interval == 0 or state.iteration == total:
                    means = {k: v / window_steps for k, v in window.items()}
                    self._log_iteration(
                        writer, bar, means, lr, epoch, state.iteration, first_iteration, started
                    )
                    window, window_steps = {}, 0
                if state.iteration >= total:
                    break
                if self.time_limit_s is not None and any_process(
                    time.perf_counter() - started > self.time_limit_s, self.device
                ):
                    raise _TimeLimit(
                        f"time limit of {self.time_limit_s:g} s reached after {state.iteration} "
                        f"of {total} iterations"
                    )
                # At an epoch's end the stop waits for the epoch's evaluation and checkpoint.
                if stop and state.iteration % ipe:
                    raise _StopRequested
            state.epochs_completed = epoch + 1
            epoch_means = {k: v / max(epoch_steps, 1) for k, v in epoch_sums.items()}
            self._end_epoch(state, writer, epoch + 1, epoch_means, lr, started)
            if stop and state.iteration < total:
                raise _StopRequested

    def _step(
        self, images: torch.Tensor, targets: list[dict[str, Any]], iteration: int, epoch: int
    ) -> tuple[dict[str, float], bool]:
        """One optimiser step; returns the loss values and whether any rank was asked to stop, or
        raises _NonFiniteLoss before touching weights."""
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = [
            {
                **t,
                "boxes": t["boxes"].to(self.device, non_blocking=True),
                "labels": t["labels"].to(self.device, non_blocking=True),
            }
            for t in targets
        ]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss_dict = self.train_model(images, targets)
        if not isinstance(loss_dict, dict) or not loss_dict:
            raise NasSearchError(
                f"model returned {type(loss_dict).__name__} in training mode; expected a dict of loss_* tensors"
            )
        total = sum(value.float() for value in loss_dict.values())
        # One device->host transfer for all values (also the NaN check), the stop request riding
        # along: the mean over ranks is the global batch's loss (normalisers are global), so every
        # rank agrees on the non-finite check below and, mean > 0, on a stop asked of any of them.
        stop = self.stop_requested is not None and self.stop_requested()
        values = torch.stack(
            [total.detach()]
            + [v.detach().float() for v in loss_dict.values()]
            + [total.new_tensor(float(stop))]
        )
        *numbers, stop_mean = average_over_processes(values).tolist()
        losses = {"loss": numbers[0], **dict(zip(loss_dict.keys(), numbers[1:], strict=True))}
        if not math.isfinite(numbers[0]):
            state_str = ", ".join(f"{k}={v:.4g}" for k, v in losses.items())
            raise _NonFiniteLoss(
                f"non-finite loss at iteration {iteration + 1} (epoch {epoch + 1}): {state_str}",
                losses,
            )
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(self._params, self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return losses, stop_mean > 0

    def _make_loader(self, epoch: int, start_batch: int = 0) -> DataLoader:
        """This epoch's loader of this rank's share of every global batch, from `start_batch` on."""
        ctx = self.distributed
        sampler = GlobalBatchSampler(
            len(self.train_set),
            self.cfg.batch_size,
            self.seed,
            epoch,
            start_batch=start_batch,
            rank=ctx.rank if ctx is not None else 0,
            world_size=ctx.world_size if ctx is not None else 1,
        )
        # The loader's own generator only seeds worker processes; keep it off the global RNG.
        generator = torch.Generator().manual_seed(_mix_seed(self.seed, epoch, 1))
        return DataLoader(
            self.train_set,
            batch_sampler=sampler,
            num_workers=self.cfg.num_workers,
            collate_fn=functools.partial(collate_detection, size_divisor=self.size_divisor),
            pin_memory=self.device.type == "cuda",
            generator=generator,
        )

    def _end_epoch(
        self,
        state: _RunState,
        writer: Any,
        epoch: int,
        epoch_means: dict[str, float],
        lr: float,
        started: float,
    ) -> None:
        """Evaluate, checkpoint (before reporting, so a report can point at the checkpoint), then call back."""
        is_last = state.iteration >= self.total_iters
        interval = self.cfg.eval_interval
        evaluated = False
        phase_started = time.perf_counter()
        if self.evaluator is not None and (is_last or (interval and epoch % interval == 0)):
            metrics = None
            if self.is_main_process:
                metrics = {k: float(v) for k, v in self.evaluator(self.model, epoch).items()}
            state.metrics = broadcast_from_main(metrics)
            evaluated = True
            self._record_metrics(writer, state.metrics, epoch, state.iteration)
            self._keep_best(state, epoch)
        saving = time.perf_counter()
        state.timings["evaluation"] += saving - phase_started
        seconds = state.seconds(started)
        keep = is_last or epoch % self.cfg.checkpoint_interval == 0
        since = seconds - (self._last_saved if self._last_saved is not None else 0.0)
        checkpointed = (keep and self.keep_epoch_checkpoints) or since >= self.checkpoint_every_s
        if checkpointed:
            self._save(state, epoch, keep, seconds)
            self._last_saved = seconds
        checkpointed = checkpointed and self.checkpoint_dir is not None and self.is_main_process
        calling = time.perf_counter()
        state.timings["checkpoint"] += calling - saving
        if self.on_epoch_end is not None:
            info: dict[str, Any] = {
                "epoch": epoch,
                "iteration": state.iteration,
                "lr": lr,
                "seconds": seconds,
                "checkpointed": checkpointed,
                **epoch_means,
            }
            if evaluated:
                info.update(state.metrics)
            self.on_epoch_end(epoch, info)
        state.timings["callback"] += time.perf_counter() - calling

    # -- checkpoints

    def _keep_best(self, state: _RunState, epoch: int) -> None:
        """With `save_best`, write best.pth (weights only) when this evaluation beats the best one."""
        name = self.cfg.save_best
        value = state.metrics.get(name) if name else None
        if value is None or value <= state.best.get("value", -math.inf):
            return
        state.best = {"metric": name, "value": value, "epoch": epoch}
        if self.checkpoint_dir is None or not self.is_main_process:
            return
        content = {"model": self.model.state_dict(), "iteration": state.iteration, **state.best}
        save_checkpoint(content, self.checkpoint_dir / "best.pth")
        self._emit(
            f"new best {name} {value:.4f} at epoch {epoch}: {self.checkpoint_dir / 'best.pth'}"
        )

    def _save(self, state: _RunState, epoch: int, keep: bool, seconds: float) -> None:
        """Write last.pth and, when `keep`, epoch_{epoch}.pth (atomically) under work_dir/checkpoints."""
        if self.checkpoint_dir is None or not self.is_main_process:
            return
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if self.device.type == "cuda":  # this process's device only (no contexts on other GPUs)
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        content = {
            "format": TRAINER_CHECKPOINT_FORMAT,
            "version": 1,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": epoch,
            "iteration": state.iteration,
            "iters_per_epoch": self.iters_per_epoch,
            "seed": self.seed,
            "rng": rng,
            "loss_history": list(state.loss_history),
            "last_losses": dict(state.last_losses),
            "metrics": dict(state.metrics),
            "seconds": seconds,
            "best": dict(state.best),
            # A JSON string keeps the file loadable with torch.load(weights_only=True).
            "config": self.cfg.model_dump_json(),
        }
        if keep and self.keep_epoch_checkpoints:
            save_checkpoint(content, self.checkpoint_dir / f"epoch_{epoch}.pth")
        save_checkpoint(content, self.checkpoint_dir / "last.pth")

    def _restore(self, state: _RunState) -> None:
        """Load last.pth into model, optimiser, scheduler, RNGs and the run state."""
        if self.checkpoint_dir is None:
            raise NasSearchError(
                "resume: the trainer has no work_dir, so there is no checkpoint to resume"
            )
        path = self.checkpoint_dir / "last.pth"
        ckpt = load_checkpoint(path)
        if not is_trainer_checkpoint(ckpt):
            raise NasSearchError(
                f"checkpoint {path}: not a trainer checkpoint (no 'format' marker)"
            )
        for key in (
            "model",
            "optimizer",
            "scheduler",
            "epoch",
            "iteration",
            "iters_per_epoch",
            "rng",
        ):
            if key not in ckpt:
                raise NasSearchError(f"checkpoint {path}: missing key {key!r}")
        if ckpt["iters_per_epoch"] != self.iters_per_epoch:
            raise NasSearchError(
                f"checkpoint {path}: iters_per_epoch {ckpt['iters_per_epoch']} differs from this run's "
                f"{self.iters_per_epoch} (dataset size or batch_size changed)"
            )
        if ckpt.get("seed", self.seed) != self.seed:
            raise NasSearchError(
                f"checkpoint {path}: seed {ckpt['seed']} differs from this run's seed {self.seed}"
            )
        load_state_checked(self.model, ckpt["model"], path)
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise NasSearchError(
                f"checkpoint {path}: optimizer/scheduler state does not fit this model "
                f"({first_line(exc)})"
            ) from exc
        rng = ckpt["rng"]
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        state.iteration = int(ckpt["iteration"])
        state.epochs_completed = int(ckpt["epoch"])
        state.loss_history = [float(v) for v in ckpt.get("loss_history", [])]
        state.last_losses = dict(ckpt.get("last_losses", {}))
        state.metrics = dict(ckpt.get("metrics", {}))
        state.seconds_before = float(ckpt.get("seconds", 0.0))
        state.best = dict(ckpt.get("best", {}))
        self._truncate_metrics_log(state.iteration)
        self._emit(
            f"resumed from {path} at iteration {state.iteration} (epoch {state.epochs_completed})"
        )

    # -- logging

    def _emit(self, line: str) -> None:
        if self.is_main_process:
            self.log(line)

    def _open_writer(self, purge_step: int | None) -> Any:
        if not (self.cfg.tensorboard and self.work_dir is not None and self.is_main_process):
            return None
        from torch.utils.tensorboard import SummaryWriter  # slow import, only when used

        # purge_step drops events a crashed run wrote after the checkpoint we resume from.
        return SummaryWriter(log_dir=str(self.work_dir / "tensorboard"), purge_step=purge_step)

    def _open_bar(self, initial: int) -> Any:
        if not (self.progress and self.is_main_process):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.total_iters, initial=initial, desc="train", dynamic_ncols=True)

    def _log_iteration(
        self,
        writer: Any,
        bar: Any,
        means: dict[str, float],
        lr: float,
        epoch: int,
        iteration: int,
        first_iteration: int,
        started: float,
    ) -> None:
        if writer is not None:
            for key, value in means.items():
                writer.add_scalar(f"train/{key}", value, iteration)
            writer.add_scalar("train/lr", lr, iteration)
        if bar is not None:
            return
        elapsed = time.perf_counter() - started
        rate = (iteration - first_iteration) / max(elapsed, 1e-9)
        eta = datetime.timedelta(seconds=round((self.total_iters - iteration) / max(rate, 1e-9)))
        parts = " ".join(f"{k}={v:.4f}" for k, v in means.items() if k != "loss")
        self._emit(
            f"epoch {epoch + 1}/{self.num_epochs} iter {iteration}/{self.total_iters} "
            f"loss {means['loss']:.4f} ({parts}) lr {lr:.4g} {rate:.2f} it/s eta {eta}"
        )

    def _record_metrics(
        self, writer: Any, metrics: dict[str, float], epoch: int, iteration: int
    ) -> None:
        if not self.is_main_process:
            return
        if writer is not None:
            for key, value in metrics.items():
                writer.add_scalar(f"metrics/{key}", value, iteration)
        shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        self._emit(f"epoch {epoch} evaluation: {shown}")
        if self.work_dir is not None:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            with open(self.work_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"epoch": epoch, "iteration": iteration, **metrics}) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def _truncate_metrics_log(self, iteration: int) -> None:
        """Drop metric lines a crashed run wrote after the checkpoint being resumed."""
        if self.work_dir is None or not self.is_main_process:
            return
        path = self.work_dir / "metrics.jsonl"
        if not path.is_file():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                if json.loads(line).get("iteration", 0) <= iteration:
                    kept.append(line)
        atomic_write_text(path, "".join(k + "\n" for k in kept))
