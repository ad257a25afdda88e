"""Full-training recipes of the papers, for the configs `nassearch export` writes.

Each equals the matching shipped config under experiments/retrain/ without its data and genotype
(tests/test_export.py checks that they agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RECIPE_CHOICES = ("paper", "search")


@dataclass(frozen=True)
class Recipe:
    """A paper's full-training recipe: the config sections `nassearch train` needs besides data."""

    detector: str  # model.type it applies to
    space: str  # the search space whose paper it comes from
    summary: str  # one line for the retrain YAML's header
    weights: str  # the backbone weights it expects
    sections: dict[str, Any]  # input, model (without genotype), train, eval


# experiments/retrain/retinanet_r50_nasfpn_7x256.yaml without its data and genotype (a test
# checks that they agree): NAS-FPN paper, Sec. 4 and Google's TPU config.
NASFPN_RECIPE = Recipe(
    detector="retinanet",
    space="nasfpn",
    summary=(
        "RetinaNet R-50 + NAS-FPN (7 stacks x 256), 640x640 crops with 0.8-1.2 scale jitter, "
        "SGD lr 0.08 at 64 images per step, 50 epochs with x0.1 at 30 and 40, focal gamma 1.5"
    ),
    weights="/path/to/resnet50.pth (torchvision ImageNet state dict)",
    sections={
        "input": {
            "mode": "square",
            "size": 640,
            "scale_range": [0.8, 1.2],
            "flip_prob": 0.5,
            "normalize": "imagenet",
            "size_divisor": 128,
        },
        "model": {
            "type": "retinanet",
            "backbone": {
                "depth": 50,
                "weights": None,
                "frozen_stages": 1,
                "norm_eval": False,
                "style": "pytorch",
            },
            "neck": {"type": "nasfpn", "out_channels": 256, "stacks": 7, "style": "tensorflow"},
            "num_convs": 4,
            "feat_channels": 256,
            "head_norm": "bn",
            "separate_norm_per_level": True,
            "octave_base_scale": 4,
            "scales_per_octave": 3,
            "ratios": [0.5, 1.0, 2.0],
            "pos_iou_thr": 0.5,
            "neg_iou_thr": 0.5,
            "min_pos_iou": 0.0,
            "focal_alpha": 0.25,
            "focal_gamma": 1.5,
            "box_loss": "smooth_l1",
            "smooth_l1_beta": 0.1,
            "score_thresh": 0.05,
            "nms_thresh": 0.5,
            "topk_candidates": 1000,
            "detections_per_img": 100,
        },
        "train": {
            "epochs": 50,
            "batch_size": 64,
            "optimizer": {
                "type": "sgd",
                "lr": 0.08,
                "momentum": 0.9,
                "weight_decay": 0.0001,
                "no_decay_norm_bias": True,
            },
            "schedule": {
                "type": "step",
                "milestones": [30, 40],
                "gamma": 0.1,
                "warmup_iters": 1000,
                "warmup_ratio": 0.1,
            },
            "eval_interval": 5,
            "save_best": "AP",
            # 50 epochs of model + SGD state: keep every 5th (last.pth is always current).
            "checkpoint_interval": 5,
            "num_workers": 8,
        },
        "eval": {"batch_size": 8},
    },
)

# experiments/retrain/fcos_r50_nasfcos.yaml without its data and genotype (a test checks it).
NASFCOS_RECIPE = Recipe(
    detector="fcos",
    space="nasfcos",
    summary=(
        "FCOS R-50 (caffe, frozen BN) + NAS-FCOS, shorter side 800, SGD lr 0.01 at 16 images "
        "per step, 1x schedule (12 epochs, x0.1 at 8 and 11)"
    ),
    weights="/path/to/resnet50_caffe.pth (caffe-style weights with torchvision key names)",
    sections={
        "input": {
            "mode": "resize",
            "short_side": 800,
            "max_size": 1333,
            "flip_prob": 0.5,
            "normalize": "caffe",
            "size_divisor": 32,
        },
        "model": {
            "type": "fcos",
            "backbone": {
                "depth": 50,
                "weights": None,
                "frozen_stages": 1,
                "norm_eval": True,
                "freeze_norm": True,
                "style": "caffe",
            },
            "neck": {"type": "nasfcos", "out_channels": 256, "upsample": "bilinear"},
            "centerness_on": "cls",
            "regress_ranges": [[-1, 64], [64, 128], [128, 256], [256, 512], [512, 100000000]],
            "center_sampling": False,
            "focal_alpha": 0.25,
            "focal_gamma": 2.0,
            "box_loss": "log",
            "score_thresh": 0.05,
            "nms_thresh": 0.6,
            "topk_candidates": 1000,
            "detections_per_img": 100,
        },
        "train": {
            "epochs": 12,
            "batch_size": 16,
            "optimizer": {
                "type": "sgd",
                "lr": 0.01,
                "momentum": 0.9,
                "weight_decay": 0.0001,
                "bias_lr_mult": 2.0,
            },
            "schedule": {
                "type": "step",
                "milestones": [8, 11],
                "gamma": 0.1,
                "warmup_iters": 500,
                "warmup_ratio": 0.333,
            },
            "eval_interval": 1,
            "save_best": "AP",
            "num_workers": 4,
        },
        "eval": {"batch_size": 8},
    },
)

PAPER_RECIPES = {recipe.detector: recipe for recipe in (NASFPN_RECIPE, NASFCOS_RECIPE)}
