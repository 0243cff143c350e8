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
from seq2seq.evaluation.record import CHOICE_GROUPS, RESULTS, SCHEMA, RecordError, RunRecord

ENCODER, ATTENTION = "model/encoder", "model/attention"
SCORES = ("test/bleu", "test/chrf", "test/exact_match", "val/bleu")
CURVES = ("train/loss", "val/bleu")
MAX_HEATMAPS = 3  # attention PNGs shown per job


@dataclass
class Run(RunRecord):
    """One job of a sweep: its run record, and the files beside it the dashboard shows."""

    job: str = ""  # job dir relative to the sweep dir, e.g. "3"
    metrics_csv: Path | None = None
    heatmaps: list[Path] = field(default_factory=list)
    influence: dict[str, Any] | None = None  # influence.json (seq2seq.analysis.influence), when present


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
    varying = _varying_choices(runs)
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


def job_table(runs: list[Run]) -> tuple[list[str], list[JobRow]]:
    """The columns and rows of the job table (raw values; the page and the terminal format them)."""
    choice_keys = list(dict.fromkeys([*CHOICE_GROUPS, *(k for r in runs for k in r.choices)]))
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
