"""What a run leaves behind, written the same way by training and by ``evaluate``.

A scored test split becomes ``predictions/test.tsv``, ``results.json``, ``plots/bleu_by_length.png``,
``plots/position_accuracy.png`` and their W&B counterparts (:func:`write_outputs`); attention heatmaps of a
few sentences spread over lengths go to ``plots/attention/<prefix>_<index>.png`` and W&B images
(:func:`draw_attention_maps`, after each validation and at the end of ``evaluate``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger

from seq2seq.evaluation.head_alignment import accuracy_grid, best_head, head_name
from seq2seq.evaluation.plots import (
    plot_alignment_heads,
    plot_attention,
    plot_attention_heads,
    plot_bleu_by_length,
    plot_position_accuracy,
)
from seq2seq.evaluation.record import PREDICTIONS, RESULTS, write_json_atomic, write_predictions
from seq2seq.evaluation.scoring import SplitScores
from seq2seq.evaluation.tracking import log_bleu_by_length, log_images, log_position_accuracy, log_summary
from seq2seq.inference.translator import Translation, Translator

log = logging.getLogger(__name__)


def split_metrics(test: SplitScores) -> dict[str, Any]:
    """``results.json``'s ``test/*`` metrics of a scored test split, with ``test/bleu_ci`` and
    ``test/chrf_ci`` (``[low, high]``) when it was resampled."""
    metrics: dict[str, Any] = {f"test/{name}": value for name, value in test.scores.items()}
    metrics.update({f"test/{name}_ci": interval for name, interval in test.intervals.items()})
    metrics["test/loss"] = test.loss
    if test.attention_entropy is not None:
        metrics["test/attention_entropy"] = test.attention_entropy
    if test.alignment is not None:
        metrics["test/alignment_accuracy"] = test.alignment["accuracy"]
        metrics["test/aer"] = test.alignment["aer"]
        metrics["test/alignment_gold_mass"] = test.alignment["gold_mass"]
    for entry in test.alignment_heads or []:
        metrics[f"test/alignment_accuracy/{head_name(entry)}"] = entry["accuracy"]
    return metrics


def split_records(test: SplitScores) -> dict[str, Any]:
    """The per-bucket and per-position lists of ``results.json`` that come from the test split, and the
    sacrebleu signatures of its scores."""
    return {
        "bleu_by_length": test.bleu_by_length,
        "position_accuracy": test.position_accuracy,  # free-running (the decoding config), per output token
        "teacher_forced_position_accuracy": test.teacher_forced_position_accuracy,
        "position_accuracy_ci": test.position_accuracy_ci,  # Wilson 95 %, per position
        "teacher_forced_position_accuracy_ci": test.teacher_forced_position_accuracy_ci,
        "sacrebleu": test.signatures,
        "alignment": test.alignment,  # toy data with attention: accuracy, AER, gold mass, by length
        "alignment_heads": test.alignment_heads,  # the same per Transformer decoder layer and head
    }


def write_outputs(
    out_dir: Path, results: dict[str, Any], test: SplitScores, loggers: Sequence[Logger]
) -> None:
    """Predictions, ``results.json``, the two plots, and the same to W&B (tables, images, the run summary).

    ``results`` is the finished ``results.json`` document of the run (it holds ``test``'s scores).
    """
    write_predictions(out_dir / PREDICTIONS, test.sources, test.references, test.hypotheses)
    write_json_atomic(out_dir / RESULTS, results)
    series = {"test": results["bleu_by_length"]}
    if results.get("val_bleu_by_length"):
        series["val (best)"] = results["val_bleu_by_length"]
    plot = plot_bleu_by_length(series, out_dir / "plots" / "bleu_by_length.png")
    plot_position_accuracy(
        {"free-running": test.position_accuracy, "teacher-forced": test.teacher_forced_position_accuracy},
        out_dir / "plots" / "position_accuracy.png",
        intervals={
            "free-running": test.position_accuracy_ci,
            "teacher-forced": test.teacher_forced_position_accuracy_ci,
        },
    )
    # the final metrics (test, best validation) are the run's summary, never a logged step: the test metrics
    # were logged by trainer.test at the step they were measured, and the best val/bleu at its validation;
    # scalars only: the intervals stay in results.json
    final = {k: v for k, v in results["metrics"].items() if isinstance(v, int | float) and math.isfinite(v)}
    intervals = {k: v for k, v in results["metrics"].items() if k.endswith("_ci") and v}  # [low, high]
    log_summary(loggers, {**final, **intervals, "params": results["params"], "status": results["status"]})
    log_bleu_by_length(loggers, "test/bleu_by_length", results["bleu_by_length"], plot)
    log_bleu_by_length(loggers, "val/bleu_by_length", results.get("val_bleu_by_length") or [])
    log_position_accuracy(
        loggers,
        "test/position_accuracy",
        {"free-running": test.position_accuracy, "teacher-forced": test.teacher_forced_position_accuracy},
    )
    if test.alignment_heads:
        heads = plot_alignment_heads(
            accuracy_grid(test.alignment_heads),
            out_dir / "plots" / "alignment_heads.png",
            "test alignment accuracy (%) per decoder layer and head",
            best=best_head(test.alignment_heads),
        )
        log_images(loggers, "test/alignment_heads", [heads], ["alignment accuracy per layer and head"])


MAX_MAP_WORDS = (
    120  # longer sources get no attention map: a 5,000-word heatmap takes minutes and is unreadable
)


def pick_examples(sources: Sequence[str], count: int, max_words: int | None = MAX_MAP_WORDS) -> list[int]:
    """``count`` indices spread evenly over the source lengths, shortest to longest (ties by position);
    sources over ``max_words`` words are never picked (None: no cap)."""
    if count <= 0 or not sources:
        return []
    short = [i for i in range(len(sources)) if max_words is None or len(sources[i].split()) <= max_words]
    if len(short) < len(sources):
        log.info(
            "attention maps: %d sources over %d words skipped (too long to draw)",
            len(sources) - len(short),
            max_words,
        )
    by_length = sorted(short, key=lambda i: (len(sources[i].split()), i))
    if not by_length:
        return []
    if count >= len(by_length):
        return by_length
    last = len(by_length) - 1
    return [by_length[round(k * last / max(count - 1, 1))] for k in range(count)]


def save_attention_maps(
    translations: Sequence[Translation], names: Sequence[str], out_dir: str | Path
) -> list[Path]:
    """One ``<name>.png`` heatmap per translation that has attention weights, and ``<name>_heads.png`` (every
    layer and head) per translation that has per-head weights; returns the paths written."""
    paths = []
    for name, translation in zip(names, translations, strict=True):
        if translation.attention is None:
            continue
        title = f"{name}: {translation.text}"[:120]
        pieces = (translation.source_pieces, translation.output_pieces)
        paths.append(
            plot_attention(translation.attention.numpy(), *pieces, Path(out_dir) / f"{name}.png", title)
        )
        if translation.heads is not None:
            heads = translation.heads.numpy()
            paths.append(plot_attention_heads(heads, *pieces, Path(out_dir) / f"{name}_heads.png", title))
    return paths


def draw_attention_maps(
    translator: Translator,
    sources: Sequence[str],
    count: int,
    out_dir: Path,
    loggers: Sequence[Logger],
    prefix: str,
    step: int | None = None,
    heads: bool = False,
) -> list[Path]:
    """Translate ``count`` of ``sources`` spread over lengths and save their attention as
    ``<out_dir>/<prefix>_<index>.png`` (index in ``sources``), logged to W&B under ``<prefix>/attention``;
    with ``heads`` (a Transformer decoder) also every layer's heads as ``<prefix>_<index>_heads.png``.

    The caller checks that the model has attention (:data:`~seq2seq.inference.translator.NO_ATTENTION` otherwise).
    """
    picks = pick_examples(sources, count)
    if not picks:
        return []
    translations = translator.translate(
        [sources[i] for i in picks], return_attention=True, return_heads=heads
    )
    names = [f"{prefix}_{i:05d}" for i in picks]
    paths = save_attention_maps(translations, names, out_dir)
    captions = []  # one per path saved, in order
    for name, t in zip(names, translations, strict=True):
        if t.attention is not None:
            captions.append(f"{name}: {t.source} → {t.text}")
        if t.attention is not None and t.heads is not None:
            captions.append(f"{name} (per layer and head): {t.source} → {t.text}")
    log_images(loggers, f"{prefix}/attention", paths, captions, step=step)
    return paths


def with_val(metrics: dict[str, float], best_val: Mapping[str, Any] | None, best_bleu: float | None) -> dict:
    """Add the best validation's ``val/bleu`` (NaN when none ran), its ``val/bleu_ci`` (when resampled) and
    attention entropy to ``metrics``."""
    metrics = {**metrics, "val/bleu": float(best_bleu) if best_bleu is not None else float("nan")}
    if best_val and (best_val.get("intervals") or {}).get("bleu"):
        metrics["val/bleu_ci"] = best_val["intervals"]["bleu"]
    if best_val and best_val.get("attention_entropy") is not None:
        metrics["val/attention_entropy"] = best_val["attention_entropy"]
    return metrics
