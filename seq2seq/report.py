"""The sweep dashboard, built only from files on disk: `python -m seq2seq.report sweep_dir=DIR [out_dir=DIR]`.

Reads every `results.json` under a sweep (Hydra multirun) directory, plus each job's `metrics.csv`
(Lightning CSVLogger) and `plots/attention/*.png` when present, and writes `<out_dir>/index.html`
(default `<sweep_dir>/dashboard/`) with the figures beside it as PNGs:

1. BLEU vs. source length, one line per model variant (the view of Bahdanau et al. 2015, Fig. 2);
   empty length buckets are gaps, not zeros.
2. test BLEU vs. hidden size, one line per attention variant (when the sweep has several sizes).
3. a sortable table of all jobs, failed ones highlighted with their error.
4. training curves (train/loss, val/bleu vs. step), accuracy by output position, attention heatmaps.
5. influence by source position, one line per variant, from each job's `influence.json` when present
   (`python -m seq2seq.analysis.influence run_dir=<job dir>`, docs/influence.md).

It prints a summary table, and when W&B is online also creates a W&B Report (optional package
`wandb-workspaces`); offline it prints how to `wandb sync` the runs instead. It never prompts.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from seq2seq.console import make_console
from seq2seq.report_html import JobRow, format_value, render_page

SCHEMA = 1
ENCODER, ATTENTION = "model/encoder", "model/attention"
CHOICE_KEYS = ("data", ENCODER, ATTENTION, "teacher_forcing", "decoding")
SCORES = ("test/bleu", "test/chrf", "test/exact_match", "val/bleu")
CURVES = ("train/loss", "val/bleu")
MAX_HEATMAPS = 3  # attention PNGs shown per job
WANDB_TIMEOUT_S = 60.0  # the W&B report is given up after this long
INFLUENCE_CAPTION = (
    "Norm of the gradient of log p(reference) with respect to each source embedding, normalised per "
    "sentence and shown as n·p (1 = every token equally), averaged over the test sentences; one line per job "
    "with an influence.json (docs/influence.md)."
)


@dataclass
class Run:
    """One job of a sweep, as read from its `results.json` (DESIGN.md, schema 1)."""

    job: str  # job dir relative to the sweep dir, e.g. "3"
    path: Path  # the job dir
    status: str
    error: str | None = None
    choices: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    params: int | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    bleu_by_length: list[dict[str, Any]] = field(default_factory=list)
    train: dict[str, float | None] = field(default_factory=dict)
    position_accuracy: list[float] | None = None
    metrics_csv: Path | None = None
    heatmaps: list[Path] = field(default_factory=list)
    influence: dict[str, Any] | None = None  # influence.json (seq2seq.analysis.influence), when present

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def hidden_size(self) -> int | None:
        model = self.config.get("model")
        return model.get("hidden_size") if isinstance(model, dict) else None


def _natural_key(text: str) -> list[object]:
    """Sort "2" before "10": digits compare as numbers."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text)]


def _read_run(results: Path, sweep_dir: Path) -> Run:
    job_dir = results.parent
    job = job_dir.relative_to(sweep_dir).as_posix()
    if job == ".":  # sweep_dir is itself one run: name it, so runs of several such dirs stay apart
        job = job_dir.resolve().name
    try:
        data = json.loads(results.read_text())
    except (OSError, json.JSONDecodeError) as err:
        return Run(job, job_dir, "failed", f"{results}: cannot read results.json ({err})")
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        schema = data.get("schema") if isinstance(data, dict) else None
        return Run(
            job, job_dir, "failed", f"{results}: schema {schema!r} is not supported (expected {SCHEMA})"
        )
    csvs = sorted(job_dir.rglob("metrics.csv"), key=lambda p: _natural_key(p.as_posix()))
    return Run(
        job=job,
        path=job_dir,
        status=str(data.get("status") or "unknown"),
        error=data.get("error"),
        choices=data.get("choices") or {},
        config=data.get("config") or {},
        params=data.get("params"),
        metrics=data.get("metrics") or {},
        bleu_by_length=data.get("bleu_by_length") or [],
        train=data.get("train") or {},
        position_accuracy=data.get("position_accuracy"),
        metrics_csv=csvs[-1] if csvs else None,  # the newest CSVLogger version
        heatmaps=sorted(job_dir.glob("plots/attention/*.png"))[:MAX_HEATMAPS],
        influence=_read_influence(job_dir / "influence.json"),
    )


