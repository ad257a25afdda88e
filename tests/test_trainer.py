"""Trainer: exact resume, NaN stop, lr schedules vs closed forms, param groups, checkpoint errors."""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nassearch.config import OptimizerConfig, ScheduleConfig, TrainConfig
from nassearch.engine import checkpoint as ckpt_io
from nassearch.engine.checkpoint import load_checkpoint, load_model_weights
from nassearch.engine.optim import (
    build_optimizer,
    build_scheduler,
    param_groups,
    total_iterations,
)
from nassearch.engine.trainer import Trainer
from nassearch.errors import NasSearchError

CPU = torch.device("cpu")


class TinyDetector(nn.Module):
    """Honours the detector contract: predicts one box + class logits per image from pooled features."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.neck = nn.Dropout(0.3)  # consumes the global torch RNG: resume must restore it
        self.head = nn.Linear(8, 4 + num_classes)

    def forward(self, images, targets=None):
        return self.forward_features(self.backbone(images), images.shape[-2:], targets)

    def forward_features(self, feats, image_shape, targets=None):
        outputs = self.head_outputs(feats)
        if self.training:
            return self.loss(outputs, targets, image_shape)
        return self.postprocess(outputs, image_shape, targets)

    def head_outputs(self, feats):
        return (self.head(self.neck(feats)),)

    def loss(self, outputs, targets, image_shape):
        (out,) = outputs
        h, w = image_shape
        boxes = out[:, :4].sigmoid() * out.new_tensor([w, h, w, h])
        box_terms, labels = [], []
        for i, t in enumerate(targets):
            if len(t["boxes"]) == 0:
                box_terms.append(out[i, :4].sum() * 0)
                labels.append(0)
            else:
                box_terms.append((boxes[i] - t["boxes"][0]).abs().mean() / 16)
                labels.append(int(t["labels"][0]))
        loss_cls = F.cross_entropy(out[:, 4:], torch.tensor(labels, device=out.device))
        return {"loss_cls": loss_cls, "loss_box": torch.stack(box_terms).mean()}

    def postprocess(self, outputs, image_shape, targets=None):
        (out,) = outputs
        h, w = image_shape
        boxes = out[:, :4].sigmoid() * out.new_tensor([w, h, w, h])
        return [
            {
                "boxes": b[None],
                "scores": o[4:].softmax(0).max()[None],
                "labels": o[4:].argmax()[None],
            }
            for b, o in zip(boxes, out, strict=True)
        ]


class NaNDetector(TinyDetector):
    """Returns a NaN loss on its `nan_at`-th training call (1-based)."""

    def __init__(self, nan_at: int, value: float = float("nan")) -> None:
        super().__init__()
        self.nan_at, self.value, self.calls = nan_at, value, 0

    def loss(self, outputs, targets, image_shape):
        self.calls += 1
        losses = super().loss(outputs, targets, image_shape)
        if self.calls == self.nan_at:
            losses["loss_box"] = losses["loss_box"] * self.value
        return losses


class TinyDataset(torch.utils.data.Dataset):
    """In-memory samples of varied sizes; set_epoch switches a per-(epoch, index) seeded horizontal flip."""

    def __init__(self, n: int = 7) -> None:
        g = torch.Generator().manual_seed(1234)
        self.items = []
        for i in range(n):
            h, w = 20 + 3 * i, 28 - 2 * i
            image = torch.randn(3, h, w, generator=g)
            x0, y0 = float(i % 5), float(i % 3)
            boxes = torch.tensor([[x0, y0, x0 + 9.0, y0 + 11.0]]) if i != 3 else torch.zeros(0, 4)
            labels = torch.tensor([i % 3]) if i != 3 else torch.zeros(0, dtype=torch.int64)
            self.items.append((image, {"boxes": boxes, "labels": labels, "image_id": i}))
        self.epoch = 0
        self.epochs_seen: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epochs_seen.append(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        image, target = self.items[i]
        flip = (
            torch.rand(1, generator=torch.Generator().manual_seed(self.epoch * 1000 + i)).item()
            < 0.5
        )
        if not flip:
            return image, dict(target)
        w = image.shape[-1]
        boxes = target["boxes"].clone()
        boxes[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
        return image.flip(-1), {**target, "boxes": boxes}


def make_cfg(**overrides) -> TrainConfig:
    base = {
        "epochs": 4,
        "batch_size": 2,
        "optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3},
        "schedule": {"type": "cosine", "warmup_iters": 3, "warmup_ratio": 0.1},
        "log_interval": 3,
        "tensorboard": False,
    }
    base.update(overrides)
    return TrainConfig(**base)


def make_trainer(tmp_path, cfg, *, model_seed=0, model=None, **kwargs) -> Trainer:
    torch.manual_seed(model_seed)
    model = model if model is not None else TinyDetector()
    kwargs.setdefault("log", None)
    kwargs.setdefault("progress", False)
    return Trainer(
        model, kwargs.pop("dataset", TinyDataset()), cfg, device=CPU, work_dir=tmp_path, **kwargs
    )


class Interrupt(Exception):
    pass


def interrupt_after(epoch_to_stop: int):
    def callback(epoch, info):
        if epoch == epoch_to_stop:
            raise Interrupt

    return callback


# ----------------------------------------------------------------------------- resume


def test_resume_matches_uninterrupted_run(tmp_path):
    cfg = make_cfg(
        optimizer={"type": "sgd", "lr": 0.05, "no_decay_norm_bias": True, "bias_lr_mult": 2.0}
    )
    straight = make_trainer(tmp_path / "a", cfg)
    full = straight.fit()
    assert full.status == "ok"
    assert full.iterations == 16 and len(full.loss_history) == 16 and full.epochs_completed == 4

    first = make_trainer(tmp_path / "b", cfg, on_epoch_end=interrupt_after(2))
    with pytest.raises(Interrupt):
        first.fit()
    assert first.model.training  # stopped mid-run

    # A differently initialised model and a disturbed global RNG: resume must restore both.
    torch.manual_seed(999)
    second = make_trainer(tmp_path / "b", cfg, model_seed=77)
    resumed = second.fit(resume=True)
    assert resumed.status == "ok"
    assert resumed.iterations == 16 and resumed.epochs_completed == 4
    assert (
        resumed.loss_history == full.loss_history
    )  # exact equality, including the first 8 restored
    assert resumed.loss_history[8:] == full.loss_history[8:]
    assert resumed.last_losses == full.last_losses
    for (name, a), b in zip(
        straight.model.state_dict().items(), second.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_resume_mid_epoch_continues_from_exact_batch(tmp_path):
    # Constant schedule: stopping at max_iters=5 and resuming to 11 is the same run as going to 11 directly.
    schedule = {"type": "constant"}
    full = make_trainer(tmp_path / "a", make_cfg(schedule=schedule, max_iters=11, epochs=10)).fit()
    assert full.iterations == 11

    part = make_trainer(tmp_path / "b", make_cfg(schedule=schedule, max_iters=5, epochs=10)).fit()
    assert (
        part.iterations == 5 and part.epochs_completed == 2
    )  # 4 iters/epoch: epoch 2 cut after 1 batch
    assert part.loss_history == full.loss_history[:5]
    resumed = make_trainer(
        tmp_path / "b", make_cfg(schedule=schedule, max_iters=11, epochs=10), model_seed=5
    )
    saved = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pth")["seconds"]
    result = resumed.fit(resume=True)
    assert result.loss_history == full.loss_history
    # Seconds count both invocations: the saved part's plus the resumed part's.
    assert 0 < saved <= part.seconds and result.seconds > saved


@pytest.mark.parametrize(("stop_at", "saved_at"), [(5, 5), (4, 4)])
def test_stop_request_checkpoints_the_step_and_resume_continues_exactly(
    tmp_path, stop_at, saved_at
):
    # 4 iterations per epoch: a stop at step 5 is mid-epoch; at step 4 it waits for epoch 1's end
    # (its evaluation and epoch checkpoint), then stops.
    cfg = make_cfg(eval_interval=1)
    full = make_trainer(tmp_path / "full", cfg).fit()
    steps, evaluated = [], []

    def stop_requested():
        steps.append(None)
        return len(steps) >= stop_at

    def evaluator(model, epoch):
        evaluated.append(epoch)
        return {"AP": 0.1}

    work = tmp_path / "stopped"
    part = make_trainer(work, cfg, stop_requested=stop_requested, evaluator=evaluator).fit()
    assert part.status == "interrupted" and f"at iteration {saved_at} of 16" in part.message
    assert part.iterations == saved_at and part.loss_history == full.loss_history[:saved_at]
    ckpt = load_checkpoint(work / "checkpoints" / "last.pth")
    assert ckpt["iteration"] == saved_at and ckpt["epoch"] == 1
    assert evaluated == [1] and (work / "checkpoints" / "epoch_1.pth").is_file()
    resumed = make_trainer(work, cfg, model_seed=9, evaluator=evaluator).fit(resume=True)
    assert resumed.status == "ok" and resumed.loss_history == full.loss_history
    assert evaluated == [1, 2, 3, 4]


def test_resume_finished_run_returns_stored_result(tmp_path):
    cfg = make_cfg(epochs=1)
    seen = []
    first = make_trainer(tmp_path, cfg, evaluator=lambda m, e: {"AP": 0.25}).fit()
    again = make_trainer(tmp_path, cfg, evaluator=lambda m, e: seen.append(e) or {"AP": 0.5}).fit(
        resume=True
    )
    assert seen == []  # nothing left to train or evaluate
    assert again.loss_history == first.loss_history and again.metrics == {"AP": 0.25}


def test_resume_without_checkpoint_is_one_line_error(tmp_path):
    with pytest.raises(NasSearchError, match="last.pth: file not found") as info:
        make_trainer(tmp_path, make_cfg()).fit(resume=True)
    assert "\n" not in str(info.value)


def test_data_order_reproducible_and_varies_by_epoch(tmp_path):
    dataset = TinyDataset()
    trainer = make_trainer(tmp_path, make_cfg(), dataset=dataset)
    orders = [
        [int(t["image_id"]) for _, ts in trainer._make_loader(e) for t in ts] for e in range(3)
    ]
    again = [
        [int(t["image_id"]) for _, ts in trainer._make_loader(e) for t in ts] for e in range(3)
    ]
    assert orders == again
    assert all(sorted(o) == list(range(7)) for o in orders)  # drop_last=False: every sample once
    assert orders[0] != orders[1] or orders[1] != orders[2]
    # Starting at batch 2 skips exactly the first two batches of that epoch's order.
    tail = [int(t["image_id"]) for _, ts in trainer._make_loader(1, start_batch=2) for t in ts]
    assert tail == orders[1][4:]


# ----------------------------------------------------------------------------- length, callbacks, files


def test_fractional_epochs_stop_mid_epoch_and_checkpoint_naming(tmp_path):
    cfg = make_cfg(epochs=2.5, checkpoint_interval=2)
    dataset = TinyDataset()
    result = make_trainer(tmp_path, cfg, dataset=dataset).fit()
    assert result.iterations == 10 == len(result.loss_history)  # ceil(2.5 * 4)
    assert result.epochs_completed == 3 and dataset.epochs_seen == [0, 1, 2]
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == [
        "epoch_2.pth",
        "epoch_3.pth",
        "last.pth",
    ]  # every 2nd epoch, and the final partial one
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pth")
    assert ckpt["iteration"] == 10 and ckpt["epoch"] == 3
    assert load_checkpoint(tmp_path / "checkpoints" / "epoch_2.pth")["iteration"] == 8
    assert TrainConfig.model_validate_json(ckpt["config"]) == cfg


def test_last_checkpoint_follows_every_epoch_between_kept_ones(tmp_path):
    def stop_after_first(epoch, info):
        raise Interrupt

    cfg = make_cfg(epochs=3, checkpoint_interval=2)
    with pytest.raises(Interrupt):
        make_trainer(tmp_path, cfg, on_epoch_end=stop_after_first).fit()
    # Epoch 1 is not a kept one, but a crash after it loses nothing: last.pth holds it.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.pth"]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pth")["iteration"] == 4


@pytest.mark.parametrize("every_s", [0.0, 3600.0])
def test_checkpoint_every_s_spaces_last_checkpoint_writes(tmp_path, every_s):
    """A proxy trainer (no kept epochs) writes last.pth only once `checkpoint_every_s` of training
    passed since the last write, and tells the epoch callback whether it wrote one."""
    seen = []

    def record(epoch, info):
        last = tmp_path / "checkpoints" / "last.pth"
        written = load_checkpoint(last)["epoch"] if last.is_file() else None
        seen.append((info["checkpointed"], written))

    trainer = make_trainer(
        tmp_path,
        make_cfg(epochs=3),
        on_epoch_end=record,
        keep_epoch_checkpoints=False,
        checkpoint_every_s=every_s,
    )
    result = trainer.fit()
    if every_s == 0.0:
        assert seen == [(True, 1), (True, 2), (True, 3)]
    else:
        assert seen == [(False, None)] * 3
    assert result.status == "ok"


def test_total_iterations_cap_and_rounding():
    assert total_iterations(make_cfg(epochs=0.1), 30) == 3
    assert total_iterations(make_cfg(epochs=2), 5) == 10
    assert total_iterations(make_cfg(epochs=2, max_iters=7), 5) == 7
    assert total_iterations(make_cfg(epochs=1, max_iters=70), 5) == 5


def test_evaluator_epoch_callback_metrics_log_and_tensorboard(tmp_path):
    import json

    cfg = make_cfg(epochs=3, eval_interval=2, tensorboard=True, log_interval=2)
    evaluated, infos, lines = [], [], []

    def evaluator(model, epoch):
        evaluated.append(epoch)
        return {"AP": epoch / 10}

    trainer = make_trainer(
        tmp_path,
        cfg,
        evaluator=evaluator,
        on_epoch_end=lambda e, info: infos.append((e, info)),
        log=lines.append,
    )
    result = trainer.fit()
    assert evaluated == [2, 3]
    assert result.metrics == {"AP": 0.3}
    assert [e for e, _ in infos] == [1, 2, 3]
    assert "AP" not in infos[0][1] and infos[1][1]["AP"] == 0.2 and infos[2][1]["AP"] == 0.3
    # The reported lr is the one used by the epoch's last step (cosine with warm-up).
    total, lr0 = 12, 0.05
    for epoch, info in infos:
        it = 4 * epoch - 1
        expected = lr0 * 0.5 * (1 + math.cos(math.pi * it / total))
        assert info["lr"] == pytest.approx(expected, rel=1e-12)
        assert info["iteration"] == 4 * epoch and "loss_cls" in info and "loss_box" in info
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records == [
        {"epoch": 2, "iteration": 8, "AP": 0.2},
        {"epoch": 3, "iteration": 12, "AP": 0.3},
    ]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    train_lines = [x for x in lines if x.startswith("epoch ") and " iter " in x]
    assert len(train_lines) == 6 and "loss_cls=" in train_lines[0] and "it/s" in train_lines[0]


def test_save_best_keeps_the_best_evaluation_across_a_resume(tmp_path):
    scores = {1: 0.2, 2: 0.5, 3: 0.3}
    cfg = make_cfg(epochs=3, eval_interval=1, save_best="AP")

    def stop_after_second(epoch, info):
        if epoch == 2:
            raise Interrupt

    evaluator = lambda m, e: {"AP": scores[e], "AP50": 1.0 - scores[e]}  # noqa: E731
    with pytest.raises(Interrupt):
        make_trainer(tmp_path, cfg, evaluator=evaluator, on_epoch_end=stop_after_second).fit()
    best = tmp_path / "checkpoints" / "best.pth"
    saved = best.read_bytes()
    result = make_trainer(tmp_path, cfg, evaluator=evaluator).fit(resume=True)
    # Epoch 3 scores lower: best.pth still holds epoch 2's weights, known after the resume too.
    assert result.best == {"metric": "AP", "value": 0.5, "epoch": 2}
    assert best.read_bytes() == saved
    epoch_2 = load_checkpoint(tmp_path / "checkpoints" / "epoch_2.pth")["model"]
    fresh = TinyDetector()
    load_model_weights(fresh, best)
    for key, value in epoch_2.items():
        assert torch.equal(fresh.state_dict()[key], value), key
    # The metric counts: best by AP50 is epoch 1.
    other = make_trainer(tmp_path / "ap50", make_cfg(epochs=3, eval_interval=1, save_best="AP50"),
                         evaluator=evaluator).fit()  # fmt: skip
    assert other.best["epoch"] == 1
    plain = make_trainer(tmp_path / "plain", make_cfg(epochs=1), evaluator=evaluator).fit()
    assert plain.best == {} and not (tmp_path / "plain" / "checkpoints" / "best.pth").exists()


def test_metrics_log_and_tensorboard_truncated_on_resume(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = make_cfg(epochs=3, eval_interval=1, checkpoint_interval=2, tensorboard=True)

    def crash_at_3(epoch, info):
        if epoch == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        make_trainer(
            tmp_path, cfg, evaluator=lambda m, e: {"AP": float(e)}, on_epoch_end=crash_at_3
        ).fit()
    # Epoch 3 was the last one, so its checkpoint exists; simulate a crash before it by rolling back.
    ckpt_dir = tmp_path / "checkpoints"
    (ckpt_dir / "last.pth").write_bytes((ckpt_dir / "epoch_2.pth").read_bytes())
    # TensorBoard reads event files in name order, `…tfevents.<second>.<host>.<pid>.<n>`, where n
    # counts the writers of the process: within one second writer 10 sorts before writer 9, and
    # the purge would then come first. A real resume starts seconds later, in a new process.
    time.sleep(1.1)
    make_trainer(tmp_path, cfg, evaluator=lambda m, e: {"AP": float(e)}).fit(resume=True)
    epochs = [line.split(",")[0] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert epochs == ['{"epoch": 1', '{"epoch": 2', '{"epoch": 3']
    # TensorBoard keeps what led to the checkpoint (epoch 2's evaluation at its step, 8) and drops
    # the orphaned epoch 3, which the resumed run writes again: one value per step.
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("metrics/AP")] == [4, 8, 12]
    assert [e.value for e in events.Scalars("metrics/AP")] == [1.0, 2.0, 3.0]
    assert [e.step for e in events.Scalars("train/lr")] == [3, 6, 9, 12]  # log_interval 3


# ----------------------------------------------------------------------------- NaN


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_loss_stops_with_status(tmp_path, value):
    cfg = make_cfg(epochs=3, checkpoint_interval=1)
    trainer = make_trainer(tmp_path, cfg, model=NaNDetector(nan_at=6, value=value))
    result = trainer.fit()
    assert result.status == "nan"
    assert (
        "iteration 6" in result.message
        and "epoch 2" in result.message
        and "loss_box" in result.message
    )
    assert result.iterations == 5 == len(result.loss_history)
    assert all(math.isfinite(v) for v in result.loss_history)
    assert not math.isfinite(result.last_losses["loss"]) and not math.isfinite(
        result.last_losses["loss_box"]
    )
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["epoch_1.pth", "last.pth"]  # nothing written after the NaN
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pth")["iteration"] == 4


# ----------------------------------------------------------------------------- schedules


def run_schedule(schedule: dict, total: int, ipe: int, lr: float = 0.2, bias_lr_mult: float = 1.0):
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, OptimizerConfig(type="sgd", lr=lr, bias_lr_mult=bias_lr_mult))
    sched = build_scheduler(opt, ScheduleConfig(**schedule), total, ipe)
    history = []
    for _ in range(total):
        history.append({g["name"]: g["lr"] for g in opt.param_groups})
        opt.step()
        sched.step()
    return history


def test_warmup_then_step_schedule_closed_form():
    # ipe=4, milestones at epochs 1 and 2.5 -> iterations 4 and 10; warm-up over 6 iterations.
    sched = {
        "type": "step",
        "milestones": [1, 2.5],
        "gamma": 0.1,
        "warmup_iters": 6,
        "warmup_ratio": 0.2,
    }
    lrs = [h["weight"] for h in run_schedule(sched, total=14, ipe=4, lr=0.2)]
    for it, value in enumerate(lrs):
        warm = 0.2 + 0.8 * it / 6 if it < 6 else 1.0
        step = 1.0 if it < 4 else (0.1 if it < 10 else 0.01)
        assert value == pytest.approx(0.2 * warm * step, rel=1e-12), it
    assert lrs[0] == pytest.approx(0.04)
    assert lrs[3] == pytest.approx(0.2 * 0.6)
    assert lrs[5] == pytest.approx(0.2 * 0.1 * (0.2 + 0.8 * 5 / 6))
    assert lrs[9] == pytest.approx(0.02) and lrs[10] == pytest.approx(0.002)


def test_cosine_schedule_closed_form_with_bias_multiplier():
    sched = {"type": "cosine", "min_lr_ratio": 0.05, "warmup_iters": 2, "warmup_ratio": 0.5}
    history = run_schedule(sched, total=20, ipe=5, lr=0.1, bias_lr_mult=2.0)
    for it, h in enumerate(history):
        cos = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * it / 20))
        warm = 0.5 + 0.5 * it / 2 if it < 2 else 1.0
        assert h["weight"] == pytest.approx(0.1 * cos * warm, rel=1e-12), it
        assert h["bias"] == pytest.approx(2 * h["weight"], rel=1e-12)
    assert history[10]["weight"] == pytest.approx(0.1 * (0.05 + 0.95 * 0.5))


def test_constant_schedule():
    lrs = [
        h["weight"] for h in run_schedule({"type": "constant", "warmup_iters": 0}, total=5, ipe=2)
    ]
    assert lrs == [0.2] * 5


# ----------------------------------------------------------------------------- parameter groups


class NormZoo(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.ln = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def ids(params) -> set[int]:
    return {id(p) for p in params}


def test_no_decay_norm_bias_groups():
    m = NormZoo()
    cfg = OptimizerConfig(
        type="sgd", lr=0.1, weight_decay=0.01, no_decay_norm_bias=True, bias_lr_mult=3.0
    )
    groups = {g["name"]: g for g in param_groups(m, cfg)}
    assert set(groups) == {"weight", "weight_no_decay", "bias_no_decay"}
    assert ids(groups["weight"]["params"]) == ids([m.conv.weight, m.fc.weight])
    assert ids(groups["weight_no_decay"]["params"]) == ids([m.bn.weight, m.gn.weight, m.ln.weight])
    biases = [m.conv.bias, m.bn.bias, m.gn.bias, m.ln.bias, m.fc.bias]
    assert ids(groups["bias_no_decay"]["params"]) == ids(biases)
    assert groups["weight"]["weight_decay"] == 0.01
    assert (
        groups["weight_no_decay"]["weight_decay"] == 0.0 == groups["bias_no_decay"]["weight_decay"]
    )
    assert groups["bias_no_decay"]["lr"] == pytest.approx(0.3) and groups["weight"]["lr"] == 0.1
    all_ids = set().union(*(ids(g["params"]) for g in groups.values()))
    assert not all_ids & ids(m.frozen.parameters())


def test_without_no_decay_everything_decays_and_adamw():
    m = NormZoo()
    cfg = OptimizerConfig(type="adamw", lr=1e-3, weight_decay=0.05)
    opt = build_optimizer(m, cfg)
    assert isinstance(opt, torch.optim.AdamW)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"weight", "bias"}
    assert all(g["weight_decay"] == 0.05 for g in groups.values())
    assert ids(groups["weight"]["params"]) == ids(
        [m.conv.weight, m.bn.weight, m.gn.weight, m.ln.weight, m.fc.weight]
    )


# ----------------------------------------------------------------------------- checkpoint I/O


def test_checkpoint_errors_are_one_line_and_name_file_and_key(tmp_path):
    model = TinyDetector()
    missing = tmp_path / "nope.pth"
    with pytest.raises(NasSearchError, match="nope.pth: file not found"):
        load_model_weights(model, missing)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(NasSearchError, match="garbage.pth: cannot read") as info:
        load_model_weights(model, garbage)
    assert "\n" not in str(info.value)

    listing = tmp_path / "list.pth"
    torch.save([1, 2], listing)
    with pytest.raises(NasSearchError, match="list.pth: not a checkpoint"):
        load_checkpoint(listing)

    unsafe = tmp_path / "unsafe.pth"
    torch.save({"x": Interrupt()}, unsafe)  # arbitrary objects are refused by weights_only loading
    with pytest.raises(NasSearchError, match="unsafe.pth: cannot read") as info:
        load_checkpoint(unsafe)
    assert "\n" not in str(info.value)

    state = model.state_dict()
    shaped = tmp_path / "shape.pth"
    torch.save({**state, "head.weight": torch.zeros(5, 8)}, shaped)
    with pytest.raises(NasSearchError) as info:
        load_model_weights(model, shaped)
    msg = str(info.value)
    assert "shape.pth" in msg and "'head.weight'" in msg and "(5, 8)" in msg and "(7, 8)" in msg
    assert "\n" not in msg

    extra = tmp_path / "extra.pth"
    torch.save({**state, "head.extra": torch.zeros(1)}, extra)
    with pytest.raises(NasSearchError, match=r"extra.pth: unexpected key 'head.extra'"):
        load_model_weights(model, extra)

    short = tmp_path / "short.pth"
    torch.save({k: v for k, v in state.items() if k != "head.bias"}, short)
    with pytest.raises(NasSearchError, match=r"short.pth: missing key 'head.bias'"):
        load_model_weights(model, short)
    missing_keys, _ = load_model_weights(model, short, strict=False)
    assert missing_keys == ["head.bias"]


def test_load_model_weights_from_plain_and_trainer_checkpoints(tmp_path):
    trainer = make_trainer(tmp_path, make_cfg(epochs=1))
    trainer.fit()
    for path in [
        tmp_path / "checkpoints" / "last.pth",
        tmp_path / "plain.pth",
        tmp_path / "ddp.pth",
        tmp_path / "reference.pth",
    ]:
        if path.name == "plain.pth":
            torch.save(trainer.model.state_dict(), path)
        if path.name == "reference.pth":  # torchvision's reference scripts, Detectron2
            torch.save({"model": trainer.model.state_dict(), "epoch": 1}, path)
        if path.name == "ddp.pth":
            torch.save({f"module.{k}": v for k, v in trainer.model.state_dict().items()}, path)
        torch.manual_seed(42)
        fresh = TinyDetector()
        load_model_weights(fresh, path)
        for k, v in trainer.model.state_dict().items():
            assert torch.equal(v, fresh.state_dict()[k]), (path.name, k)


def test_atomic_save_keeps_previous_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    ckpt_io.save_checkpoint({"a": torch.ones(2)}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_io.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt_io.save_checkpoint({"a": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]


def test_trainer_without_work_dir_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    trainer = Trainer(
        TinyDetector(), TinyDataset(), make_cfg(epochs=1), device=CPU, log=None, progress=False
    )
    result = trainer.fit()
    assert result.status == "ok" and result.iterations == 4
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(NasSearchError, match="no work_dir"):
        trainer.fit(resume=True)


def test_progress_bar_replaces_plain_lines(tmp_path, capsys):
    lines = []
    result = make_trainer(
        tmp_path, make_cfg(epochs=1, log_interval=1), progress=True, log=lines.append
    ).fit()
    assert result.status == "ok"
    assert not [x for x in lines if " iter " in x]  # the bar shows loss and lr instead
    err = capsys.readouterr().err
    assert "train" in err and "4/4" in err and "loss=" in err


def test_time_limit_stops_with_status_timeout(tmp_path):
    result = make_trainer(tmp_path, make_cfg(epochs=50), time_limit_s=0.0).fit()
    assert result.status == "timeout"
    assert "time limit" in result.message
    # The limit is checked after each step: exactly one step ran.
    assert result.iterations == 1 and len(result.loss_history) == 1


def test_channels_last_on_trains_on_cpu_and_auto_leaves_cpu_contiguous(tmp_path):
    """`channels_last: on` applies on CPU (a 4-D weight is channels_last after set-up) and
    computes the contiguous run's loss; `auto` keeps CPU contiguous."""
    from nassearch.device import use_channels_last

    assert not use_channels_last(CPU, "auto") and use_channels_last(CPU, "on")
    assert not use_channels_last(CPU, "off")
    plain = make_trainer(tmp_path / "a", make_cfg(channels_last="auto"))
    fast = make_trainer(tmp_path / "b", make_cfg(channels_last="on"))
    conv = next(p for p in fast.model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) and conv.shape[1] > 1
    assert not plain.channels_last and fast.channels_last
    torch.manual_seed(5)  # the same dropout draws for both
    a = plain.fit()
    torch.manual_seed(5)
    b = fast.fit()
    assert a.status == b.status == "ok"
    # The first loss comes before any update: equal up to summation order. Later ones drift
    # apart as 16 SGD steps amplify that difference, which is why `auto` stays contiguous on CPU.
    assert b.loss_history[0] == pytest.approx(a.loss_history[0], rel=1e-5)
    assert all(math.isfinite(v) for v in b.loss_history)


def test_fit_reports_seconds_by_phase(tmp_path):
    """The phases of a fit (data, step, checkpoint, evaluation, callback) are timed and, with the
    evaluator and callback below, each one took measurable time within the whole fit."""
    import time as _time

    def slow_callback(epoch, info):
        _time.sleep(0.01)

    def slow_evaluator(model, epoch):
        _time.sleep(0.01)
        return {"AP": 0.0}

    cfg = make_cfg(eval_interval=1)
    result = make_trainer(tmp_path, cfg, on_epoch_end=slow_callback, evaluator=slow_evaluator).fit()
    from nassearch.engine.trainer import TRAIN_PHASES

    assert list(result.timings) == list(TRAIN_PHASES)
    assert all(v > 0 for v in result.timings.values()), result.timings
    assert result.timings["callback"] >= 0.04 and result.timings["evaluation"] >= 0.04
    assert sum(result.timings.values()) <= result.seconds
