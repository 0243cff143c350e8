"""The sweep dashboard, built only from files on disk: ``<out_dir>/index.html`` and its PNGs.

Reads every ``results.json`` under a sweep (Hydra multirun) directory, plus each job's ``metrics.csv``,
``plots/attention/*.png`` and ``influence.json`` when present, and writes (default ``<sweep_dir>/dashboard/``):

1. BLEU vs. source length, one line per model variant (the view of Bahdanau et al. 2015, Fig. 2);
   empty length buckets are gaps, not zeros.
2. test BLEU vs. hidden size, one line per attention variant (when the sweep has several sizes).
3. a sortable table of all jobs (only the columns that differ; what all share above it), failed, interrupted
   and never-run jobs each marked as such, with their error.
4. training curves (train/loss, val/bleu vs. step), accuracy by output position, attention heatmaps.
5. influence by source position, one line per variant (``seq2seq.analysis.influence``, docs/influence.md).
6. on toy data, alignment with the gold word alignment: accuracy by source length per job and, for
   Transformer decoders, each job's accuracy per layer and head (``plots/alignment_heads.png``).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from seq2seq.dashboard import figures, seeds
from seq2seq.dashboard.html import format_value, render_page
from seq2seq.dashboard.runs import NEVER_RAN, Run, job_table, load_runs, never_ran

STATUSES = ("completed", "failed", "interrupted", NEVER_RAN)
ROW_STYLES = {"failed": "red", "interrupted": "yellow", NEVER_RAN: "dim"}
INFLUENCE_CAPTION = (
    "Norm of the gradient of log p(reference) with respect to each source embedding, normalised per "
    "sentence and shown as n·p (1 = every token equally), averaged over the test sentences; one line per job "
    "with an influence.json (docs/influence.md)."
)


def sweep_name(sweep_dir: Path) -> str:
    """The last two parts of the path, e.g. "2024-01-01/12-00-00" for a Hydra multirun dir."""
    return "/".join(Path(sweep_dir).resolve().parts[-2:])


def build_dashboard(sweep_dir: Path, out_dir: Path | None = None, baseline: str | None = None) -> Path:
    """Write the dashboard (index.html and its PNGs) for `sweep_dir`; returns the path of index.html."""
    return write_dashboard(load_runs(sweep_dir), Path(sweep_dir), out_dir, baseline)


def write_dashboard(
    runs: list[Run], sweep_dir: Path, out_dir: Path | None = None, baseline: str | None = None
) -> Path:
    """Write index.html and the PNGs for `runs` into `out_dir` (default `<sweep_dir>/dashboard`); the paired
    tests take job `baseline`'s variant as the baseline (default: attention=none, else the first); the jobs a
    multirun planned but never ran (``sweep.json``) are listed as such."""
    out_dir = Path(out_dir) if out_dir is not None else sweep_dir / "dashboard"
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [*runs, *never_ran(runs, sweep_dir)]
    results = [
        ("BLEU by source length bucket, one line per model variant (cf. Bahdanau et al. 2015, Fig. 2); "
         "empty buckets are gaps. Colour = attention, line style = encoder, in every figure.",
         figures.bleu_by_length(runs, out_dir / "bleu_by_length.png")),
        ("Test BLEU vs. hidden size, one line per attention variant (seeds averaged).",
         figures.bleu_vs_hidden(runs, out_dir / "bleu_vs_hidden.png")),
        ("Free-running token accuracy (%) by output position on the test split: the decoder fed its own "
         "previous outputs.", figures.position_accuracy(runs, out_dir / "position_accuracy.png")),
    ]  # fmt: skip
    if any(run.alignment for run in runs):
        results.append(
            ("Test alignment accuracy by source length bucket: % of target words whose attention argmax is "
             "the gold source word (teacher-forced; Transformer: last layer, heads averaged).",
             figures.alignment_by_length(runs, out_dir / "alignment_by_length.png"))
        )  # fmt: skip
    curves = figures.training_curves(runs, out_dir / "training_curves.png")
    influence = figures.influence(runs, out_dir / "influence.png")
    tables, seed_figures = seed_section([run for run in runs if run.status != NEVER_RAN], out_dir, baseline)
    columns, rows, shared = job_table(runs)
    counts = Counter(run.status for run in runs)
    tally = ", ".join(f"{counts[status]} {status}" for status in STATUSES if counts[status])
    page = render_page(
        title=f"Sweep {sweep_name(sweep_dir)}",
        subtitle=f"{len(runs)} jobs: {tally} · {sweep_dir.resolve()} · generated {datetime.now():%Y-%m-%d %H:%M}",
        results=results,
        columns=columns,
        rows=rows,
        shared=shared,
        training=[("Training curves from each job's metrics.csv.", curves)],
        heatmaps=[(r.job, r.heatmaps) for r in runs if r.heatmaps],
        head_maps=[(r.job, r.head_map) for r in runs if r.head_map],
        influence=[(INFLUENCE_CAPTION, influence)] if isinstance(influence, Path) else [],
        seeds=tables,
        seed_figures=seed_figures,
    )
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def seed_section(runs: list[Run], out_dir: Path, baseline: str | None = None) -> tuple[list, list]:
    """The tables and figure of the seeds and significance section (:mod:`seq2seq.dashboard.seeds`)."""
    columns, rows = seeds.variant_table(runs)
    tables = (
        [
            (
                "Per variant (jobs equal but for their seed): test scores as mean ± sample standard deviation "
                "(min–max, number of seeds), and each seed's 95 % bootstrap interval (sacrebleu).",
                columns,
                rows,
            )
        ]
        if any(len(row[1].split(",")) > 1 for row in rows) or len(rows) > 1
        else []
    )
    label, columns, rows = seeds.significance_table(runs, baseline=baseline)
    if rows:
        tables.append(
            (
                f"Paired tests of each job against the baseline {label} (its job of the same seed): "
                "sacrebleu's paired bootstrap (1000 resamples) and approximate randomization (10000 trials), "
                "test BLEU, two-sided p.",
                columns,
                rows,
            )
        )
    figure = seeds.bleu_by_length_over_seeds(runs, out_dir / "bleu_by_length_seeds.png")
    captions = "Test BLEU by source length, mean over each variant's seeds; the band spans the lowest to the highest seed."
    return tables, [(captions, figure)] if figure else []


def print_summary(runs: list[Run], console: Console) -> None:
    """The job table in the terminal (rich): failed jobs in red with their error, interrupted in yellow."""
    columns, rows, shared = job_table(runs)
    table = Table(title=f"{len(runs)} jobs", header_style="bold")
    for i, column in enumerate(columns):
        numeric = any(isinstance(row.cells[i], int | float) for row in rows)
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(*(escape(format_value(v)) for v in row.cells), style=ROW_STYLES.get(row.status))
    console.print(table)
    if shared:
        console.print(
            "every job: " + ", ".join(f"{k}={format_value(v)}" for k, v in shared.items()), highlight=False
        )
    for row in rows:
        if row.error:
            console.print(
                f"[red]job {escape(str(row.cells[0]))} {row.status}:[/red] {escape(row.error)}",
                highlight=False,
            )
