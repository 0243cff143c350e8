"""Callbacks: what evaluation shows beyond scalars, and what makes a run resumable exactly.

:class:`AttentionMaps` draws the attention of a fixed set of validation sentences after every validation
into ``<run_dir>/plots/attention/`` (overwritten, so the files show the latest model) and logs them to W&B
as images when a :class:`~pytorch_lightning.loggers.WandbLogger` is attached. The fixed-context model
(``attention=none``) has no attention weights: it draws nothing and says so once.

:class:`ExactResume` adds to each checkpoint what Lightning leaves out (random-number states, the batches
already trained in the current epoch), so a resumed run continues exactly as an uninterrupted one;
:class:`GracefulStop` turns SIGTERM, SIGINT and SLURM's pre-emption signal into a stop between two training
steps with ``checkpoints/last.ckpt`` saved.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException

from seq2seq.module import Seq2SeqModule, Translation
from seq2seq.plots import plot_attention

log = logging.getLogger(__name__)

LENGTH_COLUMNS = ("bucket", "min_len", "max_len", "n", "bleu", "chrf", "exact_match")
NO_ATTENTION = (
    "attention=none: the fixed-context decoder has no attention weights, so no attention maps are drawn"
)


def pick_examples(sources: Sequence[str], count: int) -> list[int]:
    """``count`` indices spread evenly over the source lengths, shortest to longest (ties by position)."""
    if count <= 0 or not sources:
        return []
    by_length = sorted(range(len(sources)), key=lambda i: (len(sources[i].split()), i))
    if count >= len(sources):
        return by_length
    last = len(sources) - 1
    return [by_length[round(k * last / max(count - 1, 1))] for k in range(count)]


def save_attention_maps(
    translations: Sequence[Translation], names: Sequence[str], out_dir: str | Path
) -> list[Path]:
    """One ``<name>.png`` heatmap per translation that has attention weights; returns the paths written."""
    paths = []
    for name, translation in zip(names, translations, strict=True):
        if translation.attention is None:
            continue
        paths.append(
            plot_attention(
                translation.attention.numpy(),
                translation.source_pieces,
                translation.output_pieces,
                Path(out_dir) / f"{name}.png",
                title=f"{name}: {translation.text}"[:120],
            )
        )
    return paths


def wandb_loggers(loggers: Sequence[Logger]) -> list[WandbLogger]:
    return [logger for logger in loggers if isinstance(logger, WandbLogger)]


def log_images(
    loggers: Sequence[Logger],
    key: str,
    paths: Sequence[Path],
    captions: Sequence[str],
    step: int | None = None,
) -> None:
    """Log PNG files as ``wandb.Image``s to every W&B logger (nothing without one), each under
    ``<key>/<file stem>`` so one example's maps form a history across validations."""
    for logger in wandb_loggers(loggers):
        for path, caption in zip(paths, captions, strict=True):
            logger.log_image(key=f"{key}/{Path(path).stem}", images=[str(path)], caption=[caption], step=step)


def log_bleu_by_length(
    loggers: Sequence[Logger], key: str, rows: Sequence[dict[str, Any]], image: Path | None = None
) -> None:
    """Log ``bleu_by_length`` rows to W&B as a table, a line plot (BLEU vs. shortest length in the bucket)
    and, when given, the PNG of :func:`seq2seq.plots.plot_bleu_by_length`."""
    targets = wandb_loggers(loggers)
    if not targets or not rows:
        return
    import wandb

    data = [[row.get(column) for column in LENGTH_COLUMNS] for row in rows]
    for logger in targets:
        table = wandb.Table(columns=list(LENGTH_COLUMNS), data=data)
        logged: dict[str, Any] = {
            key: table,
            f"{key}_plot": wandb.plot.line(table, "min_len", "bleu", title=f"{key}: BLEU by source length"),
        }
        if image is not None:
            logged[f"{key}_png"] = wandb.Image(str(image))
        logger.experiment.log(logged)


