"""Graceful stop of a training run: SIGTERM (a scheduler's preemption, torchrun passing it on) or
Ctrl-C asks the trainer to stop after the current step with a checkpoint to resume from."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopOnSignal:
    """A context manager and a `stop_requested()` callable for `Trainer`.

    The first signal only sets a flag and puts the previous handlers back, so a second one acts as
    usual (SIGTERM ends the process, Ctrl-C raises KeyboardInterrupt). Handlers can only be set
    from the main thread; elsewhere the flag simply never rises.
    """

    def __init__(self, log: Callable[[str], Any] = print) -> None:
        self.log = log
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.received is not None

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name
        self._restore()
        self.log(
            f"{self.received}: stopping after this step with a checkpoint "
            "(send it again to stop at once)"
        )

    def _restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}
