"""Experiment loggers: W&B (offline unless online is configured), CSV, or none.

Every run also keeps ``metrics.csv`` in its run directory (Lightning's CSVLogger), so curves can be
reviewed with no tracker and no network. A run resumed in its own directory continues both: the earlier
rows of ``metrics.csv`` are kept (:func:`set_metrics_history_aside`, :func:`merge_metrics_history`) and
the same W&B run goes on.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

LOGGERS = ("wandb", "csv", "none")
TAGGED_CHOICES = {
    "model/attention": "attention",
    "model/encoder": "encoder",
    "data": "data",
    "teacher_forcing": "tf",
}


def run_tags(choices: dict[str, str], cfg: Any) -> list[str]:
    """Tags from Hydra's choices: ``attention:bahdanau``, ``encoder:gru``, ``hidden:256``, …"""
    tags = [f"{short}:{choices[group]}" for group, short in TAGGED_CHOICES.items() if group in choices]
    tags.append(f"hidden:{cfg.model.hidden_size}")
    return tags + list(cfg.get("tags") or [])


def build_loggers(cfg: Any, run_dir: Path, choices: dict[str, str], resume: bool = False) -> list[Logger]:
    """The local CSV history plus the tracker named by ``logger.name``.

    Args:
        resume: the run continues a checkpoint; in a run directory that already has a W&B run, that run
            goes on (same id) rather than a new one starting.
    """
    name = cfg.logger.name
    if name not in LOGGERS:
        raise ValueError(f"logger={name!r}: choose one of {LOGGERS}")
    if resume:  # metrics.csv was set aside: the CSVLogger's warning that it would delete it does not apply
        warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="", version="")]
    if name == "wandb":
        mode = cfg.logger.mode
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode={mode!r}: choose offline, online or disabled")
        # Never block or prompt: offline needs no account, and online only when the user configured it.
        os.environ.setdefault("WANDB_SILENT", "true")
        previous = previous_wandb_id(run_dir) if resume else None
        loggers.append(
            WandbLogger(
                id=previous,
                resume="allow" if previous else None,
                project=cfg.logger.project,
                entity=cfg.logger.get("entity"),
                group=cfg.logger.get("group"),
                job_type=cfg.logger.get("job_type", "train"),
                tags=run_tags(choices, cfg),
                save_dir=str(run_dir),
                mode=mode,
                log_model=False,
            )
        )
    return loggers


def finish_wandb() -> None:
    """Close the W&B run of this job, if any, so multirun jobs never leak runs."""
    try:
        import wandb
    except ImportError:  # pragma: no cover - wandb is a dependency
        return
    if wandb.run is not None:
        wandb.finish()


def previous_wandb_id(run_dir: Path) -> str | None:
    """The id of the newest W&B run kept in ``<run_dir>/wandb`` (``[offline-]run-<time>-<id>``), if any."""
    runs = sorted(
        (path for path in (Path(run_dir) / "wandb").glob("*run-*-*") if path.is_dir()),
        key=lambda path: path.name.removeprefix("offline-"),
    )
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


METRICS = "metrics.csv"
EARLIER_METRICS = "metrics.before-resume.csv"


def set_metrics_history_aside(run_dir: Path) -> None:
    """Before a run resumes in ``run_dir``: move ``metrics.csv`` aside (Lightning's CSVLogger deletes it).

    A history already set aside (a resume that was interrupted again) gets these rows appended first.
    """
    current = Path(run_dir) / METRICS
    if current.is_file():
        _write_rows(
            Path(run_dir) / EARLIER_METRICS, _read_rows(Path(run_dir) / EARLIER_METRICS) + _read_rows(current)
        )
        current.unlink()


def merge_metrics_history(run_dir: Path) -> None:
    """After the resumed run: ``metrics.csv`` holds the rows set aside, then its own (columns united)."""
    earlier = Path(run_dir) / EARLIER_METRICS
    if earlier.is_file():
        current = Path(run_dir) / METRICS
        _write_rows(current, _read_rows(earlier) + _read_rows(current))
        earlier.unlink()


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    columns = sorted({key for row in rows for key in row})
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
