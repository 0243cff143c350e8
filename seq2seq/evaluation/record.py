"""The run record: ``results.json`` written and read back, and the names runs go by.

``results.json`` (schema 1, docs/architecture.md) is the contract between a run and everything that reviews
it: the dashboard, W&B, ``scripts/compare_runs.py``. This module is its only writer and its only reader
(:class:`RunRecord`), and the one place that says which Hydra choices a run records (:data:`CHOICE_GROUPS`)
and how a run is labelled in tables, plots and W&B tags (:func:`run_label`, :func:`run_tags`).

It imports only the standard library, so ``scripts/compare_runs.py`` runs with a plain ``python``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seq2seq.data.atomic import write_atomic

SCHEMA = 1
RESULTS = "results.json"
PREDICTIONS = Path("predictions") / "test.tsv"
SWEEP_PLAN = "sweep.json"  # in a multirun's directory: {"planned": jobs or null, "swept": [keys], "group": …}
GROUP_CHARS = 128  # W&B's limit on a group name
CHOICE_GROUPS = ("data", "model/encoder", "model/attention", "model/decoder", "teacher_forcing", "decoding")
TAGGED_CHOICES = {
    "model/attention": "attention",
    "model/encoder": "encoder",
    "data": "data",
    "teacher_forcing": "tf",
}
# where each choice is found in a resolved run config (for runs read back without Hydra)
CHOICE_KEYS = {
    "data": ("data", "name"),
    "model/encoder": ("model", "encoder", "rnn_type"),
    "model/attention": ("model", "attention", "name"),
    "model/decoder": ("model", "decoder", "type"),
    "teacher_forcing": ("teacher_forcing", "schedule"),
    "decoding": ("decoding", "name"),
}


class RecordError(ValueError):
    """A ``results.json`` that cannot be read: missing, not JSON, or of another schema."""


# ------------------------------------------------------------------------------------------ names


def _get(tree: Any, keys: Sequence[str]) -> Any:
    for key in keys:
        if not isinstance(tree, Mapping) or key not in tree:
            return None
        tree = tree[key]
    return tree


def choices_from_config(config: Mapping[str, Any]) -> dict[str, str]:
    """The ``choices`` of ``results.json``, read back from a resolved run config (a dict or DictConfig)."""
    found = {group: _get(config, keys) for group, keys in CHOICE_KEYS.items()}
    if (
        _get(config, ("model", "encoder", "type")) == "transformer"
    ):  # its rnn_type is a recurrent decoder's cell
        found["model/encoder"] = "transformer"
    if found["model/decoder"] is None and _get(config, ("model", "decoder")) is not None:
        found["model/decoder"] = "rnn"  # runs from before model/decoder existed
    return {group: str(choice) for group, choice in found.items() if choice is not None}


def run_label(
    choices: Mapping[str, str],
    config: Mapping[str, Any],
    *,
    hidden: bool = True,
    context: bool = False,
    extra: Sequence[str] = (),
) -> str:
    """A run's name in tables and plots, e.g. ``gru + bahdanau, h=128``.

    Args:
        hidden: add ``h=<model.hidden_size>``.
        context: for ``attention=none``, add the context mode: ``gru + none (init)``.
        extra: further choice groups to name, e.g. ``("teacher_forcing",)`` → ``…, teacher_forcing=always``.
    """
    attention = choices.get("model/attention", "?")
    label = f"{choices.get('model/encoder', '?')} + {attention}"
    mode = _get(config, ("model", "context"))
    if context and attention == "none" and mode is not None:
        label += f" ({mode})"
    size = _get(config, ("model", "hidden_size"))
    if hidden and size is not None:
        label += f", h={size}"
    return label + "".join(f", {group}={choices.get(group, '?')}" for group in extra)


def run_name(choices: Mapping[str, str], config: Mapping[str, Any], swept: Mapping[str, str] = {}) -> str:
    """A run's W&B name, e.g. ``gru-bahdanau-h128-s2``: encoder, attention, hidden size, seed, then each other
    swept value as ``<last key part><value>`` (``-lr0.00123``, ``-max_words100``), floats to 3 digits."""
    covered = {"model/encoder", "model/attention", "model.hidden_size", "seed"}
    parts = [
        choices.get("model/encoder", "?"),
        choices.get("model/attention", "?"),
        f"h{_get(config, ('model', 'hidden_size'))}",
        f"s{_get(config, ('seed',))}",
    ]
    for key, value in swept.items():
        if key in covered:
            continue
        if re.fullmatch(r"-?\d*\.\d+(e-?\d+)?|-?\d+e-?\d+", value):  # a float: 3 significant digits
            value = f"{float(value):.3g}"
        parts.append(f"{key.replace('/', '.').rsplit('.', 1)[-1]}{value}")
    return "-".join(str(part) for part in parts)


def sweep_group(sweep_dir: str | Path) -> str:
    """The W&B group of a sweep's jobs: its directory relative to the working directory when inside it,
    without the leading ``multirun/`` (``bottleneck/2026-01-05_10-00-00``); at most 128 characters (the tail)."""
    path = Path(os.path.abspath(sweep_dir))
    if path.is_relative_to(Path.cwd()):
        path = path.relative_to(Path.cwd())
    parts = (
        path.parts[1:] if path.parts and path.parts[0] == "multirun" and len(path.parts) > 1 else path.parts
    )
    return "/".join(parts).lstrip("/")[-GROUP_CHARS:]


def run_tags(choices: Mapping[str, str], config: Mapping[str, Any]) -> list[str]:
    """W&B tags: ``attention:bahdanau``, ``encoder:gru``, ``data:…``, ``tf:…``, ``hidden:128``, then ``tags``."""
    tags = [f"{short}:{choices[group]}" for group, short in TAGGED_CHOICES.items() if group in choices]
    tags.append(f"hidden:{_get(config, ('model', 'hidden_size'))}")
    return tags + [str(tag) for tag in (config.get("tags") or [])]


# ------------------------------------------------------------------------------------------ writing


def means_off(value: Any) -> bool:
    """Whether a config option set to ``value`` is off: null or false, which is also how a run saved before
    the option existed behaved (options are added with "off" keeping the old behaviour)."""
    return value is None or value is False


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON via a temporary file and rename, so readers never see a half-written file."""
    write_atomic(path, json.dumps(_clean(data), indent=2, allow_nan=False) + "\n")


