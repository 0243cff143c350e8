"""Atomic file writes: readers see the old file or the new one, never half of one, and no temp file remains.

Every file the project writes whole (``results.json``, cached tokenizers, prepared corpora, checkpoints via
:mod:`seq2seq.training.checkpoint_io`) goes through :func:`write_atomic`: a temporary file in the same
directory, given the mode a plain ``open()`` would give (``0666`` less the umask, so results and shared
caches are readable by others as usual), then renamed over the target. SIGINT and SIGTERM are held back for
the few milliseconds of the write and the rename, so a second Ctrl+C cannot leave a stray temp file or no
file at all; the signal is delivered right after.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def umask() -> int:
    """The process's umask, read without changing it (Linux ``/proc``), else by setting and restoring it."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Defer SIGINT/SIGTERM until the block ends, then deliver them to the handlers in place before.

    Python runs signal handlers in the main thread whichever thread the kernel picked, so the handlers are
    swapped (a thread mask would not do: PyTorch's and W&B's threads would still take the signal).
    Outside the main thread this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {signum: signal.getsignal(signum) for signum in HELD_SIGNALS}
    for signum in previous:
        signal.signal(signum, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        for signum in pending:
            signal.raise_signal(signum)


def write_atomic(path: str | Path, content: str | bytes) -> None:
    """Write ``content`` (text as UTF-8) to ``path`` atomically, with the umask's mode; creates the parent.

    Raises:
        OSError: the directory cannot be created or written (the target is then unchanged).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode("utf-8") if isinstance(content, str) else content
    with signals_held():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~umask())
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
