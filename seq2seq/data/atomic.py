"""Atomic file writes: readers see the old file or the new one, never half of one, and no temp file remains.

Every file the project writes whole (``results.json``, cached tokenizers, prepared corpora, checkpoints via
:mod:`seq2seq.training.checkpoint_io`) goes through :func:`write_atomic`: a temporary file in the same
directory, given the mode a plain ``open()`` would give (``0666`` less the umask, so results and shared
caches are readable by others as usual), then renamed over the target. SIGINT and SIGTERM are held back for
the few milliseconds of the write and the rename, so a second Ctrl+C cannot leave a stray temp file or no
file at all; the signal is delivered right after.

Nothing can clean up after SIGKILL (or a power cut) in the middle of a write: the target is intact, but the
temporary file stays. Its name carries the writer's host and process id, and the next successful write of
the same target removes such orphans whose writer, on this host, is no longer alive (a resumed training's
first ``last.ckpt`` removes the one its killed predecessor left).
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM}
TEMP_SUFFIX = ".tmp"


def _host() -> str:
    """This host's name as it appears in temporary file names (no dots, so names split unambiguously)."""
    return socket.gethostname().replace(".", "_") or "localhost"


def _alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (one that exists but is not ours counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        pass
    return True


def remove_orphans(path: Path) -> None:
    """Remove temporary files of ``path`` left by writers on this host that are no longer alive.

    The names are ``.<target>.<host>-<pid>.<random>.tmp``; temporary files of live writers, of other hosts
    (a shared file system) and of other targets are left alone.
    """
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*{TEMP_SUFFIX}"):
        writer = candidate.name[len(path.name) + 2 : -len(TEMP_SUFFIX)].rpartition(".")[0]
        host, _, pid = writer.rpartition("-")
        if "." not in writer and host == _host() and pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                candidate.unlink()


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
        prefix = f".{path.name}.{_host()}-{os.getpid()}."
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=TEMP_SUFFIX)
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
    remove_orphans(path)
