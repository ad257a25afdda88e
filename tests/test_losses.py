"""Losses against their formulas evaluated by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nassearch.detectors import losses as L
from nassearch.errors import NasSearchError


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 1.5), (0.9, 0.0)])
def test_focal_loss_matches_formula(alpha, gamma):
    logits = [-3.0, -0.5, 0.0, 0.7, 2.5]
    targets = [0.0, 1.0, 1.0, 0.0, 1.0]
    expected = []
    for x, t in zip(logits, targets, strict=True):
        p = _sigmoid(x)
        p_t = p if t == 1 else 1 - p
        alpha_t = alpha if t == 1 else 1 - alpha
        expected.append(-alpha_t * (1 - p_t) ** gamma * math.log(p_t))
    lt, tt = torch.tensor(logits, dtype=torch.float64), torch.tensor(targets, dtype=torch.float64)
    got = L.sigmoid_focal_loss(lt, tt, alpha, gamma, reduction="none")
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    assert L.sigmoid_focal_loss(lt, tt, alpha, gamma).item() == pytest.approx(sum(expected))
    assert L.sigmoid_focal_loss(lt, tt, alpha, gamma, reduction="mean").item() == pytest.approx(
        sum(expected) / 5
    )


def test_focal_loss_without_alpha_and_gamma_is_bce():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 7, generator=gen, dtype=torch.float64) * 3
    targets = torch.rand(6, 7, generator=gen, dtype=torch.float64)  # soft targets
    got = L.sigmoid_focal_loss(logits, targets, alpha=-1, gamma=0.0, reduction="none")
    torch.testing.assert_close(
        got, F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    )
    # gamma down-weights easy examples: a confident correct prediction costs far less than BCE.
    easy = L.sigmoid_focal_loss(torch.tensor([4.0]), torch.tensor([1.0]), alpha=-1, gamma=2.0)
    bce = F.binary_cross_entropy_with_logits(torch.tensor([4.0]), torch.tensor([1.0]))
    assert easy.item() == pytest.approx(bce.item() * (1 - _sigmoid(4.0)) ** 2, rel=1e-5)


def test_smooth_l1_and_l1():
    pred = torch.tensor([0.0, 0.05, -0.3, 2.0])
    target = torch.tensor([0.0, 0.0, 0.0, 0.5])
    beta = 0.1
    expected = [0.0, 0.5 * 0.05**2 / beta, 0.3 - 0.5 * beta, 1.5 - 0.5 * beta]
    got = L.smooth_l1_loss(pred, target, beta=beta, reduction="none")
    torch.testing.assert_close(got, torch.tensor(expected))
    assert L.smooth_l1_loss(pred, target, beta=beta).item() == pytest.approx(sum(expected))
    assert L.l1_loss(pred, target).item() == pytest.approx(0.05 + 0.3 + 1.5)
    torch.testing.assert_close(
        L.smooth_l1_loss(pred, target, beta=0.0, reduction="none"), (pred - target).abs()
    )
    # Continuity at |d| = beta (the two branches meet).
    at = L.smooth_l1_loss(torch.tensor([beta]), torch.tensor([0.0]), beta=beta)
    assert at.item() == pytest.approx(0.5 * beta)


def test_iou_losses_on_hand_made_boxes():
    pred = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 2.0, 2.0]])
    target = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [4.0, 0.0, 6.0, 2.0]])
    # Pair 2: inter 50, union 150 -> IoU 1/3, hull = union -> GIoU 1/3.
    # Pair 3: disjoint, IoU 0, hull 6x2 = 12, union 8 -> GIoU = -(12-8)/12 = -1/3.
    iou = [1.0, 1 / 3, 0.0]
    giou = [1.0, 1 / 3, -1 / 3]
    eps = 1e-6
    log = L.iou_loss(pred, target, mode="log", reduction="none", eps=eps)
    torch.testing.assert_close(log, torch.tensor([-math.log(max(v, eps)) for v in iou]))
    lin = L.iou_loss(pred, target, mode="linear", reduction="none")
    torch.testing.assert_close(lin, torch.tensor([1 - v for v in iou]))
    g = L.iou_loss(pred, target, mode="giou", reduction="none")
    torch.testing.assert_close(g, torch.tensor([1 - v for v in giou]))
    torch.testing.assert_close(L.giou_loss(pred, target, reduction="none"), g)
    weight = torch.tensor([0.5, 2.0, 1.0])
    weighted = L.giou_loss(pred, target, weight=weight)
    assert weighted.item() == pytest.approx(
        sum(w * (1 - v) for w, v in zip([0.5, 2, 1], giou, strict=True))
    )
    mean = L.iou_loss(pred, target, mode="linear", reduction="mean")
    assert mean.item() == pytest.approx(sum(1 - v for v in iou) / 3)


def test_bad_reduction_and_mode_are_user_errors():
    x = torch.zeros(2, 4)
    with pytest.raises(NasSearchError, match="reduction"):
        L.l1_loss(x, x, reduction="avg")
    with pytest.raises(NasSearchError, match="mode"):
        L.iou_loss(x, x, mode="diou")


def test_losses_backpropagate_finite_gradients():
    pred = torch.tensor([[0.0, 0.0, 4.0, 4.0], [10.0, 10.0, 12.0, 13.0]], requires_grad=True)
    target = torch.tensor([[1.0, 1.0, 5.0, 5.0], [0.0, 0.0, 2.0, 2.0]])
    for mode in ("log", "linear", "giou"):
        pred.grad = None
        L.iou_loss(pred, target, mode=mode).backward()
        assert torch.isfinite(pred.grad).all()
    # GIoU gives a gradient even for disjoint boxes (IoU losses do not).
    pred.grad = None
    L.giou_loss(pred[1:], target[1:]).backward()
    assert pred.grad[1].abs().sum() > 0
