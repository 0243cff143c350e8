"""What evaluation shows beyond scalars: attention heatmaps at each validation, and W&B tables and images.

:class:`AttentionMaps` draws the attention of a fixed set of validation sentences after every validation
into ``<run_dir>/plots/attention/`` (overwritten, so the files show the latest model) and logs them to W&B
as images when a :class:`~pytorch_lightning.loggers.WandbLogger` is attached. The fixed-context model
(``attention=none``) has no attention weights: it draws nothing and says so once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import Logger, WandbLogger

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
