"""Alignment quality: how closely attention follows the gold word alignment of the toy task.

The decoder is fed the reference (teacher forcing), so its attention at the step that predicts target word
``j`` can be compared with the source word ``j`` translates (``data/toy_alignment.py``). Attention
over SentencePiece pieces is summed per source word; a target word is judged at its first piece. Per split:

* **accuracy** — % of target words whose attention argmax is the gold source word;
* **AER** — the alignment error rate of Och & Ney (2003), ``1 - (|A∩S| + |A∩P|) / (|A| + |S|)``, with the
  argmax links as ``A`` and the gold links as both sure ``S`` and possible ``P`` links (in %). With exactly one
  predicted and one gold link per target word it equals ``100 - accuracy``; it is reported under its
  usual name for comparison with the alignment literature;
* **gold mass** — the mean attention weight on the gold source word (%): how peaked on it attention is.

Each also by source-length bucket (``data/lengths.py``). Seed 003's claim that attention learns alignments
"that closely resemble" word alignments is measured by these numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from seq2seq.data.batching import Batch
from seq2seq.data.errors import DataError
from seq2seq.data.lengths import bucket_bounds, words
from seq2seq.data.tokenizer import EOS_ID, Tokenizer
from seq2seq.data.toy_alignment import toy_alignment


def word_of_each_piece(tokenizer: Tokenizer, text: str) -> list[int]:
    """The 0-based word index of each piece of ``tokenizer.encode(text)``.

    SentencePiece never joins two whitespace words into one piece, so a text's pieces are its words' pieces
    in turn (an unknown word is one ``<unk>`` piece).
    """
    return [index for index, word in enumerate(text.split()) for _ in tokenizer.encode(word)]


@dataclass(frozen=True)
class AlignmentCounts:
    """One sentence: target words judged, how many argmaxes hit gold, and the summed attention on gold."""

    words: int
    correct: int
    gold_mass: float


def sentence_alignment(
    weights: torch.Tensor, source_words: Sequence[int], target_words: Sequence[int], gold: Sequence[int]
) -> AlignmentCounts | None:
    """Compare one sentence's teacher-forced attention with its gold alignment.

    Args:
        weights: ``(T, S)`` attention of each target piece step over the source pieces (in the model's order).
        source_words: the word index of each of the ``S`` source pieces.
        target_words: the word index of each of the ``T`` target pieces (EOS excluded).
        gold: per target word, the gold source word.

    Returns:
        the counts, or None when the pieces do not make up the gold's words (nothing to judge).
    """
    n_source = max(source_words, default=-1) + 1
    if not gold or max(target_words, default=-1) + 1 != len(gold) or max(gold) >= n_source:
        return None
    per_word = torch.zeros(weights.size(0), n_source, dtype=torch.float64)
    per_word.index_add_(1, torch.as_tensor(list(source_words)), weights.double()[:, : len(source_words)])
    first_piece = [target_words.index(j) for j in range(len(gold))]
    rows = per_word[first_piece]  # (W_tgt, W_src)
    gold_index = torch.as_tensor(list(gold))
    correct = int((rows.argmax(dim=-1) == gold_index).sum())
    mass = float(rows.gather(1, gold_index.unsqueeze(1)).sum())
    return AlignmentCounts(len(gold), correct, mass)


def _summary(counts: Sequence[AlignmentCounts]) -> dict[str, float | None]:
    total = sum(c.words for c in counts)
    if total == 0:
        return {"accuracy": None, "aer": None, "gold_mass": None}
    accuracy = 100.0 * sum(c.correct for c in counts) / total
    # |A| = |S| = total, |A∩S| = |A∩P| = correct: AER = 1 - 2·correct / (2·total).
    return {
        "accuracy": accuracy,
        "aer": 100.0 - accuracy,
        "gold_mass": 100.0 * sum(c.gold_mass for c in counts) / total,
    }


def alignment_scores(
    sources: Sequence[str], counts: Sequence[AlignmentCounts | None], edges: Sequence[int]
) -> dict | None:
    """The split's ``alignment`` entry of ``results.json``: overall and ``by_length`` rows (``bucket``, ``n``
    sentences, the three scores); None when no sentence could be judged."""
    judged = [(source, c) for source, c in zip(sources, counts, strict=True) if c is not None]
    if not judged:
        return None
    rows = []
    for label, low, high in bucket_bounds(edges):
        members = [
            c for source, c in judged if low <= words(source) and (high is None or words(source) <= high)
        ]
        rows.append(
            {"bucket": label, "min_len": low, "max_len": high, "n": len(members), **_summary(members)}
        )
    return {**_summary([c for _, c in judged]), "sentences": len(judged), "by_length": rows}


@dataclass(frozen=True)
class GoldSentence:
    """What judging one sentence of a batch needs: its ``n_source`` source and ``n_target`` target pieces (EOS
    excluded), the word of each piece (the source in the model's order) and the gold alignment."""

    n_source: int
    n_target: int
    source_words: list[int]
    target_words: list[int]
    gold: list[int]


def gold_sentences(
    batch: Batch, data_cfg: Any, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer
) -> list[GoldSentence | None]:
    """Each sentence of a toy batch as :func:`judge` needs it; None where it cannot be judged (not a sentence of
    the toy grammar, or its text does not re-tokenize to the batch's ids).

    Args:
        data_cfg: the ``data`` config (``reverse_source``: the batch's source ids are reversed).
    """
    reverse_source = bool(data_cfg.get("reverse_source", False))
    sentences: list[GoldSentence | None] = []
    for row, source in enumerate(batch.sources):
        try:
            gold = toy_alignment(source)
        except DataError:
            sentences.append(None)
            continue
        n_source = int(batch.src_lengths[row])
        source_words = word_of_each_piece(src_tokenizer, source)
        source_words = source_words[::-1] if reverse_source else source_words  # the model's order
        target_words = word_of_each_piece(tgt_tokenizer, batch.references[row])
        target = batch.tgt_out[row].tolist()
        n_target = target.index(EOS_ID) if EOS_ID in target else len(target)
        if len(source_words) != n_source or len(target_words) != n_target:
            sentences.append(None)
            continue
        sentences.append(GoldSentence(n_source, n_target, source_words, target_words, gold))
    return sentences


def judge(weights: torch.Tensor, sentences: Sequence[GoldSentence | None]) -> list[AlignmentCounts | None]:
    """:func:`sentence_alignment` of each sentence of a batch.

    Args:
        weights: ``(B, T, S)`` teacher-forced attention (one head's, or an average), rows in batch order.
        sentences: :func:`gold_sentences` of the same batch.
    """
    weights = weights.float().cpu()
    return [
        None
        if s is None
        else sentence_alignment(
            weights[row, : s.n_target, : s.n_source], s.source_words, s.target_words, s.gold
        )
        for row, s in enumerate(sentences)
    ]


@torch.no_grad()
def batch_alignments(
    model: Any, batch: Batch, data_cfg: Any, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer
) -> list[AlignmentCounts | None]:
    """Each sentence of a toy batch: the model's teacher-forced attention against ``toy_alignment``.

    All None unless the data is ``toy_translation`` (the only data with gold alignments) and the model attends.

    Args:
        model: an :class:`~seq2seq.models.seq2seq.EncoderDecoder`.
        data_cfg: the ``data`` config (``task``; ``reverse_source``: the batch's source ids are reversed).
    """
    if data_cfg.get("task") != "toy_translation" or model.decoder.attention is None:
        return [None] * len(batch.sources)
    sentences = gold_sentences(batch, data_cfg, src_tokenizer, tgt_tokenizer)
    if not any(sentences):
        return [None] * len(batch.sources)
    _, weights = model(batch.src, batch.src_lengths, batch.tgt_in, return_attention=True)  # (B, T, S)
    return judge(weights, sentences)
