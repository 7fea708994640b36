"""Stopping a run cleanly on SIGINT (Ctrl-C) or SIGTERM (a scheduler's preemption).

While :class:`StopRequest` is active, either signal only records itself; the training
loop checks it after every step, saves a checkpoint at that step and raises
:class:`Interrupted`, which the command line turns into a message ("resume with the
same command") and the exit status 128 + the signal's number, as a shell reports a
process killed by it. A second Ctrl-C interrupts at once (no checkpoint).

The handlers are installed only from the main thread (Python allows no other), so a
trainer called from a worker thread keeps the process's own signal handling.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(RuntimeError):
    """Training stopped by a signal after a checkpoint was saved at ``step``."""

    def __init__(self, signum: signal.Signals, step: int, message: str):
        super().__init__(message)
        self.signum = signal.Signals(signum)
        self.step = step

    @property
    def exit_code(self) -> int:
        """The process's exit status: 128 + the signal's number, as a shell reports it."""
        return 128 + int(self.signum)


class StopRequest:
    """Context manager: ``signum`` is None until SIGINT or SIGTERM arrives, then that signal."""

    def __init__(self):
        self.signum: signal.Signals | None = None
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now
        self.signum = signal.Signals(signum)

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
