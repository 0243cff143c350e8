"""The training progress bar, whose total is what this run will really train in the epoch.

Lightning's bar counts the epoch's batches unless ``max_epochs=-1``, so a 30-step run over a 394-batch epoch
showed ``20/394 [02:13<41:39]`` as it stopped. :class:`RunProgressBar` caps the total at the steps left to
``trainer.max_steps`` and, under ``trainer.max_time``, at the batches the remaining time allows at the bar's
current rate, so the count and the time left mean what they say.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Timer, TQDMProgressBar


class RunProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar with a total that honours ``max_steps`` and ``max_time``."""

    @property
    def total_train_batches(self) -> int | float:
        total = self.trainer.num_training_batches
        steps = self.trainer.max_steps
        if steps is not None and steps > 0:
            left = (steps - self.trainer.global_step) * self.trainer.accumulate_grad_batches
            total = min(total, max(left, 0))
        return total

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        bar = self.train_progress_bar
        rate = bar.format_dict.get("rate") if bar is not None else None  # tqdm's smoothed batches/s
        remaining = timer.time_remaining("train") if timer is not None else None
        if bar is not None:
            bar.total = time_capped(bar.total, bar.n, rate, remaining)
        super().on_train_batch_end(trainer, pl_module, *args)


def time_capped(total: int | float | None, done: int, rate: float | None, remaining_s: float | None) -> Any:
    """The bar's total once ``remaining_s`` seconds are left at ``rate`` batches/s: no more than ``done`` + 1
    (this batch) + what fits in the time left; unchanged without a rate, a time limit or a total."""
    if not rate or remaining_s is None or not total:
        return total
    return min(total, done + 1 + int(remaining_s * rate))
