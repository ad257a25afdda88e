"""Learning is real: RetinaNet and FCOS overfit a handful of synthetic images to AP >= 0.5.

The whole pipeline is used (synthetic data on disk, COCO dataset, transforms, trainer, COCOeval),
so a break anywhere in it (targets, losses, decoding, the map back to original coordinates, the
category-id mapping) shows up as a low AP.
"""

from __future__ import annotations

import pytest
import torch

from nassearch.config import validate_config
from nassearch.data.build import build_dataset
from nassearch.detectors.build import build_detector
from nassearch.engine.evaluate import evaluate_detector
from nassearch.engine.trainer import Trainer

HEADS = {
    "retinanet": {"num_convs": 1, "feat_channels": 64, "head_norm": "gn"},
    "fcos": {"num_convs": 1, "feat_channels": 64},
}
# Measured (seed 0, 4 images of 96 px): RetinaNet after 60 epochs loss 2.20 -> 0.027, AP 1.0;
# FCOS after 100 epochs 2.83 -> 0.65 (ratio 0.228-0.233 over oneDNN ISAs and thread counts),
# AP 0.95-1.0 (its centerness BCE keeps a floor near 0.6: 150 epochs reach only 0.62).
EPOCHS = {"retinanet": 60, "fcos": 100}


def overfit_config(detector: str, tmp_path) -> dict:
    return {
        "name": f"overfit-{detector}",
        "seed": 0,
        "device": "cpu",
        "data": {
            "type": "synthetic",
            "synthetic": {
                "num_train": 4,
                "num_val": 1,
                "image_size": 96,
                "min_object_size": 16,
                "max_object_size": 64,
                "max_objects": 3,
                "seed": 3,
                "cache_dir": str(tmp_path / "cache"),
            },
        },
        # No augmentation: the point is to memorise these images.
        "input": {"mode": "square", "size": 96, "scale_range": [1.0, 1.0], "flip_prob": 0.0},
        "model": {
            "type": detector,
            "backbone": {"depth": 10, "frozen_stages": -1, "norm_eval": False},
            "neck": {"out_channels": 64},
            **HEADS[detector],
        },
        "train": {
            "epochs": EPOCHS[detector],
            "batch_size": 4,
            "optimizer": {"type": "adamw", "lr": 2e-3, "weight_decay": 0.0},
            "schedule": {"type": "cosine", "warmup_iters": 10},
            "tensorboard": False,
        },
    }


@pytest.mark.slow
@pytest.mark.parametrize("detector", ["retinanet", "fcos"])
def test_detector_overfits_a_handful_of_images(detector, tmp_path):
    cfg = validate_config(overfit_config(detector, tmp_path))
    train_set = build_dataset(cfg, "train", train=True)
    # The same four images, through the evaluation pipeline (no augmentation, COCO ground truth).
    eval_set = build_dataset(cfg, "train", train=False)
    assert len(train_set) == len(eval_set) == 4
    model = build_detector(cfg.model, num_classes=len(train_set.cat_ids), seed=cfg.seed)
    result = Trainer(
        model,
        train_set,
        cfg.train,
        device=torch.device("cpu"),
        seed=cfg.seed,
        progress=False,
        log=_quiet,
    ).fit()
    assert result.status == "ok"
    assert result.loss_history[-1] < 0.25 * result.loss_history[0]
    metrics = evaluate_detector(model, eval_set, batch_size=4)
    assert metrics["AP"] >= 0.5, metrics


def _quiet(*args, **kwargs) -> None:
    pass
