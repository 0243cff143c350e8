"""Stopping on a signal between two training steps, with ``checkpoints/last.ckpt`` saved (:class:`GracefulStop`)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

Handler = Callable[[int, Any], Any] | int | None


class GracefulStop(Callback):
    """SIGTERM, SIGINT (Ctrl+C) and SLURM's pre-emption signal stop training between two steps, with
    ``last_path`` saved.

    While a fit trains, these signals only note that a stop was asked for. After each training step the
    ranks agree on it (any rank that got a signal stops them all) and hand it to Lightning's SIGTERM handling
    on every rank at once: Lightning finishes the step, with its validation and checkpoints, and raises
    :class:`~pytorch_lightning.utilities.exceptions.SIGTERMException` everywhere; this callback then saves
    ``last_path``. At an epoch's last step the stop is made after the next step (Lightning would stop after
    closing the epoch, and a run resumed there started one epoch too far on), unless the fit ends there.
    (Lightning's own SIGTERM handler broadcasts from inside the signal handler, which deadlocks when another
    rank waits in a gradient all-reduce; it is replaced while training.) The pre-emption signal is routed here
    only when a Python handler waits for it (submitit's, which requeues the SLURM job); :meth:`pass_on` gives
    it to that handler once the run has recorded the interruption. A second Ctrl+C aborts at once. In a
    one-process fit a signal during a validation (which can take minutes) stops at once, saving nothing: the
    run resumes from the previous validation's ``last_path`` and replays the steps since then exactly.

    Args:
        last_path: the checkpoint written on a stop (``<run_dir>/checkpoints/last.ckpt``).
        preemption_signal: the signal submitit uses (``SIG$SUBMITIT_PREEMPT_SIGNAL``, default ``SIGUSR2``).
    """

    def __init__(self, last_path: str | Path, preemption_signal: str | None = None) -> None:
        self.last_path = Path(last_path)
        name = preemption_signal or "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").removeprefix(
            "SIG"
        )
        self.preemption_signal: signal.Signals | None = getattr(signal, name, None)
        self.signum: int | None = None  # the signal that stopped training, once agreed on
        self.saved: Path | None = None  # the checkpoint written on the stop
        self._received: int | None = None  # a signal this process got
        self._lightning: Handler = None  # Lightning's SIGTERM handler for this fit
        self._replaced: dict[int, Handler] = {}
        self._validating = False  # inside a validation of a one-process fit
        self.in_validation = False  # the stop came during a validation: nothing is saved
        self.saved_step: int | None = None  # the global step of ``saved`` (where a resume continues)
        self._last_saved_step = 0
        self._deferred = False  # a stop agreed at an epoch's last step, made after the next step

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._lightning = signal.getsignal(signal.SIGTERM)
        handled = [signal.SIGTERM, signal.SIGINT]
        if self.preemption_signal is not None and callable(signal.getsignal(self.preemption_signal)):
            handled.append(self.preemption_signal)
        for signum in handled:  # Lightning puts back the handlers it found when the fit ends
            self._replaced[signum] = signal.getsignal(signum)
            signal.signal(signum, self._note)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # one process: a signal during a validation stops it at once (several ranks must agree, between steps)
        self._validating = not trainer.sanity_checking and trainer.world_size == 1

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validating = False

    def _note(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl+C aborts at once
        if self._received is None and self._validating:
            # no checkpoint now: this step's validation would be lost and the resume inexact; the run resumes
            # from the last validation's last.ckpt and replays the steps since, exactly
            self._received = self.signum = signum
            self.in_validation = True
            log.warning(
                "%s: validation stopped; the run resumes from the last checkpoint, %s",
                signal.Signals(signum).name,
                self.last_path,
            )
            raise SIGTERMException
        if self._received is None:
            self._received = signum
            log.warning(
                "%s: stopping after the current training step; the checkpoint goes to %s%s",
                signal.Signals(signum).name,
                self.last_path,
                " (Ctrl+C again to abort now)" if signum == signal.SIGINT else "",
            )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.signum is not None:
            return
        stop = self._received is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)  # every rank, every step
        if stop:
            self.signum = self._received or signal.SIGTERM  # a rank that got none stops with the others
            if batch_idx + 1 >= trainer.num_training_batches and not _fit_ends_here(trainer):
                # an epoch's last step: Lightning would stop after closing the epoch, and a run resumed from
                # there starts one epoch too far on (other batches, other random numbers); stop after the
                # next step instead, inside the next epoch, where a resume is exact
                self._deferred = True
                log.info("the epoch's last step: stopping after the next one, inside the next epoch")
                return
            self._stop_lightning()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._deferred:  # on every rank at the same step, as the decision was taken
            self._deferred = False
            self._stop_lightning()

    def _stop_lightning(self) -> None:
        if callable(self._lightning):
            self._lightning(signal.SIGTERM, None)  # on every rank together: its broadcast pairs up

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._last_saved_step = trainer.global_step

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        self.signum = self.signum or self._received or signal.SIGTERM
        if self.in_validation:
            self.saved = self.last_path if self.last_path.is_file() else None
            self.saved_step = self._last_saved_step if self.saved else 0
            return
        trainer.save_checkpoint(self.last_path, weights_only=False)  # every rank takes part; rank 0 writes
        self.saved = self.last_path
        self.saved_step = trainer.global_step
        if trainer.is_global_zero:
            log.warning(
                "%s: training stopped at step %d; saved %s",
                signal.Signals(self.signum).name,
                trainer.global_step,
                self.last_path,
            )

    def pass_on(self) -> None:
        """Give the pre-emption signal to the handler it replaced (submitit's: requeue the job and exit)."""
        if self.signum == self.preemption_signal and callable(handler := self._replaced.get(self.signum)):
            handler(self.signum, None)


def _fit_ends_here(trainer: pl.Trainer) -> bool:
    """Whether the fit ends after this step by ``max_steps`` or ``max_epochs`` (then there is no next step to
    stop after, and nothing left to resume)."""
    steps_done = trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps
    max_epochs = trainer.max_epochs
    return steps_done or (max_epochs not in (None, -1) and trainer.current_epoch + 1 >= max_epochs)
