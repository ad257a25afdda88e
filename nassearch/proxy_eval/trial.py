"""The Ray Tune trainable of a search: one trial proxy-trains and scores one architecture.

The searcher (`ControllerSearcher`) puts the genotype into the trial's config; the experiment
config travels once through Ray's object store (`tune.with_parameters`). Every epoch is reported
with `tune.report` (reward NaN until the end, so Tune's metric check is satisfied and a crash
mid-trial reads as a failure), then the final `ProxyResult` with the reward.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from nassearch.config import validate_config
from nassearch.proxy_eval.proxy_task import evaluate_candidate
from nassearch.search_spaces import genotype_from_dict


def proxy_trial(config: dict[str, Any], experiment: dict[str, Any]) -> None:
    """Tune function trainable: `config["genotype"]` from the searcher, `experiment` the resolved config."""
    from ray import tune

    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit() and int(threads) > 0:
        # Ray sets OMP_NUM_THREADS to the trial's CPU count; torch must follow it too.
        torch.set_num_threads(int(threads))
    cfg = validate_config(experiment, "search config")
    genotype = genotype_from_dict(config["genotype"])

    def on_epoch_end(epoch: int, info: dict[str, Any]) -> None:
        losses = {k: v for k, v in info.items() if k.startswith("loss")}
        tune.report(
            {
                "reward": math.nan,
                "final": False,
                "epoch": epoch,
                "iteration": info["iteration"],
                **losses,
            }
        )

    result = evaluate_candidate(genotype, cfg, on_epoch_end=on_epoch_end)
    report = result.to_dict()
    metrics = report.pop("metrics")
    tune.report({**report, **{f"coco/{k}": v for k, v in metrics.items()}, "final": True})
