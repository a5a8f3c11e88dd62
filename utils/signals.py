"""Stop signals: SIGINT and SIGTERM ask a run to stop at its next safe point."""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path


class StoppedBySignal(Exception):
    """SIGINT or SIGTERM arrived; the run saved `checkpoint` and stopped."""

    def __init__(self, signum: int, checkpoint: Path | None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.checkpoint = signum, checkpoint


class StopSignals:
    """While active, SIGINT and SIGTERM only ask the run to stop at the next safe point (after
    a step, or after an epoch's end); a second one stops at once (KeyboardInterrupt).

    The same signal again within REPEAT_SECONDS is the same request delivered twice, not a
    second one: when SLURM ends a job it sends SIGTERM to every process of the step, and
    torchrun forwards its own to each training process a few milliseconds later; taken as a
    second signal, that stopped runs without their checkpoint (tests/test_multinode.py)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    REPEAT_SECONDS = 1.0

    def __init__(self):
        self.received: int | None = None
        self._received_at = 0.0
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received, self._received_at = signum, time.monotonic()
        elif signum != self.received or time.monotonic() - self._received_at > self.REPEAT_SECONDS:
            raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():   # handlers live there only
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
