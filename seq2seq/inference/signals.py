"""Stopping within moments on SIGTERM or Ctrl+C outside training (testing, ``evaluate``, ``translate``).

Training stops between two steps with its checkpoint saved (:mod:`seq2seq.training.graceful_stop`). Elsewhere
there is nothing to save half-way: :func:`stop_on_signals` turns SIGTERM and SIGINT into :class:`Stopped`,
raised in the main thread at once (between two PyTorch operations), so the caller records what it has and
exits with ``128 + signal``. Lightning, which would otherwise note a SIGTERM and test on for minutes, passes
the exception through (it calls handlers it finds already installed).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class Stopped(BaseException):  # noqa: N818 (like KeyboardInterrupt, not an error: not caught as Exception)
    """A signal asked the process to stop; ``signum`` is that signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's code for "ended by this signal"."""
        return 128 + self.signum


def _raise(signum: int, frame: Any) -> None:
    raise Stopped(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise :class:`Stopped` (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    for signum in previous:
        signal.signal(signum, _raise)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
