"""Experiment loggers: W&B (offline unless online is configured), CSV, or none.

Every run also keeps ``metrics.csv`` in its run directory (Lightning's CSVLogger), so curves can be
reviewed with no tracker and no network.
"""

from __future__ import annotations

import os
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


def build_loggers(cfg: Any, run_dir: Path, choices: dict[str, str]) -> list[Logger]:
    """The local CSV history plus the tracker named by ``logger.name``."""
    name = cfg.logger.name
    if name not in LOGGERS:
        raise ValueError(f"logger={name!r}: choose one of {LOGGERS}")
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="", version="")]
    if name == "wandb":
        mode = cfg.logger.mode
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode={mode!r}: choose offline, online or disabled")
        # Never block or prompt: offline needs no account, and online only when the user configured it.
        os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(
            WandbLogger(
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
