"""The dashboard's seed and significance view: per variant (jobs equal but for their seed) the mean and spread
over the seeds, each seed's bootstrap interval, BLEU by length averaged over the seeds, and each job's paired
test against the baseline variant's job of the same seed.

Spread is said both ways: sample standard deviation and min–max, with the number of seeds
(:mod:`seq2seq.evaluation.seeds`). The baseline is the ``attention=none`` variant when the sweep has one, else
the first variant; tests are sacrebleu's paired bootstrap and approximate randomization
(:mod:`seq2seq.evaluation.significance`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from seq2seq.dashboard.runs import Run, variant_labels
from seq2seq.evaluation.record import RecordError
from seq2seq.evaluation.seeds import SeedGroup, group_by_seed, seed_of
from seq2seq.evaluation.significance import Outputs, SignificanceError, paired_test
from seq2seq.evaluation.style import variant_style

SPREAD = "mean ± sample sd (min–max, seeds)"


def _label(group: SeedGroup, labels: dict[str, str]) -> str:
    return labels[group.runs[0].job].split(" [")[0]  # variant_labels adds " [job]" to seeds of one variant


def _interval(run: Run, key: str) -> str:
    interval = run.metrics.get(f"{key}_ci")
    return f"{seed_of(run)}: [{interval[0]:.1f}, {interval[1]:.1f}]" if interval else f"{seed_of(run)}: –"


def variant_table(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """One row per variant: its seeds, test BLEU and chrF as mean ± sd (min–max, n), and the 95 % bootstrap
    interval of each seed's test BLEU."""
    groups = group_by_seed([r for r in runs if r.completed])
    labels = variant_labels([run for g in groups for run in g.runs])
    columns = ["variant", "seeds", f"test BLEU: {SPREAD}", "test BLEU 95% CI per seed", f"chrF: {SPREAD}"]
    rows = []
    for group in groups:
        bleu, chrf = group.metric("test/bleu"), group.metric("test/chrf")
        rows.append(
            [
                _label(group, labels),
                f"{len(group.runs)}: {', '.join(group.seeds)}",
                bleu.text() if bleu else "–",
                "; ".join(_interval(run, "test/bleu") for run in group.runs),
                chrf.text() if chrf else "–",
            ]
        )
    return columns, rows


def bleu_by_length_over_seeds(runs: list[Run], path: Path) -> Path | None:
    """Test BLEU by length bucket, one line per variant: the mean over its seeds, a band from the lowest to the
    highest seed; None unless some variant has two seeds or more."""
    groups = group_by_seed([r for r in runs if r.completed and r.bleu_by_length])
    if not any(len(g.runs) > 1 for g in groups):
        return None
    labels = variant_labels([run for g in groups for run in g.runs])
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    for group in groups:
        rows = group.buckets()
        x = np.arange(len(rows))
        mean, low, high = (
            np.array([math.nan if r["bleu"] is None else getattr(r["bleu"], k) for r in rows], dtype=float)
            for k in ("mean", "low", "high")
        )
        style = {"marker": "o", **variant_style(group.runs[0].choices)}  # the look it has in every figure
        (line,) = ax.plot(x, mean, **style, label=f"{_label(group, labels)} ({len(group.runs)} seeds)")
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xticks(x, [r["bucket"] for r in rows])
    ax.set(
        xlabel="source length (words)",
        ylabel="test BLEU",
        title="BLEU by length: mean over seeds (band: min–max)",
    )
    ax.set_ylim(0, 100)  # BLEU's whole range, as in every figure
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def significance_table(
    runs: list[Run], n_bootstrap: int = 1000, n_trials: int = 10000, baseline: str | None = None
) -> tuple[str, list[str], list[list[str]]]:
    """Each completed job against the baseline variant's job of the same seed (its first job when it lacks
    that seed): test BLEU difference and the two p-values (whole test set; ``compare_runs`` adds buckets).
    The baseline variant is that of job ``baseline``, else the ``attention=none`` one, else the first.
    Returns (baseline label, columns, rows); no rows with a single variant.

    Raises:
        ValueError: ``baseline`` names no completed job.
    """
    groups = group_by_seed([r for r in runs if r.completed])
    if baseline is not None and not any(run.job == baseline for g in groups for run in g.runs):
        raise ValueError(f"baseline={baseline}: no completed job of that name; give a job directory, e.g. 0")
    if len(groups) < 2:
        return "", [], []
    labels = variant_labels([run for g in groups for run in g.runs])
    base = next(
        (g for g in groups if any(run.job == baseline for run in g.runs)),
        next((g for g in groups if g.runs[0].choices.get("model/attention") == "none"), groups[0]),
    )
    columns = ["job", "variant", "seed", "against job", "Δ BLEU", "p bootstrap", "p AR"]
    rows = []
    for group in groups:
        if group is base:
            continue
        for run in group.runs:
            other = next((b for b in base.runs if seed_of(b) == seed_of(run)), base.runs[0])
            try:
                base_out, run_out = Outputs.of_run(other, other.job), Outputs.of_run(run, run.job)
                overall = paired_test(base_out, run_out, None, ("BLEU",), n_bootstrap, n_trials)
            except (SignificanceError, RecordError) as error:
                rows.append([run.job, _label(group, labels), seed_of(run), other.job, str(error), "", ""])
                continue
            p = overall.p["BLEU"]
            cells = [f"{overall.delta():+.1f}", f"{p['bs']:.3g}", f"{p['ar']:.3g}"]
            rows.append([run.job, _label(group, labels), seed_of(run), other.job, *cells])
    return _label(base, labels), columns, rows
