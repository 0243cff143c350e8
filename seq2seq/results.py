"""``results.json`` and ``predictions/test.tsv``: what every run leaves behind (see DESIGN.md)."""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SCHEMA = 1
CHOICE_GROUPS = ("data", "model/encoder", "model/attention", "teacher_forcing", "decoding")


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
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, delete=False, suffix=".tmp", encoding="utf-8"
    ) as tmp:
        json.dump(_clean(data), tmp, indent=2, allow_nan=False)
        tmp.write("\n")
    os.replace(tmp.name, path)


def build_results(
    *,
    status: str,
    choices: dict[str, str],
    config: dict,
    error: str | None = None,
    params: int | None = None,
    metrics: dict[str, float] | None = None,
    bleu_by_length: list[dict] | None = None,
    train: dict[str, float] | None = None,
    **extra: Any,
) -> dict:
    """The ``results.json`` document, schema 1."""
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