def _read_influence(path: Path) -> dict[str, Any] | None:
    """A job's influence analysis; None when absent, unreadable or of another schema (the figure skips it)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or "all" not in (data.get("groups") or {}):
        return None
    return data


def load_runs(sweep_dir: Path) -> list[Run]:
    """All jobs under `sweep_dir` (any depth), sorted by job dir; unreadable results count as failed jobs."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep_dir={sweep_dir} does not exist or is not a directory")
    found = sorted(sweep_dir.rglob("results.json"), key=lambda p: _natural_key(p.as_posix()))
    if not found:
        raise FileNotFoundError(
            f"no results.json found under sweep_dir={sweep_dir}; pass the Hydra multirun dir of a sweep "
            "(e.g. multirun/2024-01-01/12-00-00) whose jobs have finished or failed"
        )
    return [_read_run(path, sweep_dir) for path in found]


def _variant(run: Run, extra_keys: list[str], with_hidden: bool = True) -> str:
    label = f"{run.choices.get(ENCODER, '?')} + {run.choices.get(ATTENTION, '?')}"
    if with_hidden and run.hidden_size is not None:
        label += f", h={run.hidden_size}"
    return label + "".join(f", {key}={run.choices.get(key, '?')}" for key in extra_keys)


def _varying_choices(runs: list[Run]) -> list[str]:
    """Config groups other than encoder and attention whose choice differs across `runs`."""
    others = [k for k in dict.fromkeys(k for r in runs for k in r.choices) if k not in (ENCODER, ATTENTION)]
    return [k for k in others if len({r.choices.get(k) for r in runs}) > 1]


def variant_labels(runs: list[Run]) -> dict[str, str]:
    """Plot label per job, e.g. "gru + bahdanau, h=128".

    Choices other than encoder and attention are added only where they differ across `runs`; jobs that
    still share a label (e.g. seeds) get their job dir appended.
    """
    varying = _varying_choices(runs)
    base = {run.job: _variant(run, varying) for run in runs}
    counts = Counter(base.values())
    return {job: f"{label} [{job}]" if counts[label] > 1 else label for job, label in base.items()}


def bleu_by_length_series(runs: list[Run]) -> tuple[list[str], dict[str, list[float | None]]]:
    """Figure 1's data: the bucket axis (sorted by length) and, per variant, BLEU per bucket.

    Only completed runs count. A bucket with n=0 (or one a run lacks) is None, so it plots as a gap.
    """
    runs = [r for r in runs if r.completed and r.bleu_by_length]
    bounds = {b["bucket"]: (b.get("min_len", 0), b.get("max_len", 0)) for r in runs for b in r.bleu_by_length}
    buckets = sorted(bounds, key=lambda name: bounds[name])
    labels = variant_labels(runs)
    series = {}
    for run in runs:
        scores = {b["bucket"]: b.get("bleu") for b in run.bleu_by_length if b.get("n")}
        series[labels[run.job]] = [scores.get(bucket) for bucket in buckets]
    return buckets, series


