"""Print runs side by side as Markdown, from their ``results.json``: the tables in README.md and docs/.

python3 scripts/compare_runs.py outputs/science/bahdanau outputs/science/none
python3 scripts/compare_runs.py multirun/exposure_bias/<date_time>/[0-9]*
.venv/bin/python scripts/compare_runs.py RUN RUN ... [--baseline N|RUN] [--resamples 1000] [--trials 10000]

Then, against a baseline run (``--baseline``: its position, 1 = first, or its directory; default the first
``attention=none`` run, else the first), the paired bootstrap and approximate-randomization p-values of
sacrebleu (``seq2seq.evaluation.significance``) on the sentences of ``predictions/test.tsv``, overall (BLEU,
chrF) and per length bucket (BLEU). Runs scored on different test sets are refused.

The tables run with a plain ``python3`` (the run record's reader imports only the standard library); the
paired tests need sacrebleu, i.e. the project's virtualenv, and are skipped with a note without it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the seq2seq package beside this folder

from seq2seq.evaluation.record import RecordError, RunRecord  # noqa: E402
from seq2seq.evaluation.seeds import SEED_AXES, SeedGroup, group_by_seed, seed_of  # noqa: E402


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ci(value: float | None, interval: list[float] | None) -> str:
    """``36.0 [33.1, 38.9]``: a score with its 95 % bootstrap interval, when the run recorded one."""
    return _fmt(value) + (
        f" [{interval[0]:.1f}, {interval[1]:.1f}]" if value is not None and interval else ""
    )


def run_labels(records: list[RunRecord]) -> list[str]:
    """Each run's label; runs that share one (seeds of a variant) get ``, seed=<seed>`` added."""
    labels = [r.label(extra=("teacher_forcing",)) for r in records]
    return [
        f"{label}, seed={seed_of(r)}" if labels.count(label) > 1 else label
        for label, r in zip(labels, records, strict=True)
    ]


