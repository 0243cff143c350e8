"""Corpus scores on detokenized text (sacrebleu BLEU and chrF, exact match) and their split by source length.

All scores are on a 0–100 scale. Length buckets count *source words* (whitespace tokens of the raw
source), as in Bahdanau et al. (2015, Fig. 2) and Cho et al. (2014): ``edges=[1, 11, 21]`` gives the
buckets ``1-10``, ``11-20`` and ``21+``. An empty bucket has ``n = 0`` and null scores, never 0 BLEU.

With ``bootstrap = n > 1`` (``eval.bootstrap``) the corpus BLEU and chrF of a split, and the BLEU of each
non-empty bucket (resampled within the bucket), get a 95 % bootstrap interval ``[low, high]``; each
per-position accuracy always gets a Wilson interval (:mod:`seq2seq.evaluation.intervals`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sacrebleu.metrics import BLEU, CHRF

from seq2seq.data.lengths import bucket_bounds, words
from seq2seq.evaluation.alignment import AlignmentCounts, alignment_scores
from seq2seq.evaluation.head_alignment import Key, head_name, split_head_scores
from seq2seq.evaluation.intervals import resampled_interval, wilson_interval

DEFAULT_EDGES = (1, 11, 21, 31, 41, 51)


class SentenceStatistics:
    """sacrebleu's per-sentence BLEU and chrF statistics of a set of hypotheses, extracted once.

    sacrebleu's own ``corpus_score`` extracts these rows and scores their sum; so does :meth:`scores` for any
    subset of the sentences (a length bucket) and :meth:`interval` for bootstrap resamples — the same numbers
    as ``corpus_score`` on the subset's text, without tokenising and counting n-grams again for every bucket,
    interval and metric (a validation of 1,567 Bible sentences: 0.7 s instead of 2.3–2.8 s).
    """

    def __init__(self, hypotheses: Sequence[str], references: Sequence[str]) -> None:
        if len(hypotheses) != len(references):
            raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
        self.metrics = {"bleu": BLEU(), "chrf": CHRF()}
        hyps, refs = list(hypotheses), [list(references)]
        self.rows = {
            name: metric._extract_corpus_statistics(hyps, refs) if hyps else []
            for name, metric in self.metrics.items()
        }
        self.exact = [h.strip() == r.strip() for h, r in zip(hypotheses, references, strict=True)]

    def scores(self, members: Sequence[int] | None = None) -> dict[str, float]:
        """Corpus BLEU, chrF and exact-match percentage of the sentences ``members`` (default: all)."""
        chosen = range(len(self.exact)) if members is None else members
        if not chosen:
            raise ValueError("cannot score an empty set of hypotheses")
        scores = {
            name: float(metric._aggregate_and_compute([self.rows[name][i] for i in chosen]).score)
            for name, metric in self.metrics.items()
        }
        scores["exact_match"] = 100.0 * sum(self.exact[i] for i in chosen) / len(chosen)
        return scores

    def interval(self, name: str, n: int, members: Sequence[int] | None = None) -> list[float] | None:
        """95 % bootstrap ``[low, high]`` of metric ``name`` over ``members`` (default: all, and then this
        object's metric carries ``bs:n`` in its signature); None when ``n`` < 2 or no sentences."""
        metric = self.metrics[name] if members is None else type(self.metrics[name])()
        rows = self.rows[name] if members is None else [self.rows[name][i] for i in members]
        return resampled_interval(metric, rows, n)

    def signatures(self) -> dict[str, str]:
        """sacrebleu's signature of each metric (with ``bs:`` and ``seed:`` after :meth:`interval`)."""
        return {name: metric.get_signature().format() for name, metric in self.metrics.items()}


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """sacrebleu corpus BLEU and chrF, and the percentage of exact matches."""
    return SentenceStatistics(hypotheses, references).scores()


def corpus_intervals(
    hypotheses: Sequence[str],
    references: Sequence[str],
    bootstrap: int,
    statistics: SentenceStatistics | None = None,
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """95 % bootstrap intervals of corpus BLEU and chrF (``{"bleu": [low, high], "chrf": …}``, empty when
    ``bootstrap`` < 2) and the sacrebleu signature of each metric (with ``bs:`` and ``seed:`` when resampled).
    ``statistics``: the sentences' statistics when already extracted."""
    statistics = statistics or SentenceStatistics(hypotheses, references)
    intervals = {}
    for name in statistics.metrics:
        interval = statistics.interval(name, bootstrap)
        if interval is not None:
            intervals[name] = interval
    return intervals, statistics.signatures()


def bleu_by_length(
    sources: Sequence[str],
    hypotheses: Sequence[str],
    references: Sequence[str],
    edges: Sequence[int] = DEFAULT_EDGES,
    bootstrap: int = 0,
    statistics: SentenceStatistics | None = None,
) -> list[dict]:
    """Score each source-length bucket separately (the ``bleu_by_length`` list of ``results.json``).

    Sources shorter than the first edge are counted in no bucket. With ``bootstrap`` > 1 each row has
    ``bleu_ci``: ``[low, high]`` from resampling the bucket's own sentences (null for an empty bucket).
    ``statistics``: the sentences' statistics when already extracted.
    """
    statistics = statistics or SentenceStatistics(hypotheses, references)
    lengths = [words(src) for src in sources]
    rows = []
    for label, low, high in bucket_bounds(edges):
        members = [i for i, n in enumerate(lengths) if low <= n and (high is None or n <= high)]
        row = {"bucket": label, "min_len": low, "max_len": high, "n": len(members)}
        if members:
            row.update(statistics.scores(members))
        else:
            row.update({"bleu": None, "chrf": None, "exact_match": None})
        if bootstrap > 1:
            row["bleu_ci"] = statistics.interval("bleu", bootstrap, members)
        rows.append(row)
    return rows


def position_accuracy(correct: Sequence[Sequence[bool]], max_positions: int = 60) -> list[float | None]:
    """Token accuracy at each output position: ``result[i]`` is the fraction of sentences whose reference
    has more than ``i`` tokens and whose token ``i`` was right (None where no reference is that long).

    ``correct[s][i]`` says whether position ``i`` of sentence ``s`` matched the reference token. In
    free-running decoding one early error shifts or corrupts what follows, so the curve falls with the
    position; under teacher forcing it stays flat — the gap is exposure bias (Bengio et al. 2015).
    """
    curve: list[float | None] = []
    for i in range(max_positions):
        column = [row[i] for row in correct if len(row) > i]
        curve.append(100.0 * sum(column) / len(column) if column else None)
    return curve


def position_intervals(
    correct: Sequence[Sequence[bool]], max_positions: int = 60
) -> list[list[float] | None]:
    """Wilson 95 % intervals of :func:`position_accuracy`'s values, position by position (None where it is)."""
    intervals = []
    for i in range(max_positions):
        column = [row[i] for row in correct if len(row) > i]
        intervals.append(wilson_interval(sum(column), len(column)))
    return intervals


@dataclass
class SentenceOutput:
    """What validation/test keep of one sentence until the split is scored (gathered from every rank).

    Attributes:
        index: position in the split; source, reference: its text; hypothesis: the detokenized search output.
        entropy, steps: attention entropy summed over the hypothesis steps, and their number (0 without
            attention).
        free, forced: per reference token, whether the free-running / teacher-forced prediction was right.
        nll, tokens: summed cross-entropy of the reference (teacher-forced, EOS included) and its token count.
        alignment: teacher-forced attention against the gold alignment (toy data with attention), or None.
        head_alignment: the same per decoder ``(layer, head)`` (test split, Transformer decoder), or None.
    """

    index: int
    source: str
    reference: str
    hypothesis: str
    entropy: float
    steps: int
    free: list[bool]
    forced: list[bool]
    nll: float
    tokens: int
    alignment: AlignmentCounts | None = None
    head_alignment: dict[Key, AlignmentCounts | None] | None = None


@dataclass
class SplitScores:
    """A split scored at corpus level: what ``results.json``, the plots and the logs report of it.

    Attributes:
        scores: ``bleu``, ``chrf``, ``exact_match``; loss: mean cross-entropy per target token.
        attention_entropy: mean over every target step of the split (nats); None without attention.
        intervals: 95 % bootstrap ``[low, high]`` of ``bleu`` and ``chrf`` (empty when not resampled);
            signatures: sacrebleu's signature of each metric.
        position_accuracy_ci, teacher_forced_position_accuracy_ci: Wilson intervals of the two curves.
        alignment: attention against the gold alignment (``evaluation/alignment.py``), or None.
        alignment_heads: the same per decoder layer and head (``evaluation/head_alignment.py``), or None.
        statistics: the split's sacrebleu statistics (a second scoring with intervals reuses them).
    """

    sources: list[str]
    references: list[str]
    hypotheses: list[str]
    scores: dict[str, float]
    loss: float
    attention_entropy: float | None
    bleu_by_length: list[dict]
    position_accuracy: list[float | None]
    teacher_forced_position_accuracy: list[float | None]
    intervals: dict[str, list[float]] = field(default_factory=dict)
    signatures: dict[str, str] = field(default_factory=dict)
    position_accuracy_ci: list[list[float] | None] = field(default_factory=list)
    teacher_forced_position_accuracy_ci: list[list[float] | None] = field(default_factory=list)
    alignment: dict | None = None
    alignment_heads: list[dict] | None = None
    statistics: SentenceStatistics | None = field(default=None, repr=False, compare=False)

    def logged(self) -> dict[str, float]:
        """The scalars logged per split: ``loss``, ``ppl``, the scores, (with attention) the entropy, and the
        BLEU of every non-empty length bucket as ``bleu_by_length/<bucket>`` (``bleu_by_length/51+``); on toy
        data the alignment accuracy and AER, per Transformer head as ``alignment_accuracy/L2H3``."""
        logged = {"loss": self.loss, "ppl": math.exp(min(self.loss, 50.0)), **self.scores}
        if self.attention_entropy is not None:
            logged["attention_entropy"] = self.attention_entropy
        for row in self.bleu_by_length:
            if row.get("bleu") is not None:
                logged[f"bleu_by_length/{row['bucket']}"] = row["bleu"]
        if self.alignment is not None:
            logged["alignment_accuracy"] = self.alignment["accuracy"]
            logged["aer"] = self.alignment["aer"]
        for entry in self.alignment_heads or []:
            if entry["accuracy"] is not None:
                logged[f"alignment_accuracy/{head_name(entry)}"] = entry["accuracy"]
        return logged

    def summary(self) -> dict[str, Any]:
        """The plain-data part kept of the best validation (inside checkpoints)."""
        return {
            "scores": self.scores,
            "intervals": self.intervals,
            "bleu_by_length": self.bleu_by_length,
            "attention_entropy": self.attention_entropy,
            "position_accuracy": self.position_accuracy,
        }


def score_split(
    outputs: Sequence[SentenceOutput],
    edges: Sequence[int],
    max_positions: int,
    bootstrap: int = 0,
    statistics: SentenceStatistics | None = None,
) -> SplitScores:
    """Corpus scores, BLEU by source length, attention entropy and per-position accuracy of a whole split,
    with their 95 % intervals when ``bootstrap`` > 1 (that many resamples).

    ``outputs`` must hold every sentence of the split exactly once, in split order; ``statistics``: their
    sacrebleu statistics when already extracted (an earlier ``score_split`` of the same outputs keeps them).
    """
    sources = [out.source for out in outputs]
    references = [out.reference for out in outputs]
    hypotheses = [out.hypothesis for out in outputs]
    steps = sum(out.steps for out in outputs)
    statistics = statistics or SentenceStatistics(hypotheses, references)
    intervals, signatures = corpus_intervals(hypotheses, references, bootstrap, statistics)
    free, forced = [out.free for out in outputs], [out.forced for out in outputs]
    return SplitScores(
        sources=sources,
        references=references,
        hypotheses=hypotheses,
        scores=statistics.scores(),
        loss=sum(out.nll for out in outputs) / max(sum(out.tokens for out in outputs), 1),
        attention_entropy=sum(out.entropy for out in outputs) / steps if steps > 0 else None,
        bleu_by_length=bleu_by_length(sources, hypotheses, references, edges, bootstrap, statistics),
        position_accuracy=position_accuracy(free, max_positions),
        teacher_forced_position_accuracy=position_accuracy(forced, max_positions),
        intervals=intervals,
        signatures=signatures,
        position_accuracy_ci=position_intervals(free, max_positions),
        teacher_forced_position_accuracy_ci=position_intervals(forced, max_positions),
        alignment=alignment_scores(sources, [out.alignment for out in outputs], edges),
        alignment_heads=split_head_scores(sources, [out.head_alignment for out in outputs], edges),
        statistics=statistics,
    )
