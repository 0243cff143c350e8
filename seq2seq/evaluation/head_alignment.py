"""Alignment quality per decoder layer and head of a Transformer: which heads align words?

``evaluation/alignment.py`` scores the Transformer decoder's last-layer cross-attention averaged over heads.
Heads of one layer can specialise — some attend to the aligned source word, others to neighbours or the
sentence end (Voita et al. 2019, "Analyzing multi-head self-attention") — and lower layers may align better or
worse than the last. Here every layer's cross-attention is taken per head under teacher forcing
(``TransformerDecoder.cross_attention_heads``, ``(L, B, h, T, S)``) and each head, and each layer's head average,
is judged against the toy task's gold word alignment with the same accuracy / AER / gold mass.

Layers and heads are numbered from 1 in the scored entries; ``head: None`` is a layer's average over its heads
(the last layer's average is what ``test/alignment_accuracy`` reports). Training and ``seq2seq-evaluate`` score
the test split this way for every Transformer decoder on toy data (``results.json``'s ``alignment_heads``); the
analysis ``seq2seq.analysis.alignment_heads`` does it for any checkpoint and number of sentences.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from seq2seq.data.batching import Batch
from seq2seq.data.tokenizer import Tokenizer
from seq2seq.evaluation.alignment import (
    AlignmentCounts,
    GoldSentence,
    alignment_scores,
    gold_sentences,
    judge,
)
from seq2seq.models.transformer import TransformerDecoder

SCORES = ("accuracy", "aer", "gold_mass")
Key = tuple[int, int | None]  # 0-based (layer, head); head None = the layer's average over heads


def has_heads(model: Any) -> bool:
    """Whether ``model``'s decoder is a Transformer (cross-attention with heads in every layer)."""
    return isinstance(model.decoder, TransformerDecoder)


@torch.no_grad()
def attention_heads(model: Any, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
    """Teacher-forced cross-attention of every decoder layer and head, ``(L, B, h, T, S)``.

    Raises:
        ValueError: the model's decoder is not a Transformer (an RNN decoder has one head-less attention).
    """
    if not has_heads(model):
        raise ValueError(
            "per-head alignment needs a Transformer decoder (model/decoder=transformer); this run's decoder is "
            "recurrent, with one attention whose alignment results.json already reports (test/alignment_accuracy)"
        )
    memory, _ = model.encode(src, src_lengths)
    return model.decoder.cross_attention_heads(tgt_in, memory)


def head_counts(
    heads: Tensor, sentences: Sequence[GoldSentence | None]
) -> dict[Key, list[AlignmentCounts | None]]:
    """One batch judged per ``(layer, head)`` and per ``(layer, None)`` (the head average).

    Args:
        heads: ``(L, B, h, T, S)`` attention, as :func:`attention_heads` returns it.
        sentences: the batch's :func:`~seq2seq.evaluation.alignment.gold_sentences`.
    """
    counts: dict[Key, list[AlignmentCounts | None]] = {}
    for layer in range(heads.size(0)):
        for head in range(heads.size(2)):
            counts[layer, head] = judge(heads[layer, :, head], sentences)
        counts[layer, None] = judge(heads[layer].mean(dim=1), sentences)
    return counts


def batch_head_alignments(
    model: Any, batch: Batch, data_cfg: Any, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer
) -> list[dict[Key, AlignmentCounts | None] | None]:
    """Per sentence of a toy batch, its counts for every ``(layer, head)`` key (:func:`head_counts`); all None
    unless the data is ``toy_translation`` and the decoder a Transformer."""
    if data_cfg.get("task") != "toy_translation" or not has_heads(model):
        return [None] * len(batch.sources)
    sentences = gold_sentences(batch, data_cfg, src_tokenizer, tgt_tokenizer)
    if not any(sentences):
        return [None] * len(batch.sources)
    counts = head_counts(attention_heads(model, batch.src, batch.src_lengths, batch.tgt_in), sentences)
    return [{key: judged[row] for key, judged in counts.items()} for row in range(len(batch.sources))]


def score_heads(
    sources: Sequence[str], counts: dict[Key, Sequence[AlignmentCounts | None]], edges: Sequence[int]
) -> list[dict[str, Any]]:
    """One entry per key of ``counts``: ``layer``, ``head`` (1-based; None = the head average) and
    :func:`~seq2seq.evaluation.alignment.alignment_scores` (accuracy, AER, gold mass, by length) — or, when no
    sentence could be judged, those scores as None."""
    entries = []
    for (layer, head), judged in sorted(
        counts.items(), key=lambda kv: (kv[0][0], kv[0][1] is None, kv[0][1])
    ):
        scores = alignment_scores(sources, judged, edges) or {name: None for name in SCORES}
        entries.append({"layer": layer + 1, "head": None if head is None else head + 1, **scores})
    return entries


def split_head_scores(
    sources: Sequence[str],
    per_sentence: Sequence[dict[Key, AlignmentCounts | None] | None],
    edges: Sequence[int],
) -> list[dict[str, Any]] | None:
    """A split's :func:`score_heads` from each sentence's :func:`batch_head_alignments` entry; None when no
    sentence has one (not a Transformer decoder, or not toy data)."""
    keys = sorted(
        {key for entry in per_sentence if entry for key in entry}, key=lambda k: (k[0], k[1] is None, k[1])
    )
    if not keys:
        return None
    counts = {key: [entry.get(key) if entry else None for entry in per_sentence] for key in keys}
    return score_heads(sources, counts, edges)


def head_name(entry: dict[str, Any]) -> str:
    """``L2H3`` for layer 2, head 3; ``L2mean`` for layer 2's average over heads (the logged metric names)."""
    return f"L{entry['layer']}" + ("mean" if entry["head"] is None else f"H{entry['head']}")


def rank_heads(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The single heads (no averages), best first: by accuracy, then by gold mass; unscored heads last."""

    def key(entry: dict[str, Any]) -> tuple[float, float]:
        return (-(entry["accuracy"] if entry["accuracy"] is not None else -1.0), -(entry["gold_mass"] or 0.0))

    return sorted((e for e in entries if e["head"] is not None), key=key)


def accuracy_grid(entries: Sequence[dict[str, Any]]) -> list[list[float | None]]:
    """``(L, h + 1)`` accuracies: per layer its heads in order, then its head average."""
    layers = max(e["layer"] for e in entries)
    grid: list[list[float | None]] = []
    for layer in range(1, layers + 1):
        own = [e for e in entries if e["layer"] == layer]
        heads = sorted((e for e in own if e["head"] is not None), key=lambda e: e["head"])
        grid.append([e["accuracy"] for e in heads] + [e["accuracy"] for e in own if e["head"] is None])
    return grid


def best_head(entries: Sequence[dict[str, Any]]) -> tuple[int, int] | None:
    """The 0-based ``(layer, head)`` of the best-aligned single head (:func:`rank_heads`), None if none scored."""
    ranking = rank_heads(entries)
    if not ranking or ranking[0]["accuracy"] is None:
        return None
    return ranking[0]["layer"] - 1, ranking[0]["head"] - 1
