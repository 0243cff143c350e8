"""``seq2seq-dashboard sweep_dir=DIR [out_dir=DIR] [baseline=JOB]`` (also ``python -m seq2seq.dashboard``, ``make dashboard``).

Writes the dashboard (:mod:`seq2seq.dashboard.build`), prints the job table, and when W&B is online also
saves a W&B Report (optional package ``wandb-workspaces``); offline it prints how to ``wandb sync`` the runs
instead. It never prompts and never waits on W&B for long.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from seq2seq.dashboard.build import print_summary, sweep_name, write_dashboard
from seq2seq.dashboard.runs import Run, load_runs
from seq2seq.evaluation import tracking
from seq2seq.evaluation.console import make_console
from seq2seq.evaluation.record import read_sweep_plan, sweep_group
from seq2seq.evaluation.style import variant_style

USAGE = "usage: seq2seq-dashboard sweep_dir=DIR [out_dir=DIR] [baseline=JOB]"
WANDB_TIMEOUT_S = 60.0  # the W&B report is given up after this long


def maybe_wandb_report(
    sweep_dir: Path, runs: list[Run], console: Console, timeout_s: float = WANDB_TIMEOUT_S
) -> str | None:
    """Create a W&B Report when W&B is online and logged in, else print how to sync; returns its URL."""
    logger = next((r.config["logger"] for r in runs if isinstance(r.config.get("logger"), dict)), {})
    buckets = list(dict.fromkeys(row["bucket"] for run in runs for row in run.bleu_by_length))
    url, why = tracking.try_wandb_report(
        title=f"Sweep {sweep_name(sweep_dir)}",
        description=f"{len(runs)} jobs from {Path(sweep_dir).resolve()}",
        project=logger.get("project"),
        entity=logger.get("entity"),
        timeout_s=timeout_s,
        group=read_sweep_plan(sweep_dir)["group"] or sweep_group(sweep_dir),
        buckets=buckets,
        colours=run_colours(runs),
    )
    if url is None:
        hint = f"W&B report skipped; to upload offline runs: wandb sync {sweep_dir}/*/wandb/offline-run-*"
        console.print(hint + (f" ({why})" if why else ""), highlight=False, soft_wrap=True)
        return None
    console.print(f"W&B report: {url}", highlight=False, soft_wrap=True)
    return url


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, through main's error path (status 2)
        raise ValueError(f"{message}; {USAGE}")


def parser() -> argparse.ArgumentParser:
    """``seq2seq-dashboard --help``: the arguments, in Hydra's ``key=value`` style like the other commands."""
    parser = _Parser(
        prog="seq2seq-dashboard",
        usage=USAGE.removeprefix("usage: "),
        description="Build the HTML dashboard of a sweep (every results.json under SWEEP_DIR), print its job "
        "table and, when W&B is online, save a W&B report of the sweep.",
        epilog="example: seq2seq-dashboard sweep_dir=multirun/bottleneck/2026-01-05_10-00-00",
    )
    parser.add_argument(
        "args",
        nargs="*",
        metavar="key=value",
        help="sweep_dir=DIR (a Hydra multirun directory, or one run directory) and optionally out_dir=DIR "
        "(default: <sweep_dir>/dashboard)",
    )
    return parser


def run_colours(runs: list[Run]) -> dict[str, str]:
    """W&B run id (kept by ``wandb sync``) → the colour of the run's attention variant in every figure."""
    colours = {}
    for run in runs:
        run_id = tracking.previous_wandb_id(run.path)
        if run_id:
            colours[run_id] = variant_style(run.choices)["color"]
    return colours


def parse_args(argv: list[str]) -> dict[str, str]:
    """`sweep_dir=DIR [out_dir=DIR] [baseline=JOB]` (Hydra-style key=value) → dict; a clear error for anything
    else. ``baseline``: the job (e.g. ``0``) whose variant the paired tests compare against."""
    allowed = ("sweep_dir", "out_dir", "baseline")
    args = {}
    for arg in parser().parse_args(argv).args:
        key, sep, value = arg.partition("=")
        if not sep or key not in allowed or not value:
            raise ValueError(f"unexpected argument {arg!r}; {USAGE}")
        args[key] = value
    if "sweep_dir" not in args:
        raise ValueError(f"missing sweep_dir=DIR; {USAGE}")
    return args


def main(argv: list[str] | None = None) -> int:
    console = make_console()
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        sweep_dir = Path(args["sweep_dir"])
        runs = load_runs(sweep_dir)
        baseline = args.get("baseline")
        if baseline is not None and not any(r.completed and r.job == baseline for r in runs):
            raise ValueError(
                f"baseline={baseline}: no completed job of that name in {sweep_dir}; give a job, e.g. 0"
            )
    except (ValueError, FileNotFoundError) as err:
        Console(stderr=True).print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        return 2
    index = write_dashboard(runs, sweep_dir, args.get("out_dir"), baseline)
    print_summary(runs, console)
    maybe_wandb_report(sweep_dir, runs, console)
    console.print(f"dashboard: {index.resolve()}", highlight=False, soft_wrap=True)
    return 0


def run() -> None:
    """The console script's entry: exit with :func:`main`'s status."""
    sys.exit(main())
