"""Paired significance of one run against a baseline on the same test sentences, overall and per length bucket.

Both tests are sacrebleu's (``sacrebleu.significance.PairedTest``), on the hypotheses each run wrote to
``predictions/test.tsv``:

* paired bootstrap resampling (Koehn 2004): the sentences resampled with replacement, the same resamples for
  both systems; p = how often the resampled difference, centred, is at least the observed one;
* approximate randomization (Riezler & Maxwell 2005): each sentence's two outputs swapped at random between the
  systems; p = how often the shuffled difference is at least the observed one.

Both are two-sided, seeded by ``SACREBLEU_SEED`` (12345 unless set). Per bucket the test runs on the bucket's
sentences only (the buckets of the baseline's ``bleu_by_length``). One departure: a difference of exactly 0
gets p = 1 (sacrebleu counts only strictly larger sampled differences, which gives identical systems
p = 1/(N+1), the smallest p it can give).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.significance import PairedTest

from seq2seq.data.lengths import words
from seq2seq.evaluation.record import PREDICTIONS, RunRecord, read_predictions

TESTS = {"bs": "paired bootstrap", "ar": "approximate randomization"}


class SignificanceError(ValueError):
    """Two runs that cannot be compared sentence by sentence (other test sets, no predictions)."""


@dataclass
class Outputs:
    """What a run decoded: its test sources, references and hypotheses, in test-set order."""

    name: str
    sources: list[str]
    references: list[str]
    hypotheses: list[str]

    @classmethod
    def of_run(cls, run: RunRecord, name: str | None = None) -> Outputs:
        """``<run>/predictions/test.tsv`` of a run directory read back."""
        path = run.path / PREDICTIONS
        if not path.exists():
            raise SignificanceError(
                f"{path} does not exist: paired tests need the per-sentence outputs of a completed run"
            )
        sources, references, hypotheses = read_predictions(path)
        return cls(name or str(run.path), sources, references, hypotheses)


@dataclass
class Comparison:
    """One system against the baseline on one set of sentences (all of them, or a bucket).

    Attributes:
        n: sentences; baseline, system: their scores per metric (``"BLEU"``, ``"chrF"``);
        p: per metric, the p-value of each test (``"bs"``, ``"ar"``); empty when ``n`` = 0.
    """

    n: int
    baseline: dict[str, float] = field(default_factory=dict)
    system: dict[str, float] = field(default_factory=dict)
    p: dict[str, dict[str, float]] = field(default_factory=dict)

    def delta(self, metric: str = "BLEU") -> float | None:
        return self.system[metric] - self.baseline[metric] if metric in self.system else None


def check_same_test_set(baseline: Outputs, system: Outputs) -> None:
    """Refuse a pair scored on different sentences: paired tests pair sentence i with sentence i."""
    if len(baseline.sources) != len(system.sources):
        raise SignificanceError(
            f"{system.name} was scored on {len(system.sources)} test sentences, the baseline {baseline.name} on "
            f"{len(baseline.sources)}: paired tests need the same test set; compare runs of the same data config"
        )
    for i, pair in enumerate(
        zip(baseline.sources, baseline.references, system.sources, system.references, strict=True)
    ):
        if pair[:2] != pair[2:]:
            raise SignificanceError(
                f"{system.name} and the baseline {baseline.name} were scored on different test sets (sentence "
                f"{i + 1} differs); compare runs of the same data config and data.seed"
            )


def paired_test(
    baseline: Outputs,
    system: Outputs,
    members: Sequence[int] | None = None,
    metrics: Sequence[str] = ("BLEU",),
    n_bootstrap: int = 1000,
    n_trials: int = 10000,
) -> Comparison:
    """Paired bootstrap and approximate randomization of ``system`` against ``baseline`` on the sentences
    ``members`` (all when None), for each of ``metrics`` (``"BLEU"``, ``"chrF"``)."""
    check_same_test_set(baseline, system)
    idx = list(range(len(baseline.sources))) if members is None else list(members)
    result = Comparison(n=len(idx))
    if not idx:
        return result
    refs = [[baseline.references[i] for i in idx]]
    named = [
        ("baseline", [baseline.hypotheses[i] for i in idx]),
        ("system", [system.hypotheses[i] for i in idx]),
    ]
    for test, samples in (("bs", n_bootstrap), ("ar", n_trials)):
        chosen = {"BLEU": BLEU(), "chrF": CHRF()}
        _, scores = PairedTest(named, {m: chosen[m] for m in metrics}, refs, test, samples)()
        for metric in metrics:
            key = next(k for k in scores if k.startswith(metric))  # sacrebleu names chrF "chrF2"
            base, other = scores[key]
            result.baseline[metric], result.system[metric] = base.score, other.score
            # sacrebleu counts sampled differences strictly larger than the observed one, so an observed
            # difference of exactly 0 (identical outputs) would get p = 1/(N+1); every sample is >= 0: p = 1
            same = base.score == other.score
            result.p.setdefault(metric, {})[test] = 1.0 if same else float(other.p_value)
    return result


def bucket_members(sources: Sequence[str], rows: Sequence[dict]) -> list[tuple[str, list[int]]]:
    """Per ``bleu_by_length`` row, its label and the indices of the sources in its word range."""
    out = []
    for row in rows:
        low, high = row.get("min_len") or 1, row.get("max_len")
        members = [i for i, s in enumerate(sources) if low <= words(s) and (high is None or words(s) <= high)]
        out.append((row["bucket"], members))
    return out


def compare_to_baseline(
    baseline_dir: str | Path, system_dir: str | Path, n_bootstrap: int = 1000, n_trials: int = 10000
) -> tuple[Comparison, list[tuple[str, Comparison]]]:
    """BLEU and chrF overall, and BLEU per length bucket (the baseline's buckets), of the run in
    ``system_dir`` against the run in ``baseline_dir``; raises :class:`SignificanceError` for other test sets."""
    base_run, sys_run = RunRecord.read(baseline_dir), RunRecord.read(system_dir)
    base, other = Outputs.of_run(base_run), Outputs.of_run(sys_run)
    overall = paired_test(base, other, None, ("BLEU", "chrF"), n_bootstrap, n_trials)
    buckets = [
        (label, paired_test(base, other, members, ("BLEU",), n_bootstrap, n_trials))
        for label, members in bucket_members(base.sources, base_run.bleu_by_length)
    ]
    return overall, buckets
