"""Resuming a training run: which checkpoint, whether it fits this config, the command that resumes it, and
the ``metrics.csv`` history kept across the resume.

Resuming always continues a run's *last* state (``checkpoints/last.ckpt``); using a trained model takes its
best (:func:`seq2seq.inference.checkpoint.find_checkpoint`).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from seq2seq.data.tokenizer import Tokenizer
from seq2seq.evaluation.record import means_off
from seq2seq.inference.checkpoint import CheckpointError, read_checkpoint, refuse_non_finite

log = logging.getLogger(__name__)

LAST = Path("checkpoints") / "last.ckpt"  # in the run directory
RESUME_MUST_MATCH = ("model", "data", "seed")  # what a resumed run shares with its checkpoint


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> Path | None:
    """The checkpoint to resume from: a file, or ``last`` = ``<run_dir>/checkpoints/last.ckpt``.

    ``last`` in a run directory without one yet gives None (a warning, training from scratch), so the same
    command serves a first start and a restart. A SLURM job that was requeued (``$SLURM_RESTART_COUNT`` > 0,
    e.g. by submitit after pre-emption) resumes its ``last.ckpt`` even without ``ckpt_path``.
    """
    if ckpt_path in (None, ""):
        restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        if restarts > 0 and (run_dir / LAST).is_file():
            log.info("SLURM job restarted (%d): resuming %s", restarts, run_dir / LAST)
            return run_dir / LAST
        return None
    if ckpt_path == "last":
        path = run_dir / LAST
        if path.is_file():
            return path
        log.warning("ckpt_path=last: %s does not exist yet; training from scratch", path)
        return None
    path = Path(ckpt_path)
    if not path.is_file():
        raise ValueError(
            f"ckpt_path={ckpt_path}: no such checkpoint file (resolved to {path.resolve()}); pass "
            "<run_dir>/checkpoints/last.ckpt, or ckpt_path=last with hydra.run.dir=<run_dir> to resume "
            "in place"
        )
    return path


def check_resumable(path: Path, cfg: DictConfig, tokenizers: dict[str, Tokenizer]) -> None:
    """Refuse a checkpoint of another model, data set or seed, or with other tokenizers, naming the keys.

    Raises:
        CheckpointError: the file cannot be read; ValueError: it does not fit this run.
    """
    # memory-mapped: only the config and tokenizers are read here; Lightning loads the weights once, in fit()
    checkpoint = read_checkpoint(path, full=True)
    saved = checkpoint.get("hyper_parameters", {}).get("cfg")
    if saved is None or "tokenizers" not in checkpoint or "loops" not in checkpoint:
        raise CheckpointError(
            f"ckpt_path={path}: not a training checkpoint written by `seq2seq-train` "
            "(checkpoints/last.ckpt or best.ckpt of a run)"
        )
    refuse_non_finite(path, checkpoint.get("state_dict", {}))
    current = OmegaConf.to_container(cfg, resolve=True)
    differences = [
        f"{key}: checkpoint {old!r}, this run {new!r}"
        for section in RESUME_MUST_MATCH
        for key, old, new in _differences(saved.get(section), current.get(section), section)
    ]
    for side, tokenizer in tokenizers.items():
        if checkpoint["tokenizers"][side] != tokenizer.model_proto:
            differences.append(f"the {side} tokenizer differs (trained on other data?)")
    if differences:
        more = f"; and {len(differences) - 5} more" if len(differences) > 5 else ""
        raise ValueError(
            f"ckpt_path={path} cannot be resumed with this config: {'; '.join(differences[:5])}{more}. "
            "Repeat the overrides of the run that wrote it (its .hydra/overrides.yaml; an interrupted run's "
            "results.json holds the whole command)"
        )


def refuse_finished(run_dir: Path, cfg: DictConfig) -> None:
    """Refuse ``ckpt_path=last`` on a run that completed with these training limits: nothing is left to train,
    and testing again would overwrite its record.

    Raises:
        ValueError: naming what to do instead (evaluate it, or raise the limit to train longer).
    """
    record = read_record(run_dir)
    if record is None or record.get("status") != "completed":
        return
    limits = ("max_steps", "max_epochs", "max_time")
    before = (record.get("config") or {}).get("trainer") or {}
    now = OmegaConf.to_container(cfg.trainer, resolve=True)
    if all(before.get(key) == now.get(key) for key in limits):
        raise ValueError(
            f"ckpt_path=last: the run in {run_dir} already completed (results.json: status completed, "
            f"{(record.get('train') or {}).get('steps', '?')} steps) with these limits, so there is nothing to "
            f"resume. To score it again: seq2seq-evaluate run_dir={run_dir}; to train it longer, resume with a "
            "larger trainer.max_steps or trainer.max_epochs"
        )


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``results.json`` as a dictionary (None when absent or unreadable)."""
    try:
        record = json.loads((Path(run_dir) / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _differences(old: Any, new: Any, key: str) -> Iterator[tuple[str, Any, Any]]:
    """``(dotted key, old, new)`` for every leaf where two config trees differ. An option the checkpoint's config
    lacks (added since) set to None or False is no difference: those options default to the old behaviour."""
    if isinstance(old, dict) and isinstance(new, dict):
        for name in sorted(set(old) | set(new)):
            if name not in old:  # an option added since the checkpoint was written
                if not means_off(new[name]):
                    yield f"{key}.{name}", ABSENT, new[name]
                continue
            yield from _differences(old.get(name), new.get(name), f"{key}.{name}")
    elif old != new:
        yield key, old, new


class _Absent:
    def __repr__(self) -> str:
        return "absent (an option added since: set it to the behaviour it trained with, e.g. false)"


ABSENT = _Absent()


def resume_command(run_dir: Path) -> str:
    """The command line that resumes this run in place from its ``checkpoints/last.ckpt``."""
    hydra_cfg = HydraConfig.get()
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith(("ckpt_path=", "hydra.run.dir="))]
    mode = ["hydra.mode=RUN"] if hydra_cfg.mode == RunMode.MULTIRUN else []
    return shlex.join(
        ["python", "-m", "seq2seq.train", *overrides, *mode, f"hydra.run.dir={run_dir}", "ckpt_path=last"]
    )


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