def hidden_size_series(runs: list[Run]) -> dict[str, list[tuple[int, float]]]:
    """Figure 2's data: per variant (hidden size left out), (hidden size, test BLEU) sorted by size.

    Jobs of one variant and size (e.g. seeds) are averaged. Empty when the sweep has one hidden size only.
    """
    runs = [
        r
        for r in runs
        if r.completed and r.hidden_size is not None and r.metrics.get("test/bleu") is not None
    ]
    if len({r.hidden_size for r in runs}) < 2:
        return {}
    varying = _varying_choices(runs)
    scores: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        scores[_variant(run, varying, with_hidden=False)][run.hidden_size].append(run.metrics["test/bleu"])
    return {
        label: [(size, sum(v) / len(v)) for size, v in sorted(by_size.items())]
        for label, by_size in scores.items()
    }


def read_metric_curves(csv_path: Path, names: tuple[str, ...] = CURVES) -> dict[str, list[tuple[int, float]]]:
    """(step, value) points per metric from a Lightning CSVLogger `metrics.csv` (sparse rows)."""
    curves: dict[str, list[tuple[int, float]]] = {name: [] for name in names}
    with open(csv_path, newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                step = int(float(row.get("step") or ""))
            except ValueError:
                continue
            for name in names:
                try:
                    curves[name].append((step, float(row.get(name) or "")))
                except ValueError:
                    continue
    return curves


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _legend(ax: Any) -> None:
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)


def plot_bleu_by_length(runs: list[Run], path: Path) -> Path | None:
    """Figure 1: BLEU vs. source length bucket, one line per variant; None when no run has buckets."""
    buckets, series = bleu_by_length_series(runs)
    if not series:
        return None
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    for label, values in series.items():
        ax.plot(range(len(buckets)), [math.nan if v is None else v for v in values], marker="o", label=label)
    ax.set_xticks(range(len(buckets)), buckets)
    ax.set(xlabel="source length (words)", ylabel="test BLEU", title="BLEU by source length")
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def plot_bleu_vs_hidden(runs: list[Run], path: Path) -> Path | None:
    """Figure 2: test BLEU vs. hidden size, one line per attention variant; None with one size only."""
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


def plot_training_curves(runs: list[Run], path: Path) -> Path | None:
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


