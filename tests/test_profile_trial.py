"""scripts/profile_trial.py: the in-process step and reward profile of one sampled architecture."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from nassearch.config import validate_config

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "profile_trial.py"


@pytest.fixture(scope="module")
def profile_trial():
    spec = importlib.util.spec_from_file_location("profile_trial", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_config(tmp_path) -> dict:
    return {
        "name": "tiny-profile",
        "data": {
            "type": "synthetic",
            "synthetic": {"num_train": 14, "num_val": 2, "image_size": 64, "max_object_size": 40},
            "root": str(tmp_path / "data"),
        },
        "input": {"mode": "square", "size": 64, "size_divisor": 32},
        "model": {
            "type": "retinanet",
            "backbone": {"depth": 10, "weights": None, "frozen_stages": 4, "norm_eval": True},
            "neck": {"out_channels": 16},
            "num_convs": 1,
            "feat_channels": 16,
        },
        "train": {"epochs": 1, "batch_size": 4, "tensorboard": False},
        "eval": {"batch_size": 4},
        "proxy": {"reward_holdout": 4},
        "search": {"space": "nasfpn", "space_options": {"num_cells": 5}},
    }


def test_step_profile_parts_add_up(profile_trial, tmp_path, capsys):
    cfg = validate_config(tiny_config(tmp_path))
    step = profile_trial.profile_step(cfg, seed=0, steps=3, warmup=1)
    for name in ("neck_forward_ms", "head_forward_ms", "loss_ms", "step_ms", "optimizer_ms"):
        assert step[name] > 0, name
    forward = sum(
        step[k] for k in ("backbone_forward_ms", "neck_forward_ms", "head_forward_ms", "loss_ms")
    )
    assert step["backward_ms"] == pytest.approx(step["step_ms"] - forward - step["optimizer_ms"])
    # The neck's share: the full step against the step on detached neck outputs.
    share = 1 - step["step_without_neck_ms"] / step["step_ms"]
    assert step["neck_share"] == pytest.approx(share) and -1 < share < 1
    assert step["reward_images"] == 4 and step["reward_detections"] >= 0
    decode = step["reward_predict_s"] - step["reward_inference_s"]
    assert step["reward_decode_nms_s"] == pytest.approx(decode)
    assert all(math.isfinite(v) for v in step.values() if isinstance(v, float))
    profile_trial.print_tables(None, step)
    out = capsys.readouterr().out
    assert step["genotype_key"] in out and "neck_share" in out
