"""SIGTERM handling: the training loop checks a flag between steps and stops after saving."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Preempted(Exception):
    """Training stopped on SIGTERM after saving a checkpoint of `step`."""

    def __init__(self, step: int, path: str):
        super().__init__(f"stopped by SIGTERM after saving the checkpoint of step {step} ({path})")
        self.step = step


class StopFlag:
    """Set by SIGTERM; the loop checks it between steps."""

    def __init__(self):
        self.set = False


@contextlib.contextmanager
def sigterm_flag() -> Iterator[StopFlag]:
    """A `StopFlag` that SIGTERM sets while the context is open (main thread only: signal
    handlers cannot be installed from other threads, where the flag is never set)."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        del signum, frame
        flag.set = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)