def build_results(
    *,
    status: str,
    choices: Mapping[str, str],
    config: dict,
    error: str | None = None,
    params: int | None = None,
    metrics: dict[str, float] | None = None,
    bleu_by_length: list[dict] | None = None,
    train: dict[str, float] | None = None,
    **extra: Any,
) -> dict:
    """The ``results.json`` document, schema 1 (docs/architecture.md lists every key)."""
    return {
        "schema": SCHEMA,
        "status": status,
        "error": error,
        "choices": {group: choices[group] for group in CHOICE_GROUPS if group in choices},
        "config": config,
        "params": params,
        "metrics": metrics or {},
        "bleu_by_length": bleu_by_length or [],
        "train": train or {},
        **extra,
    }


def write_predictions(
    path: Path, sources: Sequence[str], references: Sequence[str], hypotheses: Sequence[str]
) -> None:
    """Tab-separated ``source reference hypothesis`` with a header, raw detokenized text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerow(["source", "reference", "hypothesis"])
        writer.writerows(zip(sources, references, hypotheses, strict=True))


def write_sweep_plan(sweep_dir: str | Path, plan: Mapping[str, Any]) -> Path:
    """``<sweep_dir>/sweep.json``: how many jobs a multirun plans and which keys it sweeps
    (:func:`seq2seq.config.sweep.plan_sweep`)."""
    path = Path(sweep_dir) / SWEEP_PLAN
    write_json_atomic(path, dict(plan))
    return path


# ------------------------------------------------------------------------------------------ reading


def read_sweep_plan(sweep_dir: str | Path) -> dict[str, Any]:
    """The plan :func:`write_sweep_plan` saved, or ``{"planned": None, "swept": [], "group": None}``."""
    try:
        plan = json.loads((Path(sweep_dir) / SWEEP_PLAN).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        plan = {}
    return {
        "planned": plan.get("planned"),
        "swept": list(plan.get("swept") or []),
        "group": plan.get("group"),
    }


def read_predictions(path: Path) -> tuple[list[str], list[str], list[str]]:
    """Sources, references and hypotheses of a ``predictions/test.tsv`` (:func:`write_predictions`).

    Raises:
        RecordError: missing, unreadable, or without the ``source reference hypothesis`` header.
    """
    try:
        with Path(path).open(encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
    except OSError as err:
        raise RecordError(f"{path}: cannot read the predictions ({err})") from None
    if not rows or rows[0] != ["source", "reference", "hypothesis"] or any(len(r) != 3 for r in rows[1:]):
        raise RecordError(f"{path}: not a predictions file (expected columns source, reference, hypothesis)")
    sources, references, hypotheses = (
        (list(column) for column in zip(*rows[1:], strict=True)) if rows[1:] else ([], [], [])
    )
    return sources, references, hypotheses


@dataclass
class RunRecord:
    """A run's ``results.json``, read back (see :func:`build_results` for the keys)."""

    path: Path  # the run directory
    status: str
    error: str | None = None
    choices: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    params: int | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    bleu_by_length: list[dict[str, Any]] = field(default_factory=list)
    val_bleu_by_length: list[dict[str, Any]] = field(default_factory=list)
    position_accuracy: list[float | None] | None = None
    teacher_forced_position_accuracy: list[float | None] | None = None
    train: dict[str, float | None] = field(default_factory=dict)
    alignment: dict[str, Any] | None = None  # toy data with attention: accuracy, AER, gold mass, by length
    alignment_heads: list[dict[str, Any]] | None = None  # the same per Transformer decoder layer and head

    @classmethod
    def read(cls, run_dir: str | Path) -> RunRecord:
        """Read ``<run_dir>/results.json``.

        Raises:
            RecordError: missing, unreadable, not a JSON object, or not schema 1.
        """
        path = Path(run_dir) / RESULTS
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise RecordError(f"{path}: cannot read {RESULTS} ({err})") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            schema = data.get("schema") if isinstance(data, dict) else None
            raise RecordError(f"{path}: schema {schema!r} is not supported (expected {SCHEMA})")
        return cls(
            path=Path(run_dir),
            status=str(data.get("status") or "unknown"),
            error=data.get("error"),
            choices=data.get("choices") or {},
            config=data.get("config") or {},
            params=data.get("params"),
            metrics=data.get("metrics") or {},
            bleu_by_length=data.get("bleu_by_length") or [],
            val_bleu_by_length=data.get("val_bleu_by_length") or [],
            position_accuracy=data.get("position_accuracy"),
            teacher_forced_position_accuracy=data.get("teacher_forced_position_accuracy"),
            train=data.get("train") or {},
            alignment=data.get("alignment"),
            alignment_heads=data.get("alignment_heads"),
        )

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def hidden_size(self) -> int | None:
        return _get(self.config, ("model", "hidden_size"))

    def label(self, **options: Any) -> str:
        """:func:`run_label` of this run."""
        return run_label(self.choices, self.config, **options)
