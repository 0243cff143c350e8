"""Print runs side by side as Markdown, from their ``results.json``: the tables in README.md and docs/.

python3 scripts/compare_runs.py outputs/science/bahdanau outputs/science/none
python3 scripts/compare_runs.py multirun/exposure_bias/<date_time>/[0-9]*

Runs with a plain ``python3``: the run record's reader imports only the standard library.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the seq2seq package beside this folder

from seq2seq.evaluation.record import RecordError, RunRecord  # noqa: E402


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown_tables(run_dirs: list[Path], positions: tuple[int, ...] = (1, 5, 10, 20, 40)) -> str:
    """A summary table (one row per run) and a BLEU-by-length table (one column per run)."""
    results = [RunRecord.read(d) for d in run_dirs]
    labels = [r.label(extra=("teacher_forcing",)) for r in results]
    lines = [
        "| run | test BLEU | chrF | exact % | test loss | params | train tok/s | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in zip(labels, results, strict=True):
        m, t = r.metrics, r.train
        lines.append(
            f"| {label} | {_fmt(m.get('test/bleu'))} | {_fmt(m.get('test/chrf'))} | {_fmt(m.get('test/exact_match'))}"
            f" | {_fmt(m.get('test/loss'), 3)} | {r.params or 0:,} | {_fmt(t.get('tokens_per_s'), 0)}"
            f" | {_fmt(t.get('wall_s'), 0)} |"
        )
    lines += ["", "| source words | n | " + " | ".join(labels) + " |", "|---|---:|" + "---:|" * len(labels)]
    for i, bucket in enumerate(results[0].bleu_by_length):
        row = [_fmt(r.bleu_by_length[i]["bleu"]) for r in results]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories holding results.json")
    args = parser.parse_args()
    try:
        print(markdown_tables(args.runs))
    except RecordError as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()
