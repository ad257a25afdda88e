"""StopOnSignal: the first SIGTERM/SIGINT only raises a flag; the second acts as usual."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from nassearch.stop_signal import StopOnSignal


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_raises_the_flag_and_restores_the_handlers(sig):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    lines = []
    with StopOnSignal(lines.append) as stop:
        assert not stop()
        assert signal.getsignal(sig) == stop._handle
        os.kill(os.getpid(), sig)  # delivered to the main thread before kill() returns
        assert stop() and stop.received == sig.name
        assert lines == [
            f"{sig.name}: stopping after this step with a checkpoint (send it again to stop at once)"
        ]
        # A second signal would meet the handlers the process had before.
        assert {s: signal.getsignal(s) for s in before} == before
    assert {s: signal.getsignal(s) for s in before} == before


def test_no_signal_leaves_handlers_as_they_were():
    before = signal.getsignal(signal.SIGTERM)
    with StopOnSignal(print) as stop:
        assert signal.getsignal(signal.SIGTERM) != before
    assert signal.getsignal(signal.SIGTERM) == before and not stop()


def test_outside_the_main_thread_it_installs_nothing():
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def run():
        with StopOnSignal(print) as stop:
            seen.append((signal.getsignal(signal.SIGTERM), stop()))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [(before, False)]
