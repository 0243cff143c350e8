"""Stop a diverging training before it saves anything (:class:`FiniteGuard`).

A learning rate that is far too high makes the loss, the gradients and then the weights NaN or inf; one
validation later ``last.ckpt`` would hold nothing but NaN, and a resumed or translated model would be
useless. The guard checks, at every step: the loss (before the backward pass is applied), the gradient norm
(before the optimiser step), the weights (after it), and the loss against ``max_loss_ratio`` × the first
step's loss (a loss of 1e7 is divergence even while finite). The first failure stops training with
:class:`TrainingDiverged`, naming the step, what to lower and the last good checkpoint; and no checkpoint
with non-finite weights is ever written (``on_save_checkpoint`` refuses it, whatever triggered the save).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from seq2seq.inference.checkpoint import non_finite_weights


class TrainingDiverged(ValueError):
    """Training produced a non-finite or exploding loss, gradient or weight; nothing non-finite was saved."""


class FiniteGuard(Callback):
    """Stop at the first non-finite loss, gradient norm or weight, or an exploding loss.

    Args:
        checkpoint_dir: the run's ``checkpoints/`` (named in the message as where the last good state is).
        stop_on_non_finite: ``guard.non_finite``; False only warns about NaN/inf once (checkpoints with
            non-finite weights are refused either way).
        max_loss_ratio: ``guard.max_loss_ratio``; stop when the training loss exceeds this × the first
            step's loss (None: off).
    """

    def __init__(
        self, checkpoint_dir: str | Path, stop_on_non_finite: bool = True, max_loss_ratio: float | None = 10.0
    ) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self.stop_on_non_finite = stop_on_non_finite
        self.max_loss_ratio = max_loss_ratio
        self.first_loss: float | None = None
        self._warned = False

    # ------------------------------------------------------------------ the checks, at every step
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        value = float(loss.detach())
        step = trainer.global_step
        if not math.isfinite(value):
            self._fail(trainer, pl_module, f"the training loss is {value} at step {step}")
        elif self.first_loss is None:
            self.first_loss = value
        elif self.max_loss_ratio is not None and value > self.max_loss_ratio * max(self.first_loss, 1e-6):
            self._fail(
                trainer,
                pl_module,
                f"the training loss exploded to {value:.4g} at step {step}, over guard.max_loss_ratio="
                f"{self.max_loss_ratio:g} × the first step's {self.first_loss:.4g}",
                force=True,
            )
        if not _all_finite(p.detach() for p in pl_module.parameters()):
            self._fail(trainer, pl_module, f"the weights hold NaN or inf after the update of step {step}")

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        grads = [p.grad.detach() for p in pl_module.parameters() if p.grad is not None]
        if grads and not _all_finite(grads):
            self._fail(trainer, pl_module, f"the gradient norm is not finite at step {trainer.global_step}")

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        bad = non_finite_weights(checkpoint.get("state_dict", {}))
        if bad:
            raise TrainingDiverged(
                f"refusing to save a checkpoint with non-finite weights ({bad}) at step {trainer.global_step}; "
                f"{self._advice(trainer, pl_module)}"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"first_loss": self.first_loss}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.first_loss = state_dict.get("first_loss")

    # ------------------------------------------------------------------ the message
    def _fail(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, what: str, force: bool = False
    ) -> None:
        if not (self.stop_on_non_finite or force):
            if not self._warned:
                self._warned = True
                pl_module.print(f"warning: {what} (guard.non_finite=false: training goes on)")
            return
        raise TrainingDiverged(f"training diverged: {what}. {self._advice(trainer, pl_module)}")

    def _advice(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        cfg = getattr(pl_module, "cfg", None)
        lr = cfg.optim.lr if cfg is not None else None
        clip = trainer.gradient_clip_val
        lower = f"lower optim.lr (now {lr:g})" if lr is not None else "lower optim.lr"
        clip_advice = (
            f" or trainer.gradient_clip_val (now {clip:g})"
            if clip
            else " or set trainer.gradient_clip_val=1.0"
        )
        saved = [
            p for p in (self.checkpoint_dir / "best.ckpt", self.checkpoint_dir / "last.ckpt") if p.is_file()
        ]
        good = (
            f"the last good checkpoints are {' and '.join(map(str, saved))} (never overwritten with non-finite "
            "weights); resume from last.ckpt with the lower rate"
            if saved
            else "no checkpoint was saved yet; start again with the lower rate"
        )
        return f"To fix it: {lower}{clip_advice}; {good}"


def _all_finite(tensors: Any) -> bool:
    """Whether every value of every tensor is finite.

    One fused 2-norm over all tensors first (NaN and inf propagate through it; about 4× cheaper on CPU than
    a max-abs); only when that is not finite, a max-abs per tensor decides, since a 2-norm can also overflow
    on large finite values.
    """
    tensors = [t for t in tensors if t.is_floating_point()]
    if not tensors:
        return True
    if bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all()):
        return True
    peaks = torch._foreach_norm(tensors, ord=math.inf)
    return bool(torch.isfinite(torch.stack(peaks)).all())
