"""Checkpoint I/O: atomic saves and safe (`weights_only`) loads with one-line errors naming file and key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nassearch.atomic import atomic_write
from nassearch.errors import NasSearchError, first_line

# Marks files written by `nassearch.engine.trainer.Trainer` (model + optimizer + RNG state).
TRAINER_CHECKPOINT_FORMAT = "nassearch-trainer-checkpoint"


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write `state` with torch.save atomically (temp file, fsync, rename): never left half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(dict(state), f)

    atomic_write(path, write, fsync=True)
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable too (POSIX only; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint dict onto the CPU with `weights_only=True`; bad files raise a one-line NasSearchError."""
    path = Path(path)
    if not path.is_file():
        raise NasSearchError(f"checkpoint {path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (
        Exception
    ) as exc:  # pickle, zip and weights_only errors all mean "not a readable checkpoint"
        raise NasSearchError(
            f"checkpoint {path}: cannot read it as a PyTorch checkpoint "
            f"({type(exc).__name__}: {first_line(exc, default='')})"
        ) from exc
    if not isinstance(obj, dict):
        raise NasSearchError(
            f"checkpoint {path}: not a checkpoint (expected a dict, found {type(obj).__name__})"
        )
    return obj


def is_trainer_checkpoint(obj: Mapping[str, Any]) -> bool:
    """True for dicts written by the Trainer (as opposed to plain state dicts)."""
    return obj.get("format") == TRAINER_CHECKPOINT_FORMAT


def extract_state_dict(obj: Mapping[str, Any], path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Model weights from a trainer checkpoint, a `{"state_dict": ...}` or `{"model": ...}` file, or a
    plain state dict."""
    if is_trainer_checkpoint(obj):
        state = obj.get("model")
    elif isinstance(obj.get("state_dict"), Mapping):
        state = obj["state_dict"]  # mmdetection / Lightning layout
    elif isinstance(obj.get("model"), Mapping):
        state = obj["model"]  # torchvision's reference scripts / Detectron2 layout
    else:
        state = obj
    if not isinstance(state, Mapping):
        raise NasSearchError(f"checkpoint {path}: no model weights found (key 'model' is missing)")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise NasSearchError(
                f"checkpoint {path}: not a model state dict (key {key!r} holds a {type(value).__name__})"
            )
    # Checkpoints saved from a DistributedDataParallel wrapper prefix every key with "module.".
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def load_state_checked(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    strict: bool = True,
) -> tuple[list[str], list[str]]:
    """Copy `state` into `model`, first checking keys and shapes so errors name the key, both shapes and the file."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if strict and missing:
        raise NasSearchError(
            f"checkpoint {path}: missing key {missing[0]!r} "
            f"({len(missing)} model key(s) absent from the checkpoint)"
        )
    if strict and unexpected:
        raise NasSearchError(
            f"checkpoint {path}: unexpected key {unexpected[0]!r} "
            f"({len(unexpected)} checkpoint key(s) not in the model)"
        )
    for key, value in state.items():
        if key in expected and tuple(value.shape) != tuple(expected[key].shape):
            raise NasSearchError(
                f"checkpoint {path}: shape mismatch for key {key!r}: checkpoint "
                f"{tuple(value.shape)} vs model {tuple(expected[key].shape)}"
            )
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return missing, unexpected


def load_model_weights(
    model: nn.Module, path: str | os.PathLike, *, strict: bool = True
) -> tuple[list[str], list[str]]:
    """Load weights from a trainer checkpoint or a plain state dict; returns (missing, unexpected) keys."""
    obj = load_checkpoint(path)
    return load_state_checked(model, extract_state_dict(obj, path), path, strict=strict)
