"""Model cost: parameter counts and multiply-adds per part (backbone, neck, head), for `nassearch summary`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

PARTS = ("backbone", "neck", "head")


@dataclass(frozen=True)
class Complexity:
    """Parameters and multiply-adds (MACs) of a detector, in total and per part, at one input size."""

    input_size: tuple[int, int]
    params: dict[str, int]
    macs: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)


class _RawForward(nn.Module):
    """Backbone -> neck -> head only: decoding and NMS are not part of a detector's cost."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor):
        return self.detector.head_outputs(self.detector.backbone(images))


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts for the whole detector and for each of its parts (trainable or not)."""
    counts = {"total": sum(p.numel() for p in model.parameters())}
    for part in PARTS:
        module = getattr(model, part, None)
        counts[part] = sum(p.numel() for p in module.parameters()) if module is not None else 0
    return counts


@torch.no_grad()
def count_macs(
    model: nn.Module, input_size: tuple[int, int], batch_size: int = 1
) -> dict[str, int]:
    """Multiply-adds of one forward pass (per image), counted by torch.utils.flop_counter.

    FlopCounterMode counts a multiply-add as two FLOPs; papers' "FLOPs" tables (NAS-FPN, NAS-FCOS)
    report multiply-adds, so the counts are halved.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    images = torch.zeros(batch_size, 3, *input_size, device=device)
    try:
        with FlopCounterMode(display=False, depth=None) as counter:
            _RawForward(model)(images)
    finally:
        model.train(was_training)
    flops = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    macs = {"total": flops.get("Global", 0) // (2 * batch_size)}
    for part in PARTS:
        macs[part] = flops.get(f"_RawForward.detector.{part}", 0) // (2 * batch_size)
    return macs


def measure_complexity(model: nn.Module, input_size: tuple[int, int]) -> Complexity:
    return Complexity(tuple(input_size), count_parameters(model), count_macs(model, input_size))
