"""Training and evaluation of fixed architectures: what `nassearch train` and `nassearch eval` run."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from nassearch.atomic import atomic_write_text
from nassearch.config import ExperimentConfig, check_unchanged, save_config
from nassearch.console import silent
from nassearch.data.build import build_dataset, num_classes
from nassearch.data.coco import CocoDetection
from nassearch.detectors.build import build_detector
from nassearch.device import resolve_device
from nassearch.distributed import DistributedContext
from nassearch.engine.checkpoint import load_model_weights
from nassearch.engine.evaluate import COCO_METRIC_NAMES, evaluate_detector
from nassearch.engine.trainer import Trainer
from nassearch.errors import NasSearchError
from nassearch.status import Status
from nassearch.stop_signal import StopOnSignal


def build_model_and_data(
    cfg: ExperimentConfig, *, with_train: bool = True
) -> tuple[nn.Module, CocoDetection | None, CocoDetection]:
    """Validation set, optional training set, and the detector sized for their categories."""
    val_set = build_dataset(cfg, "val", train=False)
    train_set = build_dataset(cfg, "train", train=True) if with_train else None
    if train_set is not None and train_set.cat_ids != val_set.cat_ids:
        raise NasSearchError(
            "data: training and validation annotation files list different categories "
            f"({len(train_set.cat_ids)} vs {len(val_set.cat_ids)})"
        )
    model = build_detector(cfg.model, num_classes(cfg, val_set), seed=cfg.seed)
    return model, train_set, val_set


# Settings a resumed run may change: where and how it runs, what it logs. Everything else shapes
# the training trajectory, which --resume continues exactly.
RESUME_FREE_KEYS = (
    "name",  # a run folder may be moved or renamed
    "output_dir",
    "device",
    "train.num_workers",
    "train.log_interval",
    "train.tensorboard",
    "train.eval_interval",
    "train.checkpoint_interval",
    "eval.batch_size",
)


def run_train(
    cfg: ExperimentConfig,
    *,
    resume: bool = False,
    log=print,
    device: torch.device | None = None,
    distributed: DistributedContext | None = None,
) -> dict:
    """Train `cfg`'s detector, evaluate it on the validation set, and write metrics.json to the run folder.

    With `distributed` (one rank of a torchrun job, `device` its device) the ranks train together;
    rank 0 alone logs, evaluates and writes files.
    """
    main = distributed is None or distributed.is_main
    if not main:
        log = silent
    run_dir = cfg.run_dir()
    last = run_dir / "checkpoints" / "last.pth"
    if resume and not last.is_file():
        raise NasSearchError(f"--resume: no checkpoint to resume from at {last}")
    if not resume and last.exists():
        raise NasSearchError(
            f"{run_dir}: already holds a training run; pass --resume to continue it or --name to start another"
        )
    if resume and (run_dir / "config.yaml").is_file():
        check_unchanged(cfg, run_dir / "config.yaml", free=RESUME_FREE_KEYS, what="run")
    device = device if device is not None else resolve_device(cfg.device)
    model, train_set, val_set = build_model_and_data(cfg)
    if main and not resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    where = f"device {device}"
    if distributed is not None:
        where = (
            f"{distributed.world_size} processes ({distributed.backend}, {device.type}), "
            f"{cfg.train.batch_size // distributed.world_size} images each per step"
        )
    log(
        f"training {cfg.model.type} (ResNet-{cfg.model.backbone.depth}) on {len(train_set)} images, "
        f"{len(val_set)} for validation, {where}; outputs in {run_dir}"
    )

    def evaluator(m: nn.Module, epoch: int) -> dict[str, float]:
        return evaluate_detector(
            m,
            val_set,
            device=device,
            batch_size=cfg.eval.batch_size,
            size_divisor=cfg.input.size_divisor,
        )

    stop = StopOnSignal(log)
    trainer = Trainer(
        model,
        train_set,
        cfg.train,
        device=device,
        seed=cfg.seed,
        work_dir=run_dir,
        size_divisor=cfg.input.size_divisor,
        evaluator=evaluator,
        log=log,
        distributed=distributed,
        stop_requested=stop,
    )
    with stop:
        result = trainer.fit(resume=resume)
    summary = {
        "name": cfg.name,
        "status": result.status,
        "message": result.message,
        "epochs_completed": result.epochs_completed,
        "iterations": result.iterations,
        "seconds": round(result.seconds, 1),  # training and evaluation, resumed runs included
        "final_losses": result.last_losses,
        "metrics": result.metrics,
    }
    if result.best:
        summary["best"] = {**result.best, "checkpoint": str(run_dir / "checkpoints" / "best.pth")}
    if not main:
        return summary
    _write_json(run_dir / "metrics.json", summary)
    if result.status != Status.OK:
        log(f"training stopped: {result.status}: {result.message}")
    elif result.metrics:
        log(format_metrics(result.metrics))
    log(f"metrics written to {run_dir / 'metrics.json'}")
    return summary


def run_eval(cfg: ExperimentConfig, checkpoint: str | Path, *, log=print) -> dict:
    """Evaluate a checkpoint on the validation set of `cfg`; writes eval.json beside the checkpoint."""
    checkpoint = Path(checkpoint)
    device = resolve_device(cfg.device)
    model, _, val_set = build_model_and_data(cfg, with_train=False)
    load_model_weights(model, checkpoint)
    model.to(device)
    metrics = evaluate_detector(
        model,
        val_set,
        device=device,
        batch_size=cfg.eval.batch_size,
        size_divisor=cfg.input.size_divisor,
    )
    log(format_metrics(metrics))
    out = checkpoint.with_name(checkpoint.stem + ".eval.json")
    _write_json(out, {"checkpoint": str(checkpoint), "images": len(val_set), "metrics": metrics})
    log(f"metrics written to {out}")
    return metrics


def format_metrics(metrics: dict[str, float]) -> str:
    """COCO bbox metrics as a two-line table in percent; `-` where COCO has no ground truth (-1)."""
    names = [n for n in COCO_METRIC_NAMES if n in metrics]
    head = " ".join(f"{n:>6}" for n in names)
    vals = " ".join(f"{100 * metrics[n]:6.1f}" if metrics[n] >= 0 else f"{'-':>6}" for n in names)
    return f"COCO bbox (%)\n{head}\n{vals}"


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
