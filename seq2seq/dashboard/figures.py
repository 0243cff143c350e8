"""The dashboard's figures, one per function; each returns its PNG, or a sentence saying why nothing was
drawn (the page shows it in the figure's place).

Every line has its variant's look (:func:`seq2seq.evaluation.style.variant_style`: colour = attention, line
style = encoder), the same in every figure; BLEU axes span 0–100; a panel without data says why.

The figures a single run also draws (BLEU by length, accuracy by position, influence) come from
:mod:`seq2seq.evaluation.plots` with one line per job; the sweep-only ones (BLEU vs. hidden size, training
curves) are drawn here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from seq2seq.dashboard.runs import (
    CURVES,
    Run,
    hidden_size_series,
    read_metric_curves,
    variant_labels,
    varying_choices,
)
from seq2seq.evaluation import plots
from seq2seq.evaluation.style import variant_style

Drawn = Path | str  # the PNG, or why it was not drawn

NO_VALIDATION = (
    "no validation ran: training ended before the first one (trainer.val_check_interval, "
    "check_val_every_n_epoch, max_steps) or limit_val_batches=0"
)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _legend(ax: Any) -> None:
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)


def _styles(runs: list[Run], labels: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {labels[run.job]: variant_style(run.choices) for run in runs}


def _say_empty(ax: Any, why: str) -> None:
    """Write ``why`` in the middle of an axes that has no data."""
    ax.text(
        0.5, 0.5, why, ha="center", va="center", wrap=True, fontsize=9, color="#555", transform=ax.transAxes
    )


def bleu_by_length(runs: list[Run], path: Path) -> Drawn:
    """Test BLEU vs. source length bucket, one line per completed variant."""
    done = [r for r in runs if r.completed and r.bleu_by_length]
    if not done:
        return "BLEU by source length: no completed job with a scored test split yet."
    labels = variant_labels(done)
    rows = {labels[run.job]: run.bleu_by_length for run in done}
    return plots.plot_bleu_by_length(
        rows, path, title="test BLEU by source length", annotate_n=False, styles=_styles(done, labels)
    )


def alignment_by_length(runs: list[Run], path: Path) -> Drawn:
    """Test alignment accuracy (%) by source length bucket, one line per completed job scored against the toy
    task's gold word alignment (``results.json``'s ``alignment``)."""
    done = [r for r in runs if r.completed and r.alignment and r.alignment.get("by_length")]
    if not done:
        return "Alignment: no completed job was scored against gold alignments (data=toy_translation with attention)."
    labels = variant_labels(done)
    rows = {
        labels[run.job]: [{**row, "bleu": row["accuracy"]} for row in run.alignment["by_length"]]
        for run in done
    }
    return plots.plot_bleu_by_length(
        rows,
        path,
        title="test alignment accuracy by source length",
        annotate_n=False,
        styles=_styles(done, labels),
        ylabel="attention argmax on the gold word (%)",
    )


def bleu_vs_hidden(runs: list[Run], path: Path) -> Drawn:
    """Test BLEU vs. hidden size, one line per attention variant."""
    series = hidden_size_series(runs)
    if not series:
        sizes = sorted({r.hidden_size for r in runs if r.completed and r.hidden_size is not None})
        return (
            f"BLEU vs. hidden size: not drawn, the completed jobs have {len(sizes)} hidden size(s) {sizes}."
        )
    varying = varying_choices([r for r in runs if r.completed])
    looks = {run.label(hidden=False, extra=varying): variant_style(run.choices) for run in runs}
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for label, points in series.items():
        ax.plot([s for s, _ in points], [b for _, b in points], **looks.get(label, {}), label=label)
    sizes = sorted({s for points in series.values() for s, _ in points})
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set(xlabel="hidden size", ylabel="test BLEU", title="BLEU vs. hidden size", ylim=(0, 100))
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def training_curves(runs: list[Run], path: Path) -> Drawn:
    """train/loss and val/bleu vs. step, one line per job with a metrics.csv; one legend, beside the axes
    that hold lines; an axes without any point says why."""
    with_csv = [r for r in runs if r.metrics_csv is not None]
    if not with_csv:
        return "Training curves: no job has a metrics.csv yet."
    labels = variant_labels(with_csv)
    fig = Figure(figsize=(12, 4))
    axes = fig.subplots(1, len(CURVES))
    for run in with_csv:
        curves = read_metric_curves(run.metrics_csv)
        for ax, name in zip(axes, CURVES, strict=True):
            if curves[name]:
                points = curves[name]
                style = {**variant_style(run.choices), "marker": "o" if len(points) < 3 else None}
                ax.plot(*zip(*points, strict=True), **style, label=f"{run.job}: {labels[run.job]}")
    for ax, name in zip(axes, CURVES, strict=True):
        ax.set(xlabel="step", ylabel=name, title=name)
        ax.grid(alpha=0.3)
        if name.endswith("bleu"):
            ax.set_ylim(0, 100)
        if not ax.get_lines():
            _say_empty(ax, NO_VALIDATION if name.startswith("val/") else f"no job logged {name}")
    with_lines = [ax for ax in axes if ax.get_lines()]
    if with_lines:
        _legend(with_lines[-1])
    return _save(fig, path)


def position_accuracy(runs: list[Run], path: Path) -> Drawn:
    """Free-running token accuracy (%) by output position, one line per completed job that reports it."""
    with_acc = [r for r in runs if r.completed and r.position_accuracy]
    if not with_acc:
        return "Token accuracy by output position: no completed job reports it."
    labels = variant_labels(with_acc)
    curves = {labels[run.job]: run.position_accuracy for run in with_acc}
    return plots.plot_position_accuracy(
        curves,
        path,
        title="free-running token accuracy (%) by output position (test)",
        styles=_styles(with_acc, labels),
    )


def influence(runs: list[Run], path: Path) -> Drawn:
    """Influence by relative and absolute source position (all test sentences), one line per job with an
    ``influence.json``."""
    with_influence = [r for r in runs if r.influence]
    if not with_influence:
        return "Influence: no job has an influence.json (make influence RUN=<job dir>)."
    labels = variant_labels(with_influence)
    groups = {labels[run.job]: run.influence["groups"]["all"] for run in with_influence}
    return plots.plot_influence(groups, path, "Source influence on log p(reference), all test sentences")
