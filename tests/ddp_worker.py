"""Run under torchrun by test_distributed.py: DDP training through the Trainer; after every step
(one step per epoch here) each rank gathers all ranks' parameters and records their largest gap."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from nassearch.config import load_config
from nassearch.distributed import init_distributed, shutdown_distributed
from nassearch.engine.trainer import Trainer
from nassearch.train import build_model_and_data


def main(config: str, out: str) -> None:
    cfg = load_config(config)
    ctx, device = init_distributed(cfg.device)
    model, train_set, _ = build_model_and_data(cfg)
    gaps: list[float] = []
    trainer: Trainer

    def on_epoch_end(epoch: int, info: dict) -> None:
        params = torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()])
        gathered = [torch.empty_like(params) for _ in range(ctx.world_size)]
        dist.all_gather(gathered, params)
        gaps.append(max((g - gathered[0]).abs().max().item() for g in gathered))

    trainer = Trainer(
        model,
        train_set,
        cfg.train,
        device=device,
        seed=cfg.seed,
        # Each rank is given its own folder: only rank 0's may fill up.
        work_dir=Path(out) / f"run{ctx.rank}",
        on_epoch_end=on_epoch_end,
        progress=False,
        distributed=ctx,
    )
    result = trainer.fit()
    record = {
        "rank": ctx.rank,
        "world_size": ctx.world_size,
        "iterations": result.iterations,
        "gaps": gaps,
        "param_norm": torch.cat([p.detach().reshape(-1) for p in model.parameters()]).norm().item(),
    }
    (Path(out) / f"rank{ctx.rank}.json").write_text(json.dumps(record))
    shutdown_distributed(ctx)


if __name__ == "__main__":
    main(*sys.argv[1:])
