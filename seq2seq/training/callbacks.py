"""The callbacks of a training run (:func:`build_callbacks`), and :class:`AttentionMaps`.

Best-``val/bleu`` and last checkpoints (Lightning's ``ModelCheckpoint``), :class:`ExactResume`,
:class:`GracefulStop`, optional early stopping, the progress bar (:class:`~seq2seq.training.progress.RunProgressBar`), and attention maps of a fixed set of
validation sentences after every validation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
)

from seq2seq.evaluation.artifacts import draw_attention_maps
from seq2seq.inference.translator import NO_ATTENTION
from seq2seq.training.exact_resume import ExactResume
from seq2seq.training.finite_guard import FiniteGuard
from seq2seq.training.graceful_stop import GracefulStop
from seq2seq.training.module import Seq2SeqModule
from seq2seq.training.progress import RunProgressBar

log = logging.getLogger(__name__)

LAST = Path("checkpoints") / "last.ckpt"  # in the run directory


class AttentionMaps(Callback):
    """After each validation, decode ``count`` fixed validation sentences and save their attention maps.

    The maps go to ``out_dir`` (``<run_dir>/plots/attention``) as ``val_<index>.png``, overwritten so the
    files show the latest model, and to W&B as images. The fixed-context model (``attention=none``) has no
    attention weights: it draws nothing and says so once.

    Args:
        count: sentences drawn (``eval.attention_examples``), spread over lengths.
        out_dir: where the PNGs go.
        heads: also each layer's heads of a Transformer decoder, ``val_<index>_heads.png`` (``eval.attention_heads``).
    """

    def __init__(self, count: int, out_dir: str | Path, heads: bool = False) -> None:
        self.count = count
        self.out_dir = Path(out_dir)
        self.heads = heads
        self._said_none = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Seq2SeqModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self.count <= 0:
            return
        if not pl_module.has_attention:
            if not self._said_none:
                log.info(NO_ATTENTION)
                self._said_none = True
            return
        loader = trainer.val_dataloaders
        examples = getattr(getattr(loader, "dataset", None), "examples", [])
        sources = [example.source for example in examples]
        draw_attention_maps(
            pl_module.translator(),
            sources,
            self.count,
            self.out_dir,
            trainer.loggers,
            "val",
            trainer.global_step,
            heads=self.heads,
        )


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list[Callback]:
    """The callbacks ``cfg.callbacks`` and ``cfg.eval`` ask for, writing into ``run_dir``."""
    cb = cfg.callbacks
    callbacks: list[Callback] = [
        ModelCheckpoint(  # first: trainer.checkpoint_callback, whose best model is tested
            dirpath=run_dir / "checkpoints",
            filename="best",
            monitor=cb.checkpoint.monitor,
            mode=cb.checkpoint.mode,
            save_top_k=1,
            auto_insert_metric_name=False,
            save_on_train_epoch_end=False,
            enable_version_counter=False,  # a run resumed in place overwrites its own files
        ),
        # last.ckpt after every validation (Lightning's save_last saves only alongside a new best); at the end
        # of a validation, not of the epoch, since Lightning also ends an epoch when training stops mid-way
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="last",
            save_top_k=1,
            save_on_train_epoch_end=False,
            enable_version_counter=False,
        ),
        FiniteGuard(
            run_dir / "checkpoints",
            stop_on_non_finite=cfg.guard.non_finite,
            max_loss_ratio=cfg.guard.max_loss_ratio,
        ),
        ExactResume(run_dir / LAST, seed=cfg.seed),
        GracefulStop(run_dir / LAST),
        LearningRateMonitor(logging_interval="step"),  # train/lr, to every logger (metrics.csv, W&B)
    ]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(RunProgressBar(refresh_rate=cb.progress_bar.refresh_rate))
    if cb.early_stopping is not None:
        # checked after each validation (not at each epoch's end, where a resumed run or one stopped by
        # max_steps mid-epoch has no val/bleu yet); its state is part of the checkpoint written after it
        callbacks.append(EarlyStopping(**{"check_on_train_epoch_end": False, **cb.early_stopping}))
    if cfg.eval.get("attention_examples", 0) > 0:
        heads = bool(cfg.eval.get("attention_heads", False))
        callbacks.append(AttentionMaps(cfg.eval.attention_examples, run_dir / "plots" / "attention", heads))
    return callbacks
