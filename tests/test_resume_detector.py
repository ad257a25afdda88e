"""Exact resume with a real detector: an interrupted and resumed run has the uninterrupted run's losses."""

from __future__ import annotations

import pytest
import torch

from nassearch.config import validate_config
from nassearch.data.build import build_dataset
from nassearch.detectors.build import build_detector
from nassearch.engine.trainer import Trainer


class Interrupt(Exception):
    pass


def make(tmp_path, work_dir):
    cfg = validate_config(
        {
            "seed": 1,
            "data": {
                "type": "synthetic",
                "synthetic": {
                    "num_train": 6,
                    "num_val": 1,
                    "image_size": 64,
                    "max_object_size": 48,
                    "cache_dir": str(tmp_path / "cache"),
                },
            },
            # Augmentation on: crops, jitter and flips must replay identically after resume.
            "input": {"mode": "square", "size": 64, "scale_range": [0.7, 1.3], "flip_prob": 0.5},
            "model": {
                "type": "fcos",
                "backbone": {"depth": 10, "frozen_stages": -1, "norm_eval": False},
                "neck": {"out_channels": 32},
                "num_convs": 1,
                "feat_channels": 32,
            },
            "train": {
                "epochs": 3,
                "batch_size": 2,
                "optimizer": {"lr": 0.01},
                "schedule": {"type": "cosine", "warmup_iters": 2},
                "tensorboard": False,
            },
        }
    )
    train_set = build_dataset(cfg, "train", train=True)
    torch.manual_seed(123)
    model = build_detector(cfg.model, num_classes=len(train_set.cat_ids))
    return cfg, model, train_set


def run(tmp_path, name, *, resume=False, stop_after_epoch=None):
    cfg, model, train_set = make(tmp_path, tmp_path / name)

    def on_epoch_end(epoch, info):
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            raise Interrupt

    trainer = Trainer(
        model,
        train_set,
        cfg.train,
        device=torch.device("cpu"),
        seed=cfg.seed,
        work_dir=tmp_path / name,
        on_epoch_end=on_epoch_end,
        progress=False,
        log=lambda *a, **k: None,
    )
    return trainer.fit(resume=resume), model


def test_resumed_detector_training_reproduces_losses(tmp_path):
    straight, straight_model = run(tmp_path, "straight")
    assert straight.status == "ok" and len(straight.loss_history) == 9

    with pytest.raises(Interrupt):
        run(tmp_path, "interrupted", stop_after_epoch=1)
    resumed, resumed_model = run(tmp_path, "interrupted", resume=True)

    assert resumed.loss_history == straight.loss_history
    for (name, a), b in zip(
        straight_model.state_dict().items(), resumed_model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
