"""`ProxyResult`: what one proxy evaluation of an architecture reports (torch-free).

A trial reports it to Tune (`to_report`; Tune's metric is its `reward`), the driver reads it
back (`from_report`) and turns it into an `ArchitectureRecord`. Missing values are NaN here and
null in the record file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from nassearch.status import Status

# Where an architecture's evaluation spends its seconds, in the order they happen. In the trial:
# `start` (from the searcher's suggestion to the trainable running: Ray scheduling, worker start),
# `setup` (config, datasets or feature cache opened); per repeat: `build` (detector), `measure`
# (parameters, MACs, latency), the training loop's `data`, `step` (forward, backward, optimiser),
# `checkpoint`, `evaluation`, `callback` (epoch reports to Tune), then `reward` (inference, decoding,
# NMS, COCOeval on the reward split); in the driver: `record` (final report to record written).
TIMING_PHASES = (
    "start",
    "setup",
    "build",
    "measure",
    "data",
    "step",
    "checkpoint",
    "evaluation",
    "callback",
    "reward",
    "record",
)


@dataclass
class ProxyResult:
    """What a proxy evaluation reports; `reward` is what the controller is told.

    `status` is one of ok, nan, error, oom, timeout; anything but ok carries the failure reward.
    With `proxy.repeats` R > 1 the reward is the mean of R scores under different seeds: `scores`
    holds every one, `reward_std` their sample std (0 for a single score). `metrics` are the
    reward split's COCO metrics (AP, AP50, ..., APl).
    """

    reward: float
    status: Status = Status.OK
    message: str = ""
    genotype_key: str = ""
    ap: float = math.nan
    ap50: float = math.nan
    val_loss: float = math.nan
    params: int = 0
    macs: int = 0  # multiply-adds per image at the proxy input size
    latency_ms: float = math.nan
    train_seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    scores: list[float] = field(default_factory=list)
    reward_std: float = 0.0
    # Seconds by phase of the whole evaluation (summed over repeats), see `TIMING_PHASES`.
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_report(self) -> dict[str, Any]:
        """The mapping a trial gives `tune.report`: the COCO metrics nest under `coco`, so that
        Tune's TensorBoard logger shows them as `coco/AP`, `coco/AP50`, ..."""
        report = self.to_dict()
        report["coco"] = report.pop("metrics")
        return report

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> ProxyResult:
        """Read back `to_report()` from a Tune result (which adds keys of its own, ignored here),
        or a `to_dict()`. A report without a reward (a trial whose process died) is an error."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in report.items() if k in names}
        if "coco" in report:
            values["metrics"] = report["coco"]
        values["reward"] = _float(values.get("reward"))
        values["status"] = Status(values.get("status", Status.ERROR))
        for name in ("ap", "ap50", "val_loss", "latency_ms"):
            if name in values:
                values[name] = _float(values[name])
        for name in ("params", "macs"):
            values[name] = int(values.get(name) or 0)
        values["metrics"] = {k: _float(v) for k, v in (values.get("metrics") or {}).items()}
        values["scores"] = [_float(s) for s in values.get("scores") or []]
        values["reward_std"] = _float(values.get("reward_std"), default=0.0)
        values["train_seconds"] = _float(values.get("train_seconds"), default=0.0)
        values["timings"] = {str(k): _float(v) for k, v in (values.get("timings") or {}).items()}
        values["message"] = str(values.get("message") or "")
        values["genotype_key"] = str(values.get("genotype_key") or "")
        return cls(**values)


def _float(value: Any, default: float = math.nan) -> float:
    if value is None or isinstance(value, bool):
        return default
    return float(value)
