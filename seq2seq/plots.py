"""The figures every run and ``evaluate`` save as PNGs: BLEU by source length, attention heatmaps and
token accuracy by output position.

Built with matplotlib's object API (``Figure``, Agg canvas): no pyplot state, no display needed, safe in
any thread or process.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

MAX_LABELLED = 60  # longer axes keep every ``step``-th label so they stay readable


def plot_bleu_by_length(
    series: Mapping[str, Sequence[dict]], path: str | Path, title: str = "BLEU by source length"
) -> Path:
    """One line per series (e.g. ``{"test": rows, "val": rows}``) over the length buckets of ``results.json``.

    Empty buckets (``n = 0``, BLEU null) are gaps, not zeros; each point is labelled with its ``n``.
    The buckets of the first series give the x axis (all series share ``eval.length_buckets``).
    """
    if not series:
        raise ValueError("plot_bleu_by_length needs at least one series of bleu_by_length rows")
    first = next(iter(series.values()))
    labels = [row["bucket"] for row in first]
    fig = Figure(figsize=(max(5.0, 0.9 * len(labels) + 2.0), 3.8), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(labels))
    top = 0.0
    for name, rows in series.items():
        y = np.array([math.nan if row["bleu"] is None else row["bleu"] for row in rows], dtype=float)
        (line,) = ax.plot(x[: len(y)], y, marker="o", label=name)
        top = max([top, *y[~np.isnan(y)]])
        for xi, yi, row in zip(x, y, rows, strict=False):
            if not math.isnan(yi):
                ax.annotate(
                    f"n={row['n']}",
                    (xi, yi),
                    textcoords="offset points",
                    xytext=(0, 6),
                    ha="center",
                    fontsize=7,
                    color=line.get_color(),
                )
    ax.set_xticks(x, labels)
    ax.set_xlabel("source length (words)")
    ax.set_ylabel("BLEU")
    ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)  # room for the n labels
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    return _save(fig, path)


def plot_attention(
    weights: np.ndarray | Sequence[Sequence[float]],
    source_pieces: Sequence[str],
    output_pieces: Sequence[str],
    path: str | Path,
    title: str = "",
) -> Path:
    """Heatmap of attention weights: rows are output tokens, columns source tokens, both labelled.

    Args:
        weights: ``(T, S)`` with ``T = len(output_pieces)`` and ``S = len(source_pieces)``.
    """
    weights = np.asarray(weights, dtype=float)
    if weights.shape != (len(output_pieces), len(source_pieces)):
        raise ValueError(
            f"attention weights of shape {weights.shape} do not match {len(output_pieces)} output and "
            f"{len(source_pieces)} source pieces"
        )
    rows, cols = weights.shape
    fig = Figure(figsize=(min(16.0, 2.5 + 0.2 * cols), min(16.0, 2.0 + 0.2 * rows)), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    _label_axis(ax.set_xticks, source_pieces, rotation=90)
    _label_axis(ax.set_yticks, output_pieces)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="attention weight")
    return _save(fig, path)


def _label_axis(set_ticks, pieces: Sequence[str], rotation: int = 0) -> None:
    step = max(1, math.ceil(len(pieces) / MAX_LABELLED))
    positions = list(range(0, len(pieces), step))
    set_ticks(positions, [pieces[i] for i in positions], fontsize=7, rotation=rotation)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def plot_position_accuracy(
    curves: Mapping[str, Sequence[float | None]],
    path: str | Path,
    title: str = "token accuracy by output position",
) -> Path:
    """One line per curve of ``results.json``'s ``position_accuracy`` lists (percent; None = no data).

    Free-running against teacher-forced accuracy shows exposure bias: the gap that opens after the first error.
    """
    fig = Figure(figsize=(6.0, 3.6), layout="constrained")
    ax = fig.subplots()
    for name, curve in curves.items():
        y = np.array([math.nan if v is None else v for v in curve], dtype=float)
        ax.plot(np.arange(1, len(y) + 1), y, label=name)
    ax.set_xlabel("output position (tokens)")
    ax.set_ylabel("token accuracy (%)")
    ax.set_ylim(0, 102)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)
