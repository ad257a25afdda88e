"""How a training or a proxy evaluation ended: one vocabulary for the trainer, proxy results,
re-scores and records (a `str` enum, so records keep plain strings and compare either way)."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    OK = "ok"
    NAN = "nan"  # a non-finite loss stopped training
    TIMEOUT = "timeout"  # proxy.time_limit_s reached
    INTERRUPTED = "interrupted"  # a stop signal; last.pth holds the step
    OOM = "oom"
    ERROR = "error"  # any other exception, or the trial's process died
    STOPPED = "stopped"  # cut at a rung by the early-stopping scheduler (search.scheduler: asha)