class AttentionMaps(Callback):
    """After each validation, decode ``count`` fixed validation sentences and save their attention maps.

    Args:
        count: sentences drawn (``eval.attention_examples``), spread over lengths (:func:`pick_examples`).
        out_dir: where the PNGs go (``<run_dir>/plots/attention``), named ``val_<index>.png``.
    """

    def __init__(self, count: int, out_dir: str | Path) -> None:
        self.count = count
        self.out_dir = Path(out_dir)
        self._said_none = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Seq2SeqModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self.count <= 0:
            return
        if not pl_module.has_attention:
            if not self._said_none:
                log.info(NO_ATTENTION)
                self._said_none = True
            return
        datamodule = getattr(trainer, "datamodule", None)
        pairs = getattr(datamodule, "raw", {}).get("val")
        if not pairs:
            return
        sources = [source for source, _ in pairs]
        picks = pick_examples(sources, self.count)
        translations = pl_module.translate([sources[i] for i in picks], return_attention=True)
        names = [f"val_{i:05d}" for i in picks]
        paths = save_attention_maps(translations, names, self.out_dir)
        captions = [
            f"{n}: {t.source} → {t.text}"
            for n, t in zip(names, translations, strict=True)
            if t.attention is not None
        ]
        log_images(trainer.loggers, "val/attention", paths, captions, step=trainer.global_step)


