"""Print runs side by side as Markdown, from their ``results.json``: the tables in README.md and docs/.

python scripts/compare_runs.py outputs/science/bahdanau outputs/science/none
python scripts/compare_runs.py multirun/exposure_bias/<date_time>/[0-9]*
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown_tables(run_dirs: list[Path], positions: tuple[int, ...] = (1, 5, 10, 20, 40)) -> str:
    """A summary table (one row per run) and a BLEU-by-length table (one column per run)."""
    results = [json.loads((d / "results.json").read_text()) for d in run_dirs]
    labels = [
        f"{r['choices'].get('model/encoder', '?')} + {r['choices'].get('model/attention', '?')}"
        f" (tf: {r['choices'].get('teacher_forcing', '?')}, h={r['config']['model']['hidden_size']})"
        for r in results
    ]
    lines = [
        "| run | test BLEU | chrF | exact % | test loss | params | train tok/s | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in zip(labels, results, strict=True):
        m, t = r["metrics"], r["train"]
        lines.append(
            f"| {label} | {_fmt(m.get('test/bleu'))} | {_fmt(m.get('test/chrf'))} | {_fmt(m.get('test/exact_match'))}"
            f" | {_fmt(m.get('test/loss'), 3)} | {r['params']:,} | {_fmt(t.get('tokens_per_s'), 0)}"
            f" | {_fmt(t.get('wall_s'), 0)} |"
        )
    lines += ["", "| source words | n | " + " | ".join(labels) + " |", "|---|---:|" + "---:|" * len(labels)]
    for i, bucket in enumerate(results[0]["bleu_by_length"]):
        row = [_fmt(r["bleu_by_length"][i]["bleu"]) for r in results]
        lines.append(f"| {bucket['bucket']} | {bucket['n']} | " + " | ".join(row) + " |")
    if all("position_accuracy" in r for r in results):
        lines += [
            "",
            "| token accuracy at output position | " + " | ".join(labels) + " |",
            "|---|" + "---:|" * len(labels),
        ]
        for p in positions:
            cells = [
                f"{_fmt(r['position_accuracy'][p - 1])} / {_fmt(r['teacher_forced_position_accuracy'][p - 1])}"
                for r in results
            ]
            lines.append(f"| {p} (free-running / teacher-forced) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories holding results.json")
    args = parser.parse_args()
    runs = [d for d in args.runs if (d / "results.json").is_file()]
    missing = sorted(set(args.runs) - set(runs))
    if missing:
        parser.error(f"no results.json in: {', '.join(map(str, missing))}")
    print(markdown_tables(runs))


if __name__ == "__main__":
    main()
