"""Tiny search configs shared by the search tests (tests/ is on sys.path under pytest)."""

from __future__ import annotations

import yaml


def search_config(tmp_path, **search) -> dict:
    """`train_config`'s tiny detector as a 3-architecture NAS-FPN search with the FPN baseline,
    two 1-CPU trials at a time (the test Ray session's 2 CPUs: a trial's start-up, not its
    training, is most of its time, so two overlap well)."""
    cfg = train_config(tmp_path, name="tiny-search", num_train=12)
    del cfg["train"]["log_interval"]
    cfg["proxy"] = {"reward_holdout": 4}
    cfg["search"] = {
        "space": "nasfpn",
        "controller": "reinforce",
        "controller_options": {"batch_size": 2},
        "num_architectures": 3,
        "max_concurrent": 2,
        "baselines": ["FPN"],
        **search,
    }
    return cfg


def write(tmp_path, cfg) -> str:
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def train_config(
    tmp_path,
    *,
    name: str = "tiny-train",
    seed: int = 0,
    num_train: int = 8,
    input: dict | None = None,
    model: dict | None = None,
    train: dict | None = None,
) -> dict:
    """A tiny `nassearch train` config on the embedded synthetic data (64 px squares, ResNet-10,
    16 channels); `input`, `model` and `train` update those sections."""
    cfg = {
        "name": name,
        "seed": seed,
        "device": "cpu",
        "output_dir": str(tmp_path / "runs"),
        "data": {
            "type": "synthetic",
            "synthetic": {
                "num_train": num_train,
                "num_val": 2,
                "image_size": 64,
                "max_object_size": 48,
                "cache_dir": str(tmp_path / "cache"),
            },
        },
        "input": {"mode": "square", "size": 64, "size_divisor": 64, **(input or {})},
        "model": {
            "backbone": {"depth": 10, "frozen_stages": -1, "norm_eval": False},
            "neck": {"out_channels": 16},
            "num_convs": 1,
            "feat_channels": 16,
            **(model or {}),
        },
        "train": {
            "epochs": 1,
            "batch_size": 4,
            "tensorboard": False,
            "log_interval": 1,
            **(train or {}),
        },
    }
    return cfg