def rng_state() -> dict[str, Any]:
    """The random-number states training draws from: torch (dropout, teacher-forcing coin flips), this
    process's GPU (only when CUDA is in use: reading others would open a context on every GPU) and Python."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized()
        else None,
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    random.setstate(state["python"])


class ExactResume(Callback):
    """Each epoch's batch order, and checkpoints that a resumed run continues from exactly.

    - Lightning calls ``set_epoch`` on samplers but not on batch samplers: this callback gives the
      :class:`~seq2seq.data.batching.TokenBudgetBatchSampler` its epoch (its shuffling seed) at each epoch
      start.
    - Lightning restores weights, optimiser, scheduler and the step and epoch counters (the teacher-forcing
      schedule is a function of the step), but not the random-number states nor the position inside an epoch
      of a batch sampler. Checkpoints here carry both (every rank's states); a resumed run restores them
      when training starts, so dropout masks, teacher-forcing coin flips and batches continue as in an
      uninterrupted run. Exact with ``data.num_workers=0`` (worker processes fetch batches before training
      starts).
    - Random numbers are reseeded from ``(seed, epoch, rank)`` before each epoch's first batch: Lightning
      draws from them for each data-loader iterator it makes, one more or fewer after resuming at an epoch's
      end.
    - ``last_path`` is also written after the step that reaches ``trainer.max_steps``, from inside its epoch
      (after closing the fit, Lightning would mark the epoch finished and a resumed run would skip its rest),
      and at the end of a fit when no checkpoint holds the final step.

    Needs ``trainer.reload_dataloaders_every_n_epochs=1`` (``conf/trainer/default.yaml``): resumed at the end
    of an epoch, Lightning would otherwise reuse the exhausted loader and train an empty epoch.
    """

    def __init__(self, last_path: str | Path, seed: int) -> None:
        self.last_path = Path(last_path)
        self.seed = seed
        self.epoch = -1  # the data epoch being trained (the batch sampler's shuffling epoch)
        self.batches = 0  # of it, the batches trained so far (on each rank)
        self._restore: dict[str, Any] | None = None
        self._saved_step: int | None = None  # global step of the latest checkpoint written

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.reload_dataloaders_every_n_epochs != 1 and trainer.is_global_zero:
            log.warning(
                "trainer.reload_dataloaders_every_n_epochs=%d: a run resumed at the end of an epoch would "
                "train an empty epoch; set it to 1 (as conf/trainer/default.yaml does)",
                trainer.reload_dataloaders_every_n_epochs,
            )

    @staticmethod
    def _sampler(trainer: pl.Trainer) -> Any:
        return getattr(trainer.train_dataloader, "batch_sampler", None)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._restore is None:
            return
        state, self._restore = self._restore, None
        self.epoch, self.batches = state["epoch"], state["batches"]
        states = state["rng"]
        if trainer.is_global_zero:
            log.info(
                "resuming at step %d: epoch %d after %d of its batches",
                trainer.global_step,
                self.epoch,
                self.batches,
            )
        if len(states) != trainer.world_size and trainer.is_global_zero:
            log.warning(
                "resuming on %d processes a checkpoint written by %d: batch order and random numbers differ "
                "from an uninterrupted run",
                trainer.world_size,
                len(states),
            )
        set_rng_state(states[trainer.global_rank % len(states)])
        sampler = self._sampler(trainer)
        if hasattr(sampler, "resume") and self.epoch >= 0:
            sampler.set_epoch(self.epoch)
            sampler.resume(self.epoch, self.batches)  # Lightning continues this epoch unless it was complete
            workers = getattr(trainer.train_dataloader, "num_workers", 0)
            if self.batches and workers > 0 and trainer.is_global_zero:
                log.warning(
                    "data.num_workers=%d: the workers fetched batches before the resumed position was known, "
                    "so the rest of epoch %d comes in another order; use data.num_workers=0 for an exact resume",
                    workers,
                    self.epoch,
                )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch, self.batches = self.epoch + 1, 0
        sampler = self._sampler(trainer)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.batches == 0:
            seed = ((self.seed * 1_000_003 + self.epoch) * 1_000_033 + trainer.global_rank) % 2**63
            torch.manual_seed(seed)  # CPU and every GPU
            random.seed(seed)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.batches += 1
        if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
            self._save_final_step(trainer)

    def _save_final_step(self, trainer: pl.Trainer) -> None:
        """Save the step that ends training (``max_steps``) as Lightning records a finished step inside its
        epoch: had Lightning saved after closing the fit, it would mark the epoch finished and a resumed run
        would skip the rest of it. (Its loop counters are advanced for the save only, then put back.)"""
        epoch_loop = trainer.fit_loop.epoch_loop
        epoch_loop.batch_progress.increment_completed()
        epoch_loop._batches_that_stepped += 1
        try:
            trainer.save_checkpoint(self.last_path, weights_only=False)
        finally:
            epoch_loop.batch_progress.current.completed -= 1
            epoch_loop.batch_progress.total.completed -= 1
            epoch_loop._batches_that_stepped -= 1

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._saved_step != trainer.global_step:
            trainer.save_checkpoint(self.last_path, weights_only=False)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._saved_step = trainer.global_step

    def state_dict(self) -> dict[str, Any]:
        """Called on every rank when a checkpoint is written; rank 0 writes the random states of all ranks."""
        states = [rng_state()]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            states = [None] * dist.get_world_size()
            dist.all_gather_object(states, rng_state())
        return {"epoch": self.epoch, "batches": self.batches, "rng": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restore = state_dict  # applied when training starts, after Lightning has built the data loaders


Handler = Callable[[int, Any], Any] | int | None


class GracefulStop(Callback):
    """SIGTERM, SIGINT (Ctrl+C) and SLURM's pre-emption signal stop training between two steps, with
    ``last_path`` saved.

    While a fit trains, these signals only note that a stop was asked for. After each training step the
    ranks agree on it (any rank that got a signal stops them all) and hand it to Lightning's SIGTERM handling
    on every rank at once: Lightning finishes the step, with its validation and checkpoints, and raises
    :class:`~pytorch_lightning.utilities.exceptions.SIGTERMException` everywhere; this callback then saves
    ``last_path``. (Lightning's own SIGTERM handler broadcasts from inside the signal handler, which deadlocks
    when another rank waits in a gradient all-reduce; it is replaced while training.) The pre-emption signal
    is routed here only when a Python handler waits for it (submitit's, which requeues the SLURM job);
    :meth:`pass_on` gives it to that handler once the run has recorded the interruption. A second Ctrl+C
    aborts at once.

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

    def _note(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl+C aborts at once
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
            if callable(self._lightning):
                self._lightning(signal.SIGTERM, None)  # on every rank together: its broadcast pairs up

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        self.signum = self.signum or self._received or signal.SIGTERM
        trainer.save_checkpoint(self.last_path, weights_only=False)  # every rank takes part; rank 0 writes
        self.saved = self.last_path
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
