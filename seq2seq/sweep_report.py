"""A sweep that reports back: the Hydra callback of every ``seq2seq-train -m`` (``conf/hydra/default.yaml``).

At the start of a multirun it saves the plan (how many jobs, which keys are swept:
:mod:`seq2seq.config.sweep`); each job's log then starts with "job i of N" and its overrides. At the end it
prints how many of the planned jobs completed, failed, were interrupted or never ran — each failed job with its
overrides and the first line of its error — builds the dashboard (:mod:`seq2seq.dashboard.build`) and prints
its path. A multirun with any failed or interrupted job exits with status 1, after all its jobs have run.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from seq2seq.config.sweep import plan_sweep
from seq2seq.dashboard.build import build_dashboard
from seq2seq.dashboard.runs import Run, load_runs
from seq2seq.evaluation.record import read_sweep_plan, write_sweep_plan

log = logging.getLogger("seq2seq.sweep")

STATUSES = ("completed", "failed", "interrupted")


def job_overrides(job_dir: Path, swept: list[str]) -> str:
    """The job's overrides of the swept keys (all of them when none is known), from ``.hydra/overrides.yaml``."""
    try:
        overrides = [str(o) for o in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")]
    except (OSError, ValueError):
        return ""
    chosen = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in swept]
    return " ".join(chosen or overrides)


def first_line(text: str | None) -> str:
    return (str(text or "").strip().splitlines() or [""])[0][:300]


def summary_lines(runs: list[Run], planned: int | None, swept: list[str] = ()) -> list[str]:
    """The end-of-sweep report: counts out of the planned jobs, then one line per job that did not complete."""
    counts = {status: sum(run.status == status for run in runs) for status in STATUSES}
    total = planned if planned is not None else len(runs)
    never = max(total - len(runs), 0)
    lines = [
        f"sweep: {total} jobs planned — {counts['completed']} completed, {counts['failed']} failed, "
        f"{counts['interrupted']} interrupted, {never} never ran"
        + ("" if planned is not None else " (the sweeper's plan is unknown: jobs found on disk)")
    ]
    for run in runs:
        if run.status in ("failed", "interrupted"):
            overrides = job_overrides(run.path, list(swept))
            lines.append(
                f"  {run.status} job {run.job}"
                + (f" ({overrides})" if overrides else "")
                + f": {first_line(run.error)}"
            )
    return lines


class SweepReport(Callback):
    """Hydra callback: the plan at the start, "job i of N" per job, the report and dashboard at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            write_sweep_plan(config.hydra.sweep.dir, plan_sweep(config.hydra))
        except Exception as err:  # a plan is a nicety: the sweep runs without one
            log.warning("could not count the sweep's jobs (%s: %s)", type(err).__name__, err)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        planned = read_sweep_plan(config.hydra.sweep.dir)["planned"]
        log.info(
            "job %d of %s: %s",
            config.hydra.job.num + 1,
            planned if planned is not None else "?",
            " ".join(config.hydra.overrides.task) or "(no overrides)",
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        plan = read_sweep_plan(sweep_dir)
        try:
            runs = load_runs(sweep_dir)
        except FileNotFoundError:
            runs = []
        lines = summary_lines(runs, plan["planned"], plan["swept"])
        if runs:
            try:
                lines.append(f"dashboard: {build_dashboard(sweep_dir).resolve()}")
            except Exception as err:  # the report must still be printed
                lines.append(f"dashboard not built: {type(err).__name__}: {first_line(str(err))}")
        print("\n".join(lines), flush=True)
        if any(run.status in ("failed", "interrupted") for run in runs):
            sys.exit(1)  # after every job has run; a SystemExit passes Hydra's callback guard
