"""Corpus scores on detokenized text (sacrebleu BLEU and chrF, exact match) and their split by source length.

All scores are on a 0–100 scale. Length buckets count *source words* (whitespace tokens of the raw
source), as in Bahdanau et al. (2015, Fig. 2) and Cho et al. (2014): ``edges=[1, 11, 21]`` gives the
buckets ``1-10``, ``11-20`` and ``21+``. An empty bucket has ``n = 0`` and null scores, never 0 BLEU.
"""

from __future__ import annotations

from collections.abc import Sequence

from sacrebleu.metrics import BLEU, CHRF

DEFAULT_EDGES = (1, 11, 21, 31, 41, 51)


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """sacrebleu corpus BLEU and chrF, and the percentage of exact matches."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    if not hypotheses:
        raise ValueError("cannot score an empty set of hypotheses")
    hyps, refs = list(hypotheses), [list(references)]
    exact = sum(h.strip() == r.strip() for h, r in zip(hypotheses, references, strict=True))
    return {
        "bleu": BLEU().corpus_score(hyps, refs).score,
        "chrf": CHRF().corpus_score(hyps, refs).score,
        "exact_match": 100.0 * exact / len(hypotheses),
    }


def bucket_bounds(edges: Sequence[int]) -> list[tuple[str, int, int | None]]:
    """``[1, 11, 21]`` → ``[("1-10", 1, 10), ("11-20", 11, 20), ("21+", 21, None)]``."""
    edges = [int(e) for e in edges]
    if not edges or edges[0] < 1 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        raise ValueError(f"eval.length_buckets={edges}: need increasing lower edges starting at >= 1")
    bounds = []
    for low, high in zip(edges, [*edges[1:], None], strict=True):
        if high is None:
            bounds.append((f"{low}+", low, None))
        else:
            bounds.append((f"{low}-{high - 1}" if high - 1 > low else f"{low}", low, high - 1))
    return bounds


def bleu_by_length(
    sources: Sequence[str],
    hypotheses: Sequence[str],
    references: Sequence[str],
    edges: Sequence[int] = DEFAULT_EDGES,
) -> list[dict]:
    """Score each source-length bucket separately (the ``bleu_by_length`` list of ``results.json``).

    Sources shorter than the first edge are counted in no bucket.
    """
    rows = []
    for label, low, high in bucket_bounds(edges):
        members = [
            i
            for i, src in enumerate(sources)
            if low <= len(src.split()) and (high is None or len(src.split()) <= high)
        ]
        row = {"bucket": label, "min_len": low, "max_len": high, "n": len(members)}
        if members:
            row.update(corpus_scores([hypotheses[i] for i in members], [references[i] for i in members]))
        else:
            row.update({"bleu": None, "chrf": None, "exact_match": None})
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
