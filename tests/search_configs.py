"""Tiny search configs shared by the search tests (tests/ is on sys.path under pytest)."""

from __future__ import annotations

import yaml


def search_config(tmp_path, **search) -> dict:
    return {
        "name": "tiny-search",
        "seed": 0,
        "device": "cpu",
        "output_dir": str(tmp_path / "runs"),
        "data": {
            "type": "synthetic",
            "synthetic": {
                "num_train": 12,
                "num_val": 2,
                "image_size": 64,
                "max_object_size": 48,
                "cache_dir": str(tmp_path / "cache"),
            },
        },
        "input": {"mode": "square", "size": 64, "size_divisor": 64},
        "model": {
            "backbone": {"depth": 10, "frozen_stages": -1, "norm_eval": False},
            "neck": {"out_channels": 16},
            "num_convs": 1,
            "feat_channels": 16,
        },
        "train": {"epochs": 1, "batch_size": 4, "tensorboard": False},
        "proxy": {"reward_holdout": 4},
        "search": {
            "space": "nasfpn",
            "controller": "reinforce",
            "controller_options": {"batch_size": 2},
            "num_architectures": 3,
            "baselines": ["FPN"],
            **search,
        },
    }


def write(tmp_path, cfg) -> str:
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)
