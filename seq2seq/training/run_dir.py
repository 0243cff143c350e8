"""A run directory is written only by the run that owns it (:class:`RunDirGuard`, a Hydra callback).

Owning means holding ``<run dir>/.lock`` (an advisory ``flock``, released by the kernel when the process
ends, however it ends, so a lock is never left behind by a crash). A second run given the same directory —
two trainings with one ``hydra.run.dir``, or two multiruns in one sweep directory — is refused before it
writes anything there, with the holder's PID, host and command.

A run started in a directory that already holds an earlier run's record (``results.json`` or ``.hydra/``:
resuming, or a mistake) must not overwrite that record if it fails. Its Hydra files go to
``attempts/<time>/.hydra/`` instead of ``.hydra/``, and a failure is recorded in
``attempts/<time>/results.json`` (:func:`failure_record_dir`); the earlier ``results.json`` and ``.hydra/``
stay as they were. A resume that completes or is interrupted again writes the run's ``results.json`` as
usual.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from seq2seq.evaluation.record import RESULTS
from seq2seq.training.hydra_ddp import is_rank_zero

LOCK = ".lock"
ATTEMPTS = "attempts"
HYDRA_DIR = ".hydra"


class RunDirError(ValueError):
    """The run directory cannot be used: held by another run, or not creatable/writable."""


@dataclass
class Ownership:
    """This process's hold on a run directory; ``attempt_dir`` is set when an earlier record was there."""

    run_dir: Path
    lock: TextIO
    attempt_dir: Path | None = None


_held: dict[Path, Ownership] = {}


def release_all() -> None:
    """Give up every hold of this process (at exit, however the run ended short of a kill)."""
    for run_dir in list(_held):
        release(run_dir)


atexit.register(release_all)


def acquire(run_dir: Path, option: str = "hydra.run.dir") -> TextIO:
    """Create ``run_dir`` if needed and take its lock; returns the open lock file (keep it open).

    Raises:
        RunDirError: the directory cannot be created or written, or another live process holds it.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        while True:
            lock = open(run_dir / LOCK, "a+", encoding="utf-8")  # noqa: SIM115 (held for the run's life)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip()
                lock.close()
                raise RunDirError(_held_message(run_dir, holder, option)) from None
            # the holder before us may have removed the file after we opened it: lock the file that is there
            if os.path.exists(lock.name) and os.stat(lock.name).st_ino == os.fstat(lock.fileno()).st_ino:
                break
            lock.close()
    except OSError as error:
        raise RunDirError(
            f"{option}={run_dir}: cannot create or write the run directory ({error.strerror or error}); "
            f"choose a writable directory with {option}=<dir>"
        ) from None
    lock.seek(0)
    lock.truncate()
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    lock.write(json.dumps({**holder, "command": " ".join(sys.argv)}) + "\n")
    lock.flush()
    return lock


def _held_message(run_dir: Path, holder: str, option: str) -> str:
    try:
        info = json.loads(holder)
        who = f"PID {info['pid']} on {info['host']} (since {info['since']}: {info['command']})"
    except (ValueError, KeyError, TypeError):
        who = "another process"
    return (
        f"{option}={run_dir}: the run directory is in use by {who}; wait for that run to end, or give this run "
        f"its own directory ({option}=<new dir>). If no such process is alive (a lock on a network file "
        f"system can outlive it), delete {run_dir / LOCK} and start again"
    )


def release(run_dir: Path) -> None:
    """Give up this process's hold on ``run_dir`` (the lock file is removed)."""
    owned = _held.pop(Path(run_dir).resolve(), None)
    if owned is None:
        return
    with contextlib.suppress(OSError):
        os.unlink(owned.lock.name)
    owned.lock.close()


def has_record(run_dir: Path) -> bool:
    """Whether an earlier run left its record here."""
    return (run_dir / RESULTS).is_file() or (run_dir / HYDRA_DIR).is_dir()


def own(run_dir: Path, option: str, new_attempt: bool) -> Ownership:
    """Take ``run_dir`` for this process; with ``new_attempt`` and an earlier record, open an attempt dir."""
    run_dir = Path(run_dir)
    earlier = new_attempt and has_record(run_dir)
    lock = acquire(run_dir, option)
    attempt = None
    if earlier:
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        attempt = run_dir / ATTEMPTS / stamp
        suffix = 1
        while attempt.exists():
            suffix += 1
            attempt = run_dir / ATTEMPTS / f"{stamp}_{suffix}"
    owned = Ownership(run_dir, lock, attempt)
    _held[run_dir.resolve()] = owned
    return owned


def failure_record_dir(run_dir: Path) -> Path:
    """Where a failed run records its failure: its attempt directory when an earlier record is in
    ``run_dir`` (so that record is not overwritten), else ``run_dir`` itself."""
    owned = _held.get(Path(run_dir).resolve())
    if owned is not None and owned.attempt_dir is not None:
        return owned.attempt_dir
    return Path(run_dir)


def _exit(error: RunDirError) -> None:
    print(f"Error: {error}", file=sys.stderr)
    sys.exit(1)


class RunDirGuard(Callback):
    """Hydra callback (``conf/hydra/default.yaml``) that owns each run's directory for the run's lifetime.

    A single run is locked in ``on_run_start``, before Hydra writes anything in its directory; a multirun
    locks its sweep directory in the launching process, which lives until every job has ended, so no other
    multirun can write jobs there. DDP child processes share their rank 0's directory and take no lock.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_rank_zero():
            return
        run_dir = Path(config.hydra.run.dir)
        try:
            owned = own(run_dir, "hydra.run.dir", new_attempt=True)
        except RunDirError as error:
            _exit(error)
        if owned.attempt_dir is not None and config.hydra.output_subdir is not None:
            subdir = owned.attempt_dir.relative_to(run_dir) / HYDRA_DIR
            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.output_subdir = str(subdir)  # Hydra writes this attempt's files there

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        release(Path(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            own(Path(config.hydra.sweep.dir), "hydra.sweep.dir", new_attempt=False)
        except RunDirError as error:
            _exit(error)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        release(Path(config.hydra.sweep.dir))
