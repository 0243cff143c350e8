"""Several time-to-BLEU runs (``--end-to-end``) read together: each pair's numbers, then their means with intervals.

    make bench ARGS="--end-to-end --budget-minutes 20 --validate-every 250 --seed 1 --out bench/e2e-1/results.json"
    .venv/bin/python scripts/benchmark/end_to_end_runs.py bench/e2e-*/end_to_end.json [--figure runs.png]

One run of ``end_to_end.py`` is one draw: JoeyNMT initialises its model unseeded, and seq2seq's seed is the
benchmark's ``--seed``. Its ratio (seq2seq's time to JoeyNMT's best dev BLEU over JoeyNMT's time to it) moves
from run to run mostly with JoeyNMT's draw. Over ``n`` runs this prints

* the ratio's geometric mean with a 95 % Student t interval of the mean log ratio (ratios multiply: 0.5 and 2
  are equally far from 1), its range, and how many runs met the target (≤ 0.5);
* a bound that assumes nothing of the ratio's distribution: each run falls below the median ratio with
  probability ½, so all ``n`` do with probability ½ⁿ and the largest observed ratio bounds the median from
  above with confidence 1 − ½ⁿ (93.8 % for 4 runs);
* the final test BLEU difference (seq2seq − JoeyNMT) and the best dev BLEU difference: means with t intervals.

Runs must share the budget, the validation interval, seq2seq's attention and the data; two runs with the same
seq2seq seed are counted, but flagged: their seq2seq sides differ only in timing, so the interval then
understates seq2seq's own spread. ``--figure`` draws every run's two curves in one plot.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # seq2seq, when run with a plain python from anywhere

from seq2seq.evaluation.intervals import mean_interval  # noqa: E402
from seq2seq.evaluation.seeds import spread  # noqa: E402

SAME = ("budget_minutes", "validate_every", "seq2seq_attention", "data")


class RunsError(ValueError):
    """A file that is not a usable ``end_to_end.json``, or runs that cannot be pooled."""


@dataclass
class Pair:
    """One ``end_to_end.json``: seq2seq's seed, the budget, the time ratio and both systems' BLEU."""

    path: Path
    seed: int
    budget_minutes: float
    ratio: float | None
    joeynmt_best_dev: float | None
    joeynmt_minutes: float | None
    seq2seq_minutes: float | None
    seq2seq_best_dev: float | None
    seq2seq_test: float | None
    joeynmt_test: float | None
    curves: dict[str, list[list[float]]]


def seed_of(command: str) -> int:
    """The ``--seed`` of the benchmark command an ``end_to_end.json`` records (run.py's default when absent)."""
    from run import parse_args

    return parse_args(shlex.split(command)[2:]).seed


def read_pair(path: Path) -> tuple[Pair, dict[str, Any]]:
    """A run's :class:`Pair` and its summary; :class:`RunsError` naming the file when it is not one."""
    try:
        summary = json.loads(path.read_text("utf-8"))
        systems, targets = summary["systems"], summary["targets"]
        ours, joey = systems["seq2seq"], systems["joeynmt"]
        seed = summary["seed"] if "seed" in summary else seed_of(summary["command"])
    except FileNotFoundError:
        raise RunsError(f"{path}: no such file (give the end_to_end.json of each --end-to-end run)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunsError(f"{path}: not JSON ({error}); is it an end_to_end.json?") from None
    except (KeyError, TypeError, SystemExit) as error:
        raise RunsError(f"{path}: not an end_to_end.json of run.py --end-to-end (missing {error})") from None
    minutes = [
        None if s is None else s / 60 for s in (joey["time_to_best_s"], ours["time_to_joeynmt_best_s"])
    ]
    pair = Pair(
        path=path,
        seed=seed,
        budget_minutes=summary["budget_minutes"],
        ratio=targets["time_to_joeynmt_best_ratio"],
        joeynmt_best_dev=joey["best_dev_bleu"],
        joeynmt_minutes=minutes[0],
        seq2seq_minutes=minutes[1],
        seq2seq_best_dev=ours["best_dev_bleu"],
        seq2seq_test=ours.get("test_bleu"),
        joeynmt_test=joey.get("test_bleu"),
        curves=summary["curves"],
    )
    return pair, summary


def read_pairs(paths: list[Path]) -> list[Pair]:
    """Every run, checked to share :data:`SAME` with the first."""
    pairs, first = [], None
    for path in paths:
        pair, summary = read_pair(path)
        if first is None:
            first = (path, summary)
        for key in SAME:
            if summary.get(key) != first[1].get(key):
                raise RunsError(
                    f"{path}: {key} is {summary.get(key)!r}, {first[0]}'s is {first[1].get(key)!r}; "
                    "pool only runs of one set-up"
                )
        pairs.append(pair)
    return pairs


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def pool(pairs: list[Pair]) -> dict[str, Any]:
    """The pooled statistics of the runs (see the module's docstring)."""
    logs = [math.log(p.ratio) for p in pairs if p.ratio is not None]
    log_interval = mean_interval(logs)
    ratios = spread([p.ratio for p in pairs])
    out: dict[str, Any] = {
        "runs": len(pairs),
        "ratio_runs": len(logs),
        "ratio_geometric_mean": math.exp(statistics.fmean(logs)) if logs else None,
        "ratio_interval": None if log_interval is None else [math.exp(v) for v in log_interval],
        "ratio_range": None if ratios is None else [ratios.low, ratios.high],
        "ratio_met": sum(p.ratio <= 0.5 for p in pairs if p.ratio is not None),
        # the largest of n ratios is above the median unless all n fell below it (probability ½ⁿ)
        "median_ratio_bound": None if ratios is None else ratios.high,
        "median_ratio_bound_confidence": 1 - 0.5 ** len(logs) if logs else None,
        "repeated_seeds": sorted(seed for seed, n in Counter(p.seed for p in pairs).items() if n > 1),
    }
    for name, get in (
        ("test_bleu_difference", lambda p: _difference(p.seq2seq_test, p.joeynmt_test)),
        ("best_dev_bleu_difference", lambda p: _difference(p.seq2seq_best_dev, p.joeynmt_best_dev)),
    ):
        values = [v for v in map(get, pairs) if v is not None]
        differences = spread(values)
        out[name] = {
            "mean": None if differences is None else differences.mean,
            "interval": mean_interval(values),
            "range": None if differences is None else [differences.low, differences.high],
            "runs": len(values),
        }
    return out


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _span(bounds: list[float] | None, digits: int = 1, sep: str = " to ") -> str:
    return "–" if bounds is None else f"{bounds[0]:.{digits}f}{sep}{bounds[1]:.{digits}f}"


def format_runs(pairs: list[Pair], pooled: dict[str, Any]) -> str:
    """The per-run table and the pooled lines, in Markdown."""
    lines = [
        "| run | seq2seq seed | JoeyNMT best dev BLEU | JoeyNMT min to it | seq2seq min to it | ratio "
        "| seq2seq best dev BLEU | test BLEU seq2seq | test BLEU JoeyNMT | test difference |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in pairs:
        lines.append(
            f"| {p.path.parent.name or p.path} | {p.seed} | {_num(p.joeynmt_best_dev)} | {_num(p.joeynmt_minutes)} "
            f"| {_num(p.seq2seq_minutes)} | {_num(p.ratio, 2)} | {_num(p.seq2seq_best_dev)} "
            f"| {_num(p.seq2seq_test)} | {_num(p.joeynmt_test)} "
            f"| {_num(_difference(p.seq2seq_test, p.joeynmt_test))} |"
        )
    n = pooled["ratio_runs"]
    lines += [
        "",
        f"time ratio over {n} runs: geometric mean {_num(pooled['ratio_geometric_mean'], 2)}, "
        f"95 % interval {_span(pooled['ratio_interval'], 2)}, range {_span(pooled['ratio_range'], 2)}; "
        f"{pooled['ratio_met']} of {n} at or below 0.5; the median ratio is at most "
        f"{_num(pooled['median_ratio_bound'], 2)} with confidence {_num(100 * (pooled['median_ratio_bound_confidence'] or 0), 1)} % "
        "(no assumption on its distribution)",
    ]
    for key, label in (("test_bleu_difference", "test BLEU"), ("best_dev_bleu_difference", "best dev BLEU")):
        d = pooled[key]
        lines.append(
            f"{label}, seq2seq − JoeyNMT over {d['runs']} runs: {_num(d['mean'])} "
            f"(95 % interval {_span(d['interval'])}, range {_span(d['range'])})"
        )
    if pooled["repeated_seeds"]:
        lines.append(
            f"note: seq2seq seed(s) {', '.join(map(str, pooled['repeated_seeds']))} ran more than once; those runs' "
            "seq2seq sides differ only in timing, so the intervals understate seq2seq's spread over seeds"
        )
    return "\n".join(lines)


def plot_runs(pairs: list[Pair], path: Path) -> None:
    """Every run's dev BLEU against wall-clock minutes: seq2seq in one colour, JoeyNMT in another."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, label, colour in (("seq2seq", "seq2seq", "C0"), ("joeynmt", "JoeyNMT 2.3.0", "C1")):
        for i, pair in enumerate(pairs):
            points = pair.curves.get(name) or []
            ax.plot([t / 60 for t, _ in points], [b for _, b in points], color=colour, alpha=0.7, marker="o",
                    markersize=2, label=f"{label} ({len(pairs)} runs)" if i == 0 else None)  # fmt: skip
    ax.set_xlim(0, pairs[0].budget_minutes * 1.05)  # one budget: read_pairs checks it
    ax.set_ylim(bottom=0)
    ax.set_xlabel("wall-clock minutes since training started")
    ax.set_ylabel("dev BLEU (greedy)")
    ax.set_title(f"Time to BLEU, {len(pairs)} runs each: same data, matched models")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="end_to_end.json of each --end-to-end run")
    parser.add_argument("--figure", type=Path, help="write every run's curves to this PNG")
    parser.add_argument("--out", type=Path, help="write the per-run numbers and the pooled ones as JSON")
    args = parser.parse_args(argv)
    try:
        pairs = read_pairs(args.runs)
    except RunsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    pooled = pool(pairs)
    print(format_runs(pairs, pooled))
    if args.figure:
        plot_runs(pairs, args.figure)
        print(f"\nwrote {args.figure}")
    if args.out:
        rows = [
            {k: (str(v) if k == "path" else v) for k, v in vars(p).items() if k != "curves"} for p in pairs
        ]
        args.out.write_text(json.dumps({"runs": rows, "pooled": pooled}, indent=2) + "\n", "utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