def plot_position_accuracy(runs: list[Run], path: Path) -> Path | None:
    """Token accuracy by output position, one line per completed job that reports it."""
    with_acc = [r for r in runs if r.completed and r.position_accuracy]
    if not with_acc:
        return None
    labels = variant_labels(with_acc)
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    for run in with_acc:
        ax.plot(range(1, len(run.position_accuracy) + 1), run.position_accuracy, label=labels[run.job])
    ax.set(xlabel="output position", ylabel="accuracy", title="Accuracy by output position")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def plot_influence(runs: list[Run], path: Path) -> Path | None:
    """Influence by relative and absolute source position (all test sentences), one line per job with an
    `influence.json`; None when no job has one."""
    with_influence = [r for r in runs if r.influence]
    if not with_influence:
        return None
    labels = variant_labels(with_influence)
    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2)
    for run in with_influence:
        every = run.influence["groups"]["all"]
        edges = every["relative"]["edges"]
        centres = [(lo + hi) / 2 for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
        for ax, x, curve in (
            (axes[0], centres, every["relative"]),
            (axes[1], every["absolute"]["positions"], every["absolute"]),
        ):
            ax.plot(
                x, [math.nan if m is None else m for m in curve["mean"]], marker=".", label=labels[run.job]
            )
    for ax, xlabel in zip(
        axes, ("relative source position (position / length)", "source position"), strict=True
    ):
        ax.axhline(1.0, color="k", linestyle="--", linewidth=0.8)
        ax.set(xlabel=xlabel, ylabel="relative influence n·p (uniform = 1)")
        ax.grid(alpha=0.3)
    axes[0].set(xlim=(0, 1), title="by relative position")
    axes[1].set_title("by position from the start")
    _legend(axes[1])
    return _save(fig, path)


def job_table(runs: list[Run]) -> tuple[list[str], list[JobRow]]:
    """The columns and rows of the job table (raw values; the page and the terminal format them)."""
    choice_keys = list(dict.fromkeys([*CHOICE_KEYS, *(k for r in runs for k in r.choices)]))
    choice_keys = [k for k in choice_keys if any(k in r.choices for r in runs)]
    columns = ["job", "status", *choice_keys, "hidden", "params", *SCORES, "wall s", "tokens/s"]
    rows = [
        JobRow(
            cells=[
                run.job,
                run.status,
                *(run.choices.get(k) for k in choice_keys),
                run.hidden_size,
                run.params,
                *(run.metrics.get(k) for k in SCORES),
                run.train.get("wall_s"),
                run.train.get("tokens_per_s"),
            ],
            status=run.status,
            error=run.error,
        )
        for run in runs
    ]
    return columns, rows


def build_dashboard(sweep_dir: Path, out_dir: Path | None = None) -> Path:
    """Write the dashboard (index.html and its PNGs) for `sweep_dir`; returns the path of index.html."""
    return write_dashboard(load_runs(sweep_dir), Path(sweep_dir), out_dir)


def _sweep_name(sweep_dir: Path) -> str:
    """The last two parts of the path, e.g. "2024-01-01/12-00-00" for a Hydra multirun dir."""
    return "/".join(Path(sweep_dir).resolve().parts[-2:])


def write_dashboard(runs: list[Run], sweep_dir: Path, out_dir: Path | None = None) -> Path:
    """Write index.html and the PNGs for `runs` into `out_dir` (default `<sweep_dir>/dashboard`)."""
    out_dir = Path(out_dir) if out_dir is not None else sweep_dir / "dashboard"
    out_dir.mkdir(parents=True, exist_ok=True)
    results = [
        ("BLEU by source length bucket, one line per model variant (cf. Bahdanau et al. 2015, Fig. 2); "
         "empty buckets are gaps.", plot_bleu_by_length(runs, out_dir / "bleu_by_length.png")),
        ("Test BLEU vs. hidden size, one line per attention variant (seeds averaged).",
         plot_bleu_vs_hidden(runs, out_dir / "bleu_vs_hidden.png")),
        ("Token accuracy by output position.", plot_position_accuracy(runs, out_dir / "position_accuracy.png")),
    ]  # fmt: skip
    curves = plot_training_curves(runs, out_dir / "training_curves.png")
    influence = plot_influence(runs, out_dir / "influence.png")
    columns, rows = job_table(runs)
    failed = sum(r.status == "failed" for r in runs)
    completed = sum(r.completed for r in runs)
    page = render_page(
        title=f"Sweep {_sweep_name(sweep_dir)}",
        subtitle=f"{len(runs)} jobs: {completed} completed, {failed} failed · {sweep_dir.resolve()} · "
        f"generated {datetime.now():%Y-%m-%d %H:%M}",
        results=[(caption, png) for caption, png in results if png is not None],
        columns=columns,
        rows=rows,
        training=[("Training curves from each job's metrics.csv.", curves)] if curves else [],
        heatmaps=[(r.job, r.heatmaps) for r in runs if r.heatmaps],
        influence=[(INFLUENCE_CAPTION, influence)] if influence else [],
    )
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def print_summary(runs: list[Run], console: Console) -> None:
    """The job table in the terminal (rich), failed jobs in red with their error."""
    columns, rows = job_table(runs)
    table = Table(title=f"{len(runs)} jobs", header_style="bold")
    for i, column in enumerate(columns):
        numeric = any(isinstance(row.cells[i], int | float) for row in rows)
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        style = "red" if row.status == "failed" else None
        table.add_row(*(escape(format_value(v)) for v in row.cells), style=style)
    console.print(table)
    for row in rows:
        if row.error:
            console.print(
                f"[red]job {escape(str(row.cells[0]))} failed:[/red] {escape(row.error)}", highlight=False
            )


def _create_wandb_report(sweep_dir: Path, runs: list[Run]) -> str | None:
    """Save a W&B Report (package `wandb-workspaces`) for the sweep's project; None without an API key."""
    import wandb
    import wandb_workspaces.reports.v2 as wr

    if not wandb.login(prompt=False, verify=False):
        return None
    logger = next((r.config["logger"] for r in runs if isinstance(r.config.get("logger"), dict)), {})
    project = logger.get("project") or os.environ.get("WANDB_PROJECT") or "seq2seq"
    entity = logger.get("entity") or os.environ.get("WANDB_ENTITY") or wandb.Api().default_entity
    panels = [
        wr.BarPlot(title="test BLEU", metrics=["test/bleu"]),
        wr.LinePlot(title="val/bleu", x="Step", y=["val/bleu"]),
        wr.LinePlot(title="train/loss", x="Step", y=["train/loss"]),
    ]
    report = wr.Report(
        project=project,
        entity=entity,
        title=f"Sweep {_sweep_name(sweep_dir)}",
        description=f"{len(runs)} jobs from {Path(sweep_dir).resolve()}",
        blocks=[wr.PanelGrid(runsets=[wr.Runset(entity=entity, project=project)], panels=panels)],
    )
    report.save()
    return report.url


def maybe_wandb_report(
    sweep_dir: Path, runs: list[Run], console: Console, timeout_s: float = WANDB_TIMEOUT_S
) -> str | None:
    """Create a W&B Report when W&B is online and logged in, else print how to sync; returns its URL.

    W&B must never fail or block the local dashboard: any problem (no key, no network, no package, an API
    change, no answer within `timeout_s`) is printed in one line and skipped.
    """
    hint = f"W&B report skipped; to upload offline runs: wandb sync {sweep_dir}/**/wandb/offline-run-*"
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        console.print(hint, highlight=False, soft_wrap=True)
        return None
    outcome: dict[str, Any] = {}

    def create() -> None:
        try:
            outcome["url"] = _create_wandb_report(sweep_dir, runs)
        except ImportError as err:
            outcome["why"] = f"{err.name} is not installed; pip install wandb-workspaces"
        except Exception as err:  # see the docstring: report and skip, whatever it is
            outcome["why"] = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"

    worker = threading.Thread(target=create, daemon=True)  # a daemon: a hung request cannot hold the exit
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        outcome["why"] = f"no answer from W&B within {timeout_s:g} s"
    elif outcome.get("url") is None and "why" not in outcome:
        outcome["why"] = "no W&B API key configured"
    if "why" in outcome:
        console.print(f"{hint} ({outcome['why']})", highlight=False, soft_wrap=True)
        return None
    console.print(f"W&B report: {outcome['url']}", highlight=False, soft_wrap=True)
    return outcome["url"]


def parse_args(argv: list[str]) -> dict[str, str]:
    """`sweep_dir=DIR [out_dir=DIR]` (Hydra-style key=value) → dict; a clear error for anything else."""
    allowed = ("sweep_dir", "out_dir")
    args = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in allowed or not value:
            raise ValueError(
                f"unexpected argument {arg!r}; usage: python -m seq2seq.report sweep_dir=DIR [out_dir=DIR]"
            )
        args[key] = value
    if "sweep_dir" not in args:
        raise ValueError("missing sweep_dir=DIR; usage: python -m seq2seq.report sweep_dir=DIR [out_dir=DIR]")
    return args


def main(argv: list[str] | None = None) -> int:
    console = make_console()
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        sweep_dir = Path(args["sweep_dir"])
        runs = load_runs(sweep_dir)
    except (ValueError, FileNotFoundError) as err:
        Console(stderr=True).print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        return 2
    index = write_dashboard(runs, sweep_dir, args.get("out_dir"))
    print_summary(runs, console)
    maybe_wandb_report(sweep_dir, runs, console)
    console.print(f"dashboard: {index.resolve()}", highlight=False, soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
