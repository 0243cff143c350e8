"""The jobs of a sweep, read from disk: each job's run record plus its curves, heatmaps and influence.

:func:`load_runs` finds every ``results.json`` under a sweep (Hydra multirun) directory; the functions below
turn the runs into what the figures and the job table show.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seq2seq.dashboard.html import JobRow
from seq2seq.evaluation.plots import length_series
from seq2seq.evaluation.record import CHOICE_GROUPS, RESULTS, SCHEMA, RecordError, RunRecord, read_sweep_plan

ENCODER, ATTENTION = "model/encoder", "model/attention"
SCORES = ("test/bleu", "test/chrf", "test/exact_match", "val/bleu")
ALIGNMENT = "test/alignment_accuracy"  # a column only when some job has it (toy data with attention)
CURVES = ("train/loss", "val/bleu")
MAX_HEATMAPS = 3  # attention PNGs shown per job


@dataclass
class Run(RunRecord):
    """One job of a sweep: its run record, and the files beside it the dashboard shows."""

    job: str = ""  # job dir relative to the sweep dir, e.g. "3"
    metrics_csv: Path | None = None
    heatmaps: list[Path] = field(default_factory=list)
    influence: dict[str, Any] | None = None  # influence.json (seq2seq.analysis.influence), when present
    head_map: Path | None = None  # plots/alignment_heads.png: alignment per Transformer layer and head


def _natural_key(text: str) -> list[object]:
    """Sort "2" before "10": digits compare as numbers."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text)]


