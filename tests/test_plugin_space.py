"""A third search space added from outside the package: one description (a registered
SearchSpace with its genotype) and one registered neck module, no edits to nassearch. It then
validates in configs, builds as a detector, trains as a proxy candidate and samples."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nassearch.config import NeckConfig, validate_config
from nassearch.detectors.build import build_detector, model_genotype
from nassearch.detectors.registry import NECKS
from nassearch.errors import NasSearchError
from nassearch.proxy_eval.proxy_data import proxy_datasets
from nassearch.proxy_eval.proxy_task import evaluate_candidate
from nassearch.search_spaces import (
    Decision,
    Genotype,
    SearchSpace,
    genotype_from_dict,
    get_space,
    register_space,
    unregister_space,
)

KERNELS = (1, 3)


@dataclass(frozen=True)
class ToyGenotype(Genotype):
    """Per output level P3..P5, the kernel of its lateral conv."""

    space: ClassVar[str] = "toy"
    kernels: tuple[int, int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"space": "toy", "kernels": list(self.kernels)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToyGenotype:
        kernels = data.get("kernels")
        if not isinstance(kernels, list) or len(kernels) != 3 or set(kernels) - set(KERNELS):
            raise NasSearchError(f"toy genotype: kernels must be 3 of {KERNELS}, got {kernels!r}")
        return cls(tuple(kernels))


class ToySpace(SearchSpace):
    name: ClassVar[str] = "toy"

    @property
    def decisions(self) -> list[Decision]:
        return [Decision(f"P{level}.kernel", "kernel", len(KERNELS)) for level in (3, 4, 5)]

    def mask(self, prefix: Sequence[int]) -> list[bool]:
        return [True] * len(KERNELS)

    def decode(self, actions: Sequence[int]) -> ToyGenotype:
        self.validate_actions(actions)
        return ToyGenotype(tuple(KERNELS[a] for a in actions))

    def encode(self, genotype: Genotype) -> list[int]:
        return [KERNELS.index(k) for k in genotype.kernels]

    def genotype_from_dict(self, data: dict[str, Any]) -> ToyGenotype:
        return ToyGenotype.from_dict(data)

    def size(self) -> int:
        return len(KERNELS) ** 3


SMALL = ToyGenotype((1, 1, 1))  # a named genotype: `model.genotype: SMALL`


class ToyNeck(nn.Module):
    """Lateral convs of the genotype's kernels on C3..C5, P6/P7 by stride-2 max pooling."""

    backbone_indices: ClassVar[tuple[int, ...]] = (2, 3, 4)

    @classmethod
    def from_config(
        cls, cfg: NeckConfig, in_channels: Sequence[int], genotype: Genotype | None, **_: Any
    ) -> ToyNeck:
        return cls(genotype, in_channels, cfg.out_channels)

    def __init__(self, genotype: ToyGenotype, in_channels: Sequence[int], out_channels: int):
        super().__init__()
        self.out_channels = out_channels
        self.lateral = nn.ModuleList(
            nn.Conv2d(c, out_channels, k, padding=k // 2)
            for c, k in zip(in_channels, genotype.kernels, strict=True)
        )

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        outs = [conv(f) for conv, f in zip(self.lateral, feats, strict=True)]
        for _ in range(2):
            outs.append(F.max_pool2d(outs[-1], 2, 2, ceil_mode=True))
        return outs


@pytest.fixture
def toy_space() -> Iterator[None]:
    register_space(ToySpace)
    NECKS.register("toy")(ToyNeck)
    try:
        yield
    finally:
        unregister_space("toy")
        NECKS.unregister("toy")


def toy_config(tmp_path, **model: Any):
    return validate_config(
        {
            "seed": 0,
            "device": "cpu",
            "data": {
                "type": "synthetic",
                "synthetic": {
                    "num_train": 16,
                    "num_val": 2,
                    "image_size": 64,
                    "max_object_size": 48,
                    "cache_dir": str(tmp_path / "data"),
                },
            },
            "input": {"mode": "square", "size": 64, "size_divisor": 64},
            "model": {
                "type": "retinanet",
                "backbone": {"depth": 10, "frozen_stages": -1, "norm_eval": False},
                "neck": {"type": "toy", "out_channels": 16},
                "genotype": "SMALL",
                "num_convs": 1,
                "feat_channels": 16,
                **model,
            },
            "train": {"epochs": 1, "max_iters": 2, "batch_size": 4, "tensorboard": False},
            "eval": {"batch_size": 4},
            "proxy": {"reward_holdout": 4},
            "search": {"space": "toy", "num_architectures": 2},
        }
    )


@pytest.mark.usefixtures("toy_space", "one_thread")
def test_a_registered_space_configures_builds_trains_and_samples(tmp_path) -> None:
    cfg = toy_config(tmp_path)
    assert model_genotype(cfg.model) == SMALL
    assert genotype_from_dict({"space": "toy", "kernels": [3, 1, 3]}) == ToyGenotype((3, 1, 3))

    detector = build_detector(cfg.model, 3, ToyGenotype((3, 3, 1)), seed=0)
    assert [conv.kernel_size for conv in detector.neck.lateral] == [(3, 3), (3, 3), (1, 1)]
    detector.train()
    images = torch.randn(2, 3, 64, 64)
    targets = [
        {"boxes": torch.tensor([[4.0, 4.0, 40.0, 40.0]]), "labels": torch.tensor([1])}
        for _ in range(2)
    ]
    losses = detector(images, targets)
    total = sum(losses.values())
    total.backward()
    assert math.isfinite(total.detach().item())

    space = get_space("toy")
    sampled = {space.sample(np.random.default_rng(s)).key() for s in range(20)}
    assert len(sampled) > 1  # the decisions reach the genotype

    result = evaluate_candidate(ToyGenotype((3, 1, 1)), cfg)
    assert result.status == "ok", result.message
    classes = len(proxy_datasets(cfg)[0].cat_ids)
    trained = build_detector(cfg.model, classes, ToyGenotype((3, 1, 1)))
    assert result.params == sum(p.numel() for p in trained.parameters())


def test_an_unregistered_space_is_refused_by_the_config(tmp_path) -> None:
    with pytest.raises(NasSearchError, match="model.neck.type: must be one of 'fpn'"):
        toy_config(tmp_path)
