"""Exact resume: each checkpoint carries what Lightning leaves out, so a resumed run continues as an
uninterrupted one (:class:`ExactResume`)."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Callback

log = logging.getLogger(__name__)


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