def _read_run(results: Path, sweep_dir: Path) -> Run:
    job_dir = results.parent
    job = job_dir.relative_to(sweep_dir).as_posix()
    if job == ".":  # sweep_dir is itself one run: name it, so runs of several such dirs stay apart
        job = job_dir.resolve().name
    try:
        record = RunRecord.read(job_dir)
    except RecordError as err:  # an unreadable record counts as a failed job
        return Run(path=job_dir, status="failed", error=str(err), job=job)
    csvs = sorted(job_dir.rglob("metrics.csv"), key=lambda p: _natural_key(p.as_posix()))
    return Run(
        **vars(record),
        job=job,
        metrics_csv=csvs[-1] if csvs else None,  # the newest CSVLogger version
        heatmaps=sorted(job_dir.glob("plots/attention/*.png"))[:MAX_HEATMAPS],
        influence=_read_influence(job_dir / "influence.json"),
        head_map=head_map if (head_map := job_dir / "plots" / "alignment_heads.png").is_file() else None,
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
    found = sorted(sweep_dir.rglob(RESULTS), key=lambda p: _natural_key(p.as_posix()))
    if not found:
        raise FileNotFoundError(
            f"no results.json found under sweep_dir={sweep_dir}; pass the Hydra multirun dir of a sweep "
            "(e.g. multirun/2024-01-01/12-00-00) whose jobs have finished or failed"
        )
    return [_read_run(path, sweep_dir) for path in found]


def varying_choices(runs: list[Run]) -> list[str]:
    """Config groups other than encoder and attention whose choice differs across `runs`."""
    others = [k for k in dict.fromkeys(k for r in runs for k in r.choices) if k not in (ENCODER, ATTENTION)]
    return [k for k in others if len({r.choices.get(k) for r in runs}) > 1]


def variant_labels(runs: list[Run]) -> dict[str, str]:
    """Plot label per job, e.g. "gru + bahdanau, h=128".

    Choices other than encoder and attention are added only where they differ across `runs`; jobs that
    still share a label (e.g. seeds) get their job dir appended.
    """
    varying = varying_choices(runs)
    base = {run.job: run.label(extra=varying) for run in runs}
    counts = Counter(base.values())
    return {job: f"{label} [{job}]" if counts[label] > 1 else label for job, label in base.items()}


def bleu_by_length_series(runs: list[Run]) -> tuple[list[str], dict[str, list[float | None]]]:
    """The BLEU-by-length figure's data: the bucket axis (sorted by length) and, per variant, BLEU per bucket.

    Only completed runs count. A bucket with n=0 (or one a run lacks) is None, so it plots as a gap.
    """
    runs = [r for r in runs if r.completed and r.bleu_by_length]
    labels = variant_labels(runs)
    buckets, values, _ = length_series({labels[run.job]: run.bleu_by_length for run in runs})
    return buckets, values


def hidden_size_series(runs: list[Run]) -> dict[str, list[tuple[int, float]]]:
    """The BLEU-vs-hidden-size figure's data: per variant (hidden size left out), (hidden size, test BLEU)
    sorted by size.

    Jobs of one variant and size (e.g. seeds) are averaged. Empty when the sweep has one hidden size only.
    """
    runs = [
        r
        for r in runs
        if r.completed and r.hidden_size is not None and r.metrics.get("test/bleu") is not None
    ]
    if len({r.hidden_size for r in runs}) < 2:
        return {}
    varying = varying_choices(runs)
    scores: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        scores[run.label(hidden=False, extra=varying)][run.hidden_size].append(run.metrics["test/bleu"])
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


NEVER_RAN = "never ran"


def never_ran(runs: list[Run], sweep_dir: Path) -> list[Run]:
    """The planned jobs of a multirun (``sweep.json``) that left no ``results.json``: one row each, status
    ``never ran`` (the sweep was stopped, or is still running)."""
    planned = read_sweep_plan(sweep_dir)["planned"]
    found = {run.job for run in runs}
    return [
        Run(path=Path(sweep_dir) / str(job), status=NEVER_RAN, job=str(job))
        for job in range(planned or 0)
        if str(job) not in found
    ]


def job_table(runs: list[Run]) -> tuple[list[str], list[JobRow], dict[str, object]]:
    """The columns and rows of the job table (raw values; the page and the terminal format them), and the
    settings every job shares (``{"data": "copy", "hidden": 128}``), left out of the columns.

    ``job``, ``status`` and the scores are always columns, the alignment accuracy when a job has one; a choice,
    the hidden size or the parameter count only when it differs between jobs (jobs that never ran, and jobs
    that do not know it, do not count).
    """
    choice_keys = list(dict.fromkeys([*CHOICE_GROUPS, *(k for r in runs for k in r.choices)]))
    choice_keys = [k for k in choice_keys if any(k in r.choices for r in runs)]
    columns = ["job", "status", *choice_keys, "hidden", "params", *SCORES, ALIGNMENT, "wall s", "tokens/s"]
    cells = [
        [
            run.job,
            run.status,
            *(run.choices.get(k) for k in choice_keys),
            run.hidden_size,
            run.params,
            *(run.metrics.get(k) for k in SCORES),
            run.metrics.get(ALIGNMENT),
            run.train.get("wall_s"),
            run.train.get("tokens_per_s"),
        ]
        for run in runs
    ]
    ran = [row for row, run in zip(cells, runs, strict=True) if run.status != NEVER_RAN] or cells
    shared: dict[str, object] = {}
    keep = []
    for i, column in enumerate(columns):
        values = {repr(row[i]) for row in ran if row[i] is not None}  # a failed job may not know it
        optional = column in (*choice_keys, "hidden", "params")
        if column == ALIGNMENT:  # a score: a column whenever a job has it, never folded into `shared`
            keep += [i] if values else []
        elif optional and len(values) == 1 and len(ran) > 1:
            shared[column] = next(row[i] for row in ran if row[i] is not None)
        elif not optional or values:
            keep.append(i)
    rows = [
        JobRow(cells=[row[i] for i in keep], status=run.status, error=run.error)
        for row, run in zip(cells, runs, strict=True)
    ]
    return [columns[i] for i in keep], rows, {k: v for k, v in shared.items() if v is not None}
