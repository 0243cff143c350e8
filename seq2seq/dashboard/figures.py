"""The dashboard's figures, one per function; each returns its PNG, or None when no job has the data.

The figures a single run also draws (BLEU by length, accuracy by position, influence) come from
:mod:`seq2seq.evaluation.plots` with one line per job; the sweep-only ones (BLEU vs. hidden size, training
curves) are drawn here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from seq2seq.dashboard.runs import CURVES, Run, hidden_size_series, read_metric_curves, variant_labels
from seq2seq.evaluation import plots


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _legend(ax: Any) -> None:
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)


def bleu_by_length(runs: list[Run], path: Path) -> Path | None:
    """Test BLEU vs. source length bucket, one line per completed variant."""
    done = [r for r in runs if r.completed and r.bleu_by_length]
    if not done:
        return None
    labels = variant_labels(done)
    rows = {labels[run.job]: run.bleu_by_length for run in done}
    return plots.plot_bleu_by_length(rows, path, title="test BLEU by source length", annotate_n=False)


def bleu_vs_hidden(runs: list[Run], path: Path) -> Path | None:
    """Test BLEU vs. hidden size, one line per attention variant; None with one size only."""
    series = hidden_size_series(runs)
    if not series:
        return None
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for label, points in series.items():
        ax.plot([s for s, _ in points], [b for _, b in points], marker="o", label=label)
    sizes = sorted({s for points in series.values() for s, _ in points})
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set(xlabel="hidden size", ylabel="test BLEU", title="BLEU vs. hidden size")
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def training_curves(runs: list[Run], path: Path) -> Path | None:
    """train/loss and val/bleu vs. step, one line per job with a metrics.csv."""
    with_csv = [r for r in runs if r.metrics_csv is not None]
    if not with_csv:
        return None
    labels = variant_labels(with_csv)
    fig = Figure(figsize=(12, 4))
    axes = fig.subplots(1, len(CURVES))
    for run in with_csv:
        curves = read_metric_curves(run.metrics_csv)
        for ax, name in zip(axes, CURVES, strict=True):
            if curves[name]:
                ax.plot(*zip(*curves[name], strict=True), label=f"{run.job}: {labels[run.job]}")
    for ax, name in zip(axes, CURVES, strict=True):
        ax.set(xlabel="step", ylabel=name, title=name)
        ax.grid(alpha=0.3)
    _legend(axes[-1])
    return _save(fig, path)


def position_accuracy(runs: list[Run], path: Path) -> Path | None:
    """Free-running token accuracy by output position, one line per completed job that reports it."""
    with_acc = [r for r in runs if r.completed and r.position_accuracy]
    if not with_acc:
        return None
    labels = variant_labels(with_acc)
    curves = {labels[run.job]: run.position_accuracy for run in with_acc}
    return plots.plot_position_accuracy(
        curves, path, title="token accuracy by output position (free-running)"
    )


def influence(runs: list[Run], path: Path) -> Path | None:
    """Influence by relative and absolute source position (all test sentences), one line per job with an
    ``influence.json``."""
    with_influence = [r for r in runs if r.influence]
    if not with_influence:
        return None
    labels = variant_labels(with_influence)
    groups = {labels[run.job]: run.influence["groups"]["all"] for run in with_influence}
    return plots.plot_influence(groups, path, "Source influence on log p(reference), all test sentences")
