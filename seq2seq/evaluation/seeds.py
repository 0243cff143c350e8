"""Runs that differ only in their seed, grouped: the mean of each score over the seeds and its spread.

Two random axes are kept apart: ``seed`` (model initialisation, dropout, batch order) and ``data.seed`` (which
sentences a generated or re-split data set holds). :func:`group_by_seed` puts runs in one group when their
resolved configs are equal once the axes named in ``axes`` (default: ``seed`` only) and the run-specific keys
(:data:`RUN_SPECIFIC`: paths, tags, logger, threads, resume) are left out, and an option set to null or false
counts as absent (a run from before an option existed groups with one that leaves it off). A group's spread is given both as the
sample standard deviation (n − 1 in the denominator) and as the min–max range, and always with the number of
seeds: with 3 seeds the standard deviation is itself very uncertain, the range is what was seen.

It imports only the standard library, like :mod:`seq2seq.evaluation.record`, so ``scripts/compare_runs.py``
groups with a plain ``python``.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from seq2seq.evaluation.record import RunRecord, means_off

SEED_AXES = {"seed": ("seed",), "data.seed": ("data", "seed")}
RUN_SPECIFIC = ("paths", "tags", "logger", "threads", "ckpt_path")


@dataclass
class Spread:
    """Mean, sample standard deviation (None for one value), min and max of ``n`` values."""

    n: int
    mean: float
    std: float | None
    low: float
    high: float

    def text(self, digits: int = 1) -> str:
        """``35.2 ± 1.3 sd (33.9–36.5, 3 seeds)``; one seed: ``35.2 (1 seed)``."""
        if self.n == 1:
            return f"{self.mean:.{digits}f} (1 seed)"
        return (
            f"{self.mean:.{digits}f} ± {self.std:.{digits}f} sd "
            f"({self.low:.{digits}f}–{self.high:.{digits}f}, {self.n} seeds)"
        )


def spread(values: Sequence[float | None]) -> Spread | None:
    """The :class:`Spread` of the values that are numbers (None and NaN left out); None when there are none."""
    numbers = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not numbers:
        return None
    std = statistics.stdev(numbers) if len(numbers) > 1 else None
    return Spread(len(numbers), statistics.fmean(numbers), std, min(numbers), max(numbers))


def _without(config: Mapping[str, Any], paths: Sequence[Sequence[str]]) -> dict[str, Any]:
    """A deep copy of ``config`` without the keys at ``paths`` (``("data", "seed")`` → ``config["data"]["seed"]``)."""
    out = json.loads(json.dumps(config, default=str))
    for path in paths:
        node = out
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return out


def variant_key(run: RunRecord, axes: Sequence[str] = ("seed",)) -> str:
    """What makes a run a variant: its choices and its config without the seed ``axes`` and the run-specific
    keys, as JSON."""
    paths = [SEED_AXES[a] for a in axes] + [(key,) for key in RUN_SPECIFIC]
    return json.dumps([run.choices, _set_options(_without(run.config, paths))], sort_keys=True)


def _set_options(node: Any) -> Any:
    """``node`` without the keys whose value is null or false, at every depth: those mean "off", whether the
    run set them or predates them."""
    if isinstance(node, dict):
        return {k: _set_options(v) for k, v in node.items() if not means_off(v)}
    return node


def seed_of(run: RunRecord, axes: Sequence[str] = ("seed",)) -> str:
    """The run's value on the seed ``axes``, e.g. ``"3"`` or ``"seed=3, data.seed=1"``."""
    values = []
    for axis in axes:
        node: Any = run.config
        for key in SEED_AXES[axis]:
            node = node.get(key) if isinstance(node, Mapping) else None
        values.append((axis, node))
    if len(values) == 1:
        return str(values[0][1])
    return ", ".join(f"{axis}={value}" for axis, value in values)


@dataclass
class SeedGroup:
    """Completed runs of one variant that differ only on the seed axes, in the order they were given."""

    runs: list[RunRecord] = field(default_factory=list)
    axes: tuple[str, ...] = ("seed",)

    @property
    def seeds(self) -> list[str]:
        return [seed_of(run, self.axes) for run in self.runs]

    def metric(self, key: str) -> Spread | None:
        """The spread over the seeds of one ``results.json`` metric, e.g. ``test/bleu``."""
        return spread([run.metrics.get(key) for run in self.runs])

    def buckets(self) -> list[dict[str, Any]]:
        """Per length bucket of the first run: ``bucket``, ``n`` and ``bleu``, the :class:`Spread` of its BLEU
        over the seeds (None when every seed's bucket is empty)."""
        rows = []
        for row in self.runs[0].bleu_by_length:
            values = [
                next((r.get("bleu") for r in run.bleu_by_length if r["bucket"] == row["bucket"]), None)
                for run in self.runs
            ]
            rows.append({"bucket": row["bucket"], "n": row.get("n", 0), "bleu": spread(values)})
        return rows


def group_by_seed(runs: Sequence[RunRecord], axes: Sequence[str] = ("seed",)) -> list[SeedGroup]:
    """Completed runs grouped into variants (see the module docstring), in the order of their first run."""
    unknown = [a for a in axes if a not in SEED_AXES]
    if unknown:
        raise ValueError(f"seed axis {unknown[0]!r}: choose from {', '.join(SEED_AXES)}")
    groups: dict[str, SeedGroup] = {}
    for run in runs:
        if run.completed:
            groups.setdefault(variant_key(run, axes), SeedGroup(axes=tuple(axes))).runs.append(run)
    return list(groups.values())
