"""The figures of runs, evaluations, analyses and the dashboard: BLEU by source length, attention heatmaps,
token accuracy by output position, influence by source position and alignment accuracy per attention head.

Built with matplotlib's object API (``Figure``, Agg canvas): no pyplot state, no display needed, safe in
any thread or process.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from seq2seq.evaluation.style import attention_colour

MAX_LABELLED = 60  # longer axes keep every ``step``-th label so they stay readable


def length_series(
    named_rows: Mapping[str, Sequence[dict]],
) -> tuple[list[str], dict[str, list[float | None]], dict[str, list[int]]]:
    """The bucket axis and, per name, BLEU and ``n`` per bucket, from ``bleu_by_length`` rows.

    Buckets of all series are united and ordered by length; a bucket a series lacks, or holds no sentence
    of (``n = 0``), is None: a gap, never a zero.
    """
    bounds = {
        row["bucket"]: (row.get("min_len") or 0, row.get("max_len") or math.inf)
        for rows in named_rows.values()
        for row in rows
    }
    buckets = sorted(bounds, key=lambda name: bounds[name])
    values, counts = {}, {}
    for name, rows in named_rows.items():
        by_bucket = {row["bucket"]: row for row in rows}
        values[name] = [
            by_bucket[b]["bleu"] if b in by_bucket and by_bucket[b].get("n") else None for b in buckets
        ]
        counts[name] = [by_bucket[b].get("n", 0) if b in by_bucket else 0 for b in buckets]
    return buckets, values, counts


def length_intervals(
    named_rows: Mapping[str, Sequence[dict]], buckets: Sequence[str]
) -> dict[str, list[list[float] | None]]:
    """Per name, the ``bleu_ci`` ``[low, high]`` of each of ``buckets`` (None: empty, missing or not resampled)."""
    intervals = {}
    for name, rows in named_rows.items():
        by_bucket = {row["bucket"]: row for row in rows}
        intervals[name] = [(by_bucket.get(b) or {}).get("bleu_ci") or None for b in buckets]
    return intervals


def _error_bars(ax, x: np.ndarray, y: np.ndarray, bounds: Sequence[list[float] | None], color: str) -> float:
    """Draw 95 % intervals as error bars around ``y`` (points without one get none); returns the top end."""
    has = np.array([b is not None and not math.isnan(v) for b, v in zip(bounds, y, strict=True)], dtype=bool)
    if not has.any():
        return 0.0
    low = np.array([b[0] for b, h in zip(bounds, has, strict=True) if h])
    high = np.array([b[1] for b, h in zip(bounds, has, strict=True) if h])
    centre = y[has]
    yerr = np.vstack([np.maximum(centre - low, 0), np.maximum(high - centre, 0)])
    ax.errorbar(x[has], centre, yerr=yerr, fmt="none", ecolor=color, capsize=3, alpha=0.7, linewidth=1)
    return float(high.max())


def plot_bleu_by_length(
    named_rows: Mapping[str, Sequence[dict]],
    path: str | Path,
    title: str = "BLEU by source length",
    annotate_n: bool = True,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
    ylabel: str = "BLEU",
) -> Path:
    """One line per series (e.g. ``{"test": rows, "val (best)": rows}``, or one per run of a sweep) over the
    length buckets of ``results.json``'s ``bleu_by_length`` rows (:func:`length_series`); any other 0–100 score
    by length in the rows' ``bleu`` key, named by ``ylabel`` (the dashboard's alignment accuracy).

    Empty buckets are gaps, not zeros; with ``annotate_n`` each point is labelled with its ``n``. Rows with
    ``bleu_ci`` get 95 % error bars. The y axis is BLEU's whole range, 0–100, in every figure, so a line near
    0 does not look like a result and figures compare at a glance. ``styles``: name → ``plot`` keywords
    (:func:`seq2seq.evaluation.style.variant_style`), the same look per variant in every figure.
    """
    if not named_rows:
        raise ValueError("plot_bleu_by_length needs at least one series of bleu_by_length rows")
    buckets, values, counts = length_series(named_rows)
    intervals = length_intervals(named_rows, buckets)
    fig = Figure(figsize=(max(5.0, 0.9 * len(buckets) + 2.0), 3.8), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(buckets))
    for name, curve in values.items():
        y = np.array([math.nan if v is None else v for v in curve], dtype=float)
        (line,) = ax.plot(x, y, **{"marker": "o", **(styles or {}).get(name, {})}, label=name)
        _error_bars(ax, x, y, intervals[name], line.get_color())
        if not annotate_n:
            continue
        for xi, yi, n in zip(x, y, counts[name], strict=True):
            if not math.isnan(yi):
                ax.annotate(
                    f"n={n}",
                    (xi, yi),
                    textcoords="offset points",
                    xytext=(0, 6),
                    ha="center",
                    fontsize=7,
                    color=line.get_color(),
                )
    ax.set_xticks(x, buckets)
    ax.set_xlabel("source length (words)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _legend(ax, len(values))
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


def plot_attention_heads(
    heads: np.ndarray,
    source_pieces: Sequence[str],
    output_pieces: Sequence[str],
    path: str | Path,
    title: str = "",
) -> Path:
    """One heatmap per decoder layer (rows) and cross-attention head (columns) of one translation, on a shared
    0–1 scale; output pieces label each row's first panel, source pieces the bottom row.

    Args:
        heads: ``(L, h, T, S)`` with ``T = len(output_pieces)`` and ``S = len(source_pieces)``.
    """
    heads = np.asarray(heads, dtype=float)
    if heads.ndim != 4 or heads.shape[2:] != (len(output_pieces), len(source_pieces)):
        raise ValueError(
            f"per-head attention of shape {heads.shape} does not match (layers, heads, {len(output_pieces)} "
            f"output, {len(source_pieces)} source pieces)"
        )
    layers, count, rows, cols = heads.shape
    width = min(6.0, 1.2 + 0.12 * cols, 30.0 / count)  # the whole figure at most 30 × 30 inches
    height = min(6.0, 1.0 + 0.12 * rows, 30.0 / layers)
    fig = Figure(figsize=(width * count, height * layers), layout="constrained")
    axes = np.atleast_2d(fig.subplots(layers, count, squeeze=False))
    for layer in range(layers):
        for head in range(count):
            ax = axes[layer, head]
            image = ax.imshow(
                heads[layer, head], cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest"
            )
            ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=8)
            if head == 0:
                _label_axis(ax.set_yticks, output_pieces)
            else:
                ax.set_yticks([])
            if layer == layers - 1:
                _label_axis(ax.set_xticks, source_pieces, rotation=90)
            else:
                ax.set_xticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.colorbar(image, ax=axes, fraction=0.02, pad=0.01, label="attention weight")
    return _save(fig, path)


def _label_axis(set_ticks, pieces: Sequence[str], rotation: int = 0) -> None:
    step = max(1, math.ceil(len(pieces) / MAX_LABELLED))
    positions = list(range(0, len(pieces), step))
    set_ticks(positions, [pieces[i] for i in positions], fontsize=7, rotation=rotation)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _legend(ax, lines: int) -> None:
    """A legend on the axes that hold the lines, for several lines: inside for a few, beside for many."""
    if not ax.get_legend_handles_labels()[0]:
        return
    if lines > 3:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    elif lines > 1:
        ax.legend()


def plot_position_accuracy(
    curves: Mapping[str, Sequence[float | None]],
    path: str | Path,
    title: str = "token accuracy (%) by output position",
    intervals: Mapping[str, Sequence[Sequence[float] | None]] | None = None,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """One line per curve of ``results.json``'s ``position_accuracy`` lists (percent; None = no data), with a
    band for each curve that has ``intervals`` (its ``*_ci`` list: Wilson 95 % ``[low, high]`` per position).

    Free-running against teacher-forced accuracy shows exposure bias: the gap that opens after the first error.
    """
    fig = Figure(figsize=(6.0, 3.6), layout="constrained")
    ax = fig.subplots()
    for name, curve in curves.items():
        y = np.array([math.nan if v is None else v for v in curve], dtype=float)
        x = np.arange(1, len(y) + 1)
        style = {**(styles or {}).get(name, {}), "marker": None}  # 60 positions: lines, no markers
        (line,) = ax.plot(x, y, **style, label=name)
        bounds = (intervals or {}).get(name) or []
        if bounds:
            low, high = (
                np.array([math.nan if b is None else b[k] for b in bounds], dtype=float) for k in (0, 1)
            )
            ax.fill_between(x[: len(low)], low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("output position (tokens)")
    ax.set_ylabel("token accuracy (%)")
    ax.set_ylim(0, 102)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _legend(ax, max(len(curves), 2))
    return _save(fig, path)


def plot_influence(groups: Mapping[str, dict], path: str | Path, title: str) -> Path:
    """Influence by relative and by absolute source position, one line per group (± one standard error).

    ``groups``: name → a group of ``influence.json`` (``n_sentences``, ``relative`` with ``edges``, and
    ``absolute`` with ``positions``, each holding per-bin ``mean``, ``std`` and ``n``); e.g. the length groups
    of one run, or the ``all`` group of each run of a sweep.
    """
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for name, group in groups.items():
        if not group["n_sentences"]:
            continue
        edges = np.asarray(group["relative"]["edges"])
        centres = (edges[:-1] + edges[1:]) / 2
        for ax, curve, x in (
            (axes[0], group["relative"], centres),
            (axes[1], group["absolute"], np.asarray(group["absolute"]["positions"])),
        ):
            mean, std, n = (np.array(curve[k], dtype=float) for k in ("mean", "std", "n"))  # None → nan
            sem = std / np.sqrt(np.maximum(n, 1))
            (line,) = ax.plot(x, mean, marker=".", label=f"{name} (n={group['n_sentences']})")
            ax.fill_between(x, mean - sem, mean + sem, color=line.get_color(), alpha=0.2)
    for ax, xlabel in zip(
        axes, ("relative source position (position / length)", "source position"), strict=True
    ):
        ax.axhline(1.0, color="k", linestyle="--", linewidth=0.8)
        ax.set(xlabel=xlabel, ylabel="relative influence n·p (uniform = 1)")
        ax.grid(alpha=0.3)
    axes[0].set(xlim=(0, 1), title="by relative position")
    axes[1].set_title("by position from the start")
    _legend(axes[1], max(len(groups), 2))
    fig.suptitle(title)
    return _save(fig, path)


def plot_alignment_heads(
    accuracy: np.ndarray | Sequence[Sequence[float | None]],
    path: str | Path,
    title: str,
    best: tuple[int, int] | None = None,
) -> Path:
    """Heatmap of alignment accuracy (%) per decoder layer (rows) and cross-attention head (columns), each cell
    labelled with its value; the last column is each layer's head average.

    Args:
        accuracy: ``(L, h + 1)`` percentages (None: no sentence judged), heads ``1 … h`` then the average.
        best: 0-based ``(layer, head)`` of the best single head, framed in the Transformer's colour.
    """
    values = np.array([[math.nan if v is None else v for v in row] for row in accuracy], dtype=float)
    layers, columns = values.shape
    fig = Figure(figsize=(2.4 + 0.9 * columns, 1.4 + 0.6 * layers), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=100.0, aspect="auto", interpolation="nearest")
    for (row, col), value in np.ndenumerate(values):
        text = "—" if math.isnan(value) else f"{value:.1f}"
        ax.text(col, row, text, ha="center", va="center", fontsize=8, color="w" if value < 60 else "k")
    if best is not None:
        row, col = best
        ax.add_patch(
            Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, lw=2.5, color=attention_colour("multihead"))
        )
    ax.set_xticks(range(columns), [*(str(h) for h in range(1, columns)), "mean"])
    ax.set_yticks(range(layers), [str(layer) for layer in range(1, layers + 1)])
    ax.set_xlabel("cross-attention head")
    ax.set_ylabel("decoder layer")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="alignment accuracy (%)")
    return _save(fig, path)
