"""Multi-process training under torchrun: process-group set-up from the environment, and the few
collectives the trainer and the losses need (all of them no-ops in a single process)."""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from nassearch.device import resolve_device
from nassearch.errors import NasSearchError

# Rank 0 alone evaluates on the validation set while the others wait in the next collective, so the
# group's timeout must cover a full COCO evaluation (NCCL's default is 10 minutes).
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)

_TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a torchrun job."""

    rank: int
    local_rank: int
    world_size: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_size_from_env(env: Mapping[str, str] = os.environ) -> int:
    """WORLD_SIZE as torchrun sets it (1 when the variable is absent)."""
    value = env.get("WORLD_SIZE", "1")
    try:
        size = int(value)
    except ValueError:
        raise NasSearchError(f"environment: WORLD_SIZE={value!r} is not an integer") from None
    if size < 1:
        raise NasSearchError(f"environment: WORLD_SIZE={size} must be at least 1")
    return size


def init_distributed(
    device_spec: str, env: Mapping[str, str] = os.environ
) -> tuple[DistributedContext | None, torch.device]:
    """Join the torchrun job described by `env` (None when there is one process) and pick this rank's device.

    CUDA: one GPU per process, `cuda:LOCAL_RANK`, NCCL; CPU: gloo. `device_spec` is the config's
    `device`; under torchrun it may be auto, cpu or cuda, not a numbered GPU.
    """
    world_size = world_size_from_env(env)
    if world_size == 1:
        return None, resolve_device(device_spec)
    missing = [name for name in _TORCHRUN_VARIABLES if name not in env]
    if missing:
        raise NasSearchError(
            f"environment: WORLD_SIZE={world_size} but {', '.join(missing)} not set; "
            "launch distributed training with torchrun"
        )
    rank, local_rank = int(env["RANK"]), int(env["LOCAL_RANK"])
    if device_spec.startswith("cuda:"):
        raise NasSearchError(
            f"device: {device_spec!r} names one GPU; under torchrun every process uses "
            "cuda:LOCAL_RANK, so set device to auto or cuda"
        )
    device = resolve_device(device_spec)
    if device.type == "cuda":
        # Checked on every rank from LOCAL_WORLD_SIZE, so rank 0 reports it too.
        per_node = int(env.get("LOCAL_WORLD_SIZE", local_rank + 1))
        if max(per_node, local_rank + 1) > torch.cuda.device_count():
            raise NasSearchError(
                f"torchrun: {per_node} processes per node but only {torch.cuda.device_count()} "
                "CUDA device(s); lower --nproc_per_node"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend,
        init_method="env://",
        rank=rank,
        world_size=world_size,
        timeout=COLLECTIVE_TIMEOUT,
    )
    return DistributedContext(rank, local_rank, world_size, backend), device


def is_main_rank(env: Mapping[str, str] = os.environ) -> bool:
    """Whether this process is rank 0 of a torchrun job (or not part of one)."""
    return env.get("RANK", "0") == "0"


def shutdown_distributed(ctx: DistributedContext | None) -> None:
    if ctx is not None and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def average_over_processes(value: torch.Tensor) -> torch.Tensor:
    """Mean of a (gradient-free) tensor over all processes; `value` itself in a single process.

    Loss normalisers (positive-sample counts) go through this so that DDP's gradient averaging
    reproduces single-process training with the same global batch (as mmdetection's reduce_mean).
    """
    if not is_distributed():
        return value
    reduced = value.detach().clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / dist.get_world_size()


def any_process(flag: bool, device: torch.device) -> bool:
    """True when `flag` is True on at least one process (so every rank takes the same branch)."""
    if not is_distributed():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's `obj` on every process (picklable objects; a single process returns it as is)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