def markdown_tables(run_dirs: list[Path], positions: tuple[int, ...] = (1, 5, 10, 20, 40)) -> str:
    """A summary table (one row per run) and a BLEU-by-length table (one column per run), with the 95 %
    bootstrap intervals the runs recorded."""
    results = [RunRecord.read(d) for d in run_dirs]
    labels = run_labels(results)
    lines = [
        "| run | test BLEU [95% CI] | chrF [95% CI] | exact % | test loss | params | train tok/s | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in zip(labels, results, strict=True):
        m, t = r.metrics, r.train
        lines.append(
            f"| {label} | {_ci(m.get('test/bleu'), m.get('test/bleu_ci'))} | {_ci(m.get('test/chrf'), m.get('test/chrf_ci'))}"
            f" | {_fmt(m.get('test/exact_match'))}"
            f" | {_fmt(m.get('test/loss'), 3)} | {r.params or 0:,} | {_fmt(t.get('tokens_per_s'), 0)}"
            f" | {_fmt(t.get('wall_s'), 0)} |"
        )
    lines += ["", "| source words | n | " + " | ".join(labels) + " |", "|---|---:|" + "---:|" * len(labels)]
    for bucket in next((r.bleu_by_length for r in results if r.bleu_by_length), []):
        found = [next((b for b in r.bleu_by_length if b["bucket"] == bucket["bucket"]), {}) for r in results]
        row = [_ci(b.get("bleu"), b.get("bleu_ci")) for b in found]  # a failed run has no buckets: —
        lines.append(f"| {bucket['bucket']} | {bucket['n']} | " + " | ".join(row) + " |")
    if all(r.position_accuracy and r.teacher_forced_position_accuracy for r in results):
        lines += [
            "",
            "| token accuracy at output position | " + " | ".join(labels) + " |",
            "|---|" + "---:|" * len(labels),
        ]
        for p in positions:
            cells = [
                f"{_fmt(r.position_accuracy[p - 1])} / {_fmt(r.teacher_forced_position_accuracy[p - 1])}"
                for r in results
            ]
            lines.append(f"| {p} (free-running / teacher-forced) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_tables(records: list[RunRecord], axes: tuple[str, ...] = ("seed",)) -> str:
    """Per variant (runs equal but for ``axes``), the mean and spread over its seeds of the test scores and of
    BLEU per length bucket; empty when no variant has two seeds."""
    groups = group_by_seed(records, axes)
    if all(len(g.runs) < 2 for g in groups):
        return ""
    labels = [g.runs[0].label(extra=("teacher_forcing",)) for g in groups]
    lines = [
        f"Seeds: runs that differ only in {' and '.join(axes)}, per variant: mean ± sample standard deviation "
        "(min–max, number of seeds).",
        "",
        "| variant | seeds | test BLEU | chrF | exact % |",
        "|---|---|---:|---:|---:|",
    ]
    for label, group in zip(labels, groups, strict=True):
        cells = [_spread(group.metric(f"test/{k}")) for k in ("bleu", "chrf", "exact_match")]
        lines.append(f"| {label} | {', '.join(group.seeds)} | " + " | ".join(cells) + " |")
    lines += ["", "| source words | n | " + " | ".join(labels) + " |", "|---|---:|" + "---:|" * len(groups)]
    rows = [g.buckets() for g in groups]
    for b, first in enumerate(rows[0]):
        cells = [_spread(r[b]["bleu"]) if b < len(r) else "—" for r in rows]
        lines.append(f"| {first['bucket']} | {first['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _spread(value) -> str:
    return "—" if value is None else value.text()


def baseline_for(records: list[RunRecord], baseline: int, i: int, axes: tuple[str, ...]) -> int:
    """The run that run ``i`` is tested against: the baseline variant's run of the same seed when there is
    one (and ``i`` is not of the baseline variant), else the baseline run itself."""
    group: SeedGroup = next(
        (g for g in group_by_seed(records, axes) if records[baseline] in g.runs), SeedGroup()
    )
    if records[i] in group.runs:
        return baseline
    same_seed = [r for r in group.runs if seed_of(r, axes) == seed_of(records[i], axes)]
    return records.index(same_seed[0]) if same_seed else baseline


def _p(value: float) -> str:
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def _delta(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1f}"


def pick_baseline(records: list[RunRecord], choice: str | None) -> int:
    """Index of the baseline: ``choice`` as a 1-based position or a run directory; by default the first
    ``attention=none`` run, else the first."""
    if choice is None:
        nones = [i for i, r in enumerate(records) if r.choices.get("model/attention") == "none"]
        return nones[0] if nones else 0
    if choice.isdigit() and 1 <= int(choice) <= len(records):
        return int(choice) - 1
    for i, r in enumerate(records):
        if r.path.resolve() == Path(choice).resolve():
            return i
    raise ValueError(f"--baseline {choice}: give a position 1-{len(records)} or one of the run directories")


def significance_tables(
    run_dirs: list[Path], baseline: int, n_bootstrap: int, n_trials: int, axes: tuple[str, ...] = ("seed",)
) -> str:
    """Each run against the baseline (its variant's run of the same seed, :func:`baseline_for`): paired
    bootstrap / approximate randomization p-values, overall and per length bucket. Raises
    ``SignificanceError`` for runs scored on different test sets."""
    from seq2seq.evaluation.significance import compare_to_baseline

    records = [RunRecord.read(d) for d in run_dirs]
    labels = run_labels(records)
    others = [i for i in range(len(records)) if i != baseline and records[i].completed]
    against = {i: baseline_for(records, baseline, i, axes) for i in others}
    compared = {
        i: compare_to_baseline(run_dirs[against[i]], run_dirs[i], n_bootstrap, n_trials) for i in others
    }
    lines = [
        f"Paired tests against **{labels[baseline]}** ({run_dirs[baseline]}; runs of another seed against its "
        f"variant's run of that seed): sacrebleu's paired bootstrap ({n_bootstrap} resamples) and approximate "
        f"randomization ({n_trials} trials), two-sided p.",
        "",
        "| run | against | BLEU | Δ BLEU | p bootstrap | p AR | chrF | Δ chrF | p bootstrap | p AR |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i in others:
        overall, _ = compared[i]
        cells = [labels[against[i]]]
        for metric in ("BLEU", "chrF"):
            p = overall.p[metric]
            cells += [_fmt(overall.system[metric]), _delta(overall.delta(metric)), _p(p["bs"]), _p(p["ar"])]
        lines.append(f"| {labels[i]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| source words | n | "
        + " | ".join(f"{labels[i]}: Δ BLEU (p bootstrap / p AR)" for i in others)
        + " |",
        "|---|---:|" + "---:|" * len(others),
    ]
    for b, (bucket, first) in enumerate(compared[others[0]][1] if others else []):
        cells = []
        for i in others:
            comparison = compared[i][1][b][1]
            p = comparison.p.get("BLEU")
            cells.append(f"{_delta(comparison.delta())} ({_p(p['bs'])} / {_p(p['ar'])})" if p else "—")
        lines.append(f"| {bucket} | {first.n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories holding results.json")
    parser.add_argument("--baseline", help="position (1 = first) or directory of the baseline run")
    parser.add_argument("--resamples", type=int, default=1000, help="paired bootstrap resamples")
    parser.add_argument("--trials", type=int, default=10000, help="approximate randomization trials")
    parser.add_argument("--no-significance", action="store_true", help="only the tables of scores")
    parser.add_argument(
        "--seed-axis",
        nargs="+",
        default=["seed"],
        choices=list(SEED_AXES),
        help="what varies between runs of one variant (default: seed; add data.seed to pool data splits)",
    )
    args = parser.parse_args()
    axes = tuple(args.seed_axis)
    try:
        print(markdown_tables(args.runs))
        seeds = seed_tables([RunRecord.read(d) for d in args.runs], axes)
        if seeds:
            print("\n" + seeds)
        if args.no_significance or len(args.runs) < 2:
            return
        baseline = pick_baseline([RunRecord.read(d) for d in args.runs], args.baseline)
        try:
            tables = significance_tables(args.runs, baseline, args.resamples, args.trials, axes)
        except ImportError as error:
            print(f"\n(paired tests skipped: {error.name} is missing; run with .venv/bin/python)")
            return
        print("\n" + tables)
    except (RecordError, ValueError) as error:  # SignificanceError is a ValueError
        parser.error(str(error))


if __name__ == "__main__":
    main()
