"""evaluate_candidate: a sampled architecture is trained and scored; every failure becomes a status."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from nassearch.config import CostConfig, validate_config
from nassearch.detectors.build import build_detector
from nassearch.detectors.complexity import count_parameters
from nassearch.proxy_eval import proxy_task
from nassearch.proxy_eval.proxy_data import proxy_datasets
from nassearch.proxy_eval.proxy_task import (
    apply_cost,
    evaluate_candidate,
)
from nassearch.proxy_result import ProxyResult
from nassearch.search_spaces.nasfpn import FPN, PAPER

FAILURE = -1.0


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic-cache")


def make_cfg(cache_dir, **proxy):
    return validate_config(
        {
            "seed": 0,
            "device": "cpu",
            "data": {
                "type": "synthetic",
                "synthetic": {
                    "num_train": 20,
                    "num_val": 2,
                    "image_size": 64,
                    "max_object_size": 48,
                    "cache_dir": str(cache_dir),
                },
            },
            "input": {"mode": "square", "size": 64, "size_divisor": 64},
            "model": {
                "type": "retinanet",
                "backbone": {"depth": 10, "frozen_stages": -1, "norm_eval": False},
                "neck": {"type": "nasfpn", "out_channels": 16},
                "genotype": "FPN",
                "num_convs": 1,
                "feat_channels": 16,
            },
            "train": {"epochs": 1, "max_iters": 3, "batch_size": 4, "tensorboard": False},
            "eval": {"batch_size": 4},
            "proxy": {"reward_holdout": 6, "failure_reward": FAILURE, **proxy},
        }
    )


def test_reward_split_is_held_out_of_the_training_images(cache_dir):
    train, reward = proxy_datasets(make_cfg(cache_dir))
    assert len(train) + len(reward) == 20 and len(reward) == 6
    assert not set(train.image_ids) & set(reward.image_ids)


def test_ok_result_reports_ap_and_costs(cache_dir, monkeypatch):
    cfg = make_cfg(cache_dir)
    built = []
    real = proxy_task.build_detector
    monkeypatch.setattr(
        proxy_task,
        "build_detector",
        lambda model_cfg, n, genotype=None, **kw: (
            built.append(genotype) or real(model_cfg, n, genotype, **kw)
        ),
    )
    result = evaluate_candidate(PAPER, cfg)
    assert result.status == "ok", result.message
    assert result.reward == result.ap == result.metrics["AP"]
    assert result.genotype_key == PAPER.key()
    # The trained network is PAPER's, handed to the builder (not written into the config).
    assert built == [PAPER]
    expected = build_detector(cfg.model, 6, PAPER)
    assert result.params == count_parameters(expected)["total"]
    assert result.macs > 0 and result.latency_ms > 0 and result.train_seconds > 0


def test_negative_loss_reward(cache_dir):
    result = evaluate_candidate(FPN, make_cfg(cache_dir, reward="neg_loss"))
    assert result.status == "ok"
    assert math.isfinite(result.val_loss) and result.val_loss > 0
    assert result.reward == -result.val_loss


def test_exception_becomes_error_status(cache_dir, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("cell 3 cannot be built")

    monkeypatch.setattr(proxy_task, "build_detector", broken)
    result = evaluate_candidate(PAPER, make_cfg(cache_dir))
    assert result.status == "error" and result.reward == FAILURE
    assert result.message.startswith("RuntimeError: cell 3 cannot be built (at test_proxy_task.py")
    assert "\n" not in result.message


def test_nan_loss_becomes_nan_status(cache_dir, monkeypatch):
    real = proxy_task.build_detector

    def nan_detector(*args, **kwargs):
        model = real(*args, **kwargs)
        model.loss = lambda outputs, targets, shape: {
            "loss_cls": outputs[0][0].sum() * float("nan")
        }
        return model

    monkeypatch.setattr(proxy_task, "build_detector", nan_detector)
    result = evaluate_candidate(PAPER, make_cfg(cache_dir))
    assert result.status == "nan" and result.reward == FAILURE
    assert "iteration" in result.message


def test_time_limit_becomes_timeout_status(cache_dir):
    cfg = make_cfg(cache_dir, time_limit_s=1e-6)
    result = evaluate_candidate(PAPER, cfg)
    assert result.status == "timeout" and result.reward == FAILURE
    assert "time limit" in result.message


def test_out_of_memory_becomes_oom_status(cache_dir, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(proxy_task, "build_detector", oom)
    result = evaluate_candidate(PAPER, make_cfg(cache_dir))
    assert result.status == "oom" and result.reward == FAILURE


def test_soft_cost_term_scales_the_reward(cache_dir):
    plain = evaluate_candidate(PAPER, make_cfg(cache_dir))
    target = plain.params / 2
    cost = {"metric": "params", "target": target, "weight": -0.5}
    costly = evaluate_candidate(PAPER, make_cfg(cache_dir, cost=cost))
    assert costly.ap == pytest.approx(plain.ap)
    assert costly.reward == pytest.approx(plain.ap * 2**-0.5)


def test_hard_cost_limit_skips_training(cache_dir):
    cfg = make_cfg(cache_dir, cost={"metric": "params", "target": 1000, "hard_limit": True})
    result = evaluate_candidate(PAPER, cfg)
    assert result.reward == FAILURE and "hard limit" in result.message
    assert result.ap != result.ap  # not evaluated (NaN)


def test_apply_cost_penalises_costlier_architectures_for_both_signs():
    cost = CostConfig(metric="params", target=10.0, weight=-0.07)
    assert apply_cost(0.4, cost, 20.0) < 0.4 < apply_cost(0.4, cost, 5.0)
    assert apply_cost(-2.0, cost, 20.0) < -2.0 < apply_cost(-2.0, cost, 5.0)
    assert apply_cost(0.4, None, 20.0) == 0.4


def test_repeats_score_under_different_seeds_and_keep_every_score(cache_dir):
    from nassearch.proxy_eval.proxy_task import evaluate_repeated

    cfg = make_cfg(cache_dir, reward="neg_loss", repeats=3)
    result = evaluate_repeated(FPN, cfg)
    assert result.status == "ok"
    assert len(result.scores) == 3 and len(set(result.scores)) == 3  # three seeds, three scores
    assert result.reward == pytest.approx(sum(result.scores) / 3)
    assert result.reward_std == pytest.approx(statistics.stdev(result.scores))
    # Repeat r is the single evaluation under seed cfg.seed + r.
    second = evaluate_candidate(FPN, cfg, seed=cfg.seed + 1)
    assert second.reward == pytest.approx(result.scores[1], abs=1e-6)
    # A resumed trial passes the repeats it had scored; only the rest are trained.
    calls = []
    resumed = evaluate_repeated(
        FPN,
        cfg,
        done=[second.__class__(**{**second.to_dict(), "reward": 7.0})],
        on_repeat_end=lambda done: calls.append(len(done)),
    )
    assert calls == [2, 3] and resumed.scores[0] == 7.0
    assert resumed.scores[1:] == pytest.approx(result.scores[1:], abs=1e-6)


def test_a_failed_repeat_fails_the_evaluation(cache_dir, monkeypatch):
    from nassearch.proxy_eval.proxy_task import evaluate_repeated

    cfg = make_cfg(cache_dir, repeats=3)
    seeds = []
    real = proxy_task.evaluate_candidate

    def evaluate(genotype, cfg, **kwargs):
        seeds.append(kwargs["seed"])
        if kwargs["seed"] == cfg.seed + 1:
            raise_on = ProxyResult(reward=FAILURE, status="nan", message="loss is nan")
            return raise_on
        return real(genotype, cfg, **kwargs)

    monkeypatch.setattr(proxy_task, "evaluate_candidate", evaluate)
    result = evaluate_repeated(FPN, cfg)
    assert seeds == [0, 1]  # stops at the failed repeat
    assert result.status == "nan" and result.reward == FAILURE and result.scores == []


def test_repeats_must_be_positive(cache_dir):
    from nassearch.errors import NasSearchError

    with pytest.raises(NasSearchError, match=r"proxy\.repeats: .*greater than or equal to 1"):
        make_cfg(cache_dir, repeats=0)
