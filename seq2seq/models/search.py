"""Decoding: greedy and beam search, batched over sentences, reusing :meth:`RecurrentDecoder.forward_step`.

Both search every sentence of a batch independently — per-sentence output budgets, per-sentence finishing,
finished sentences dropped from the batch — so a sentence's output never depends on its batch-mates.
Neither may end before ``min_length`` tokens (default 1: no empty output, as in fairseq and JoeyNMT) —
an undertrained model would otherwise stop at once.

:func:`greedy_stream` and :func:`beam_stream` search a stream of batches and hand back one :class:`Hypotheses`
per batch, in order; with ``refill`` the next batch's sentences take the rows of finished ones
(:mod:`seq2seq.models.live_batch`). :func:`greedy_search` and :func:`beam_search` are the one-batch case.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from seq2seq.models.live_batch import BatchRecord, LiveBatch, SearchInput, pad_source
from seq2seq.models.seq2seq import EncoderDecoder


@dataclass
class Hypotheses:
    """Search output for a batch.

    Attributes:
        tokens: per sentence, the output ids without BOS/EOS.
        attention: per sentence, ``(len(tokens) + 1, S_i)`` weights for each output step including EOS
            (``len(tokens)`` rows when the budget ran out first; real source positions only), or None for
            the fixed-context model or when not asked for.
        scores: per sentence, the length-normalised log-probability beam search ranked by (None for greedy).
    """

    tokens: list[list[int]]
    attention: list[Tensor] | None
    scores: list[float] | None = None


def max_output_lengths(src_lengths: Tensor, ratio: float, constant: int) -> Tensor:
    """``ceil(ratio · |x| + constant)`` per sentence: ``(B,)`` long."""
    return torch.ceil(src_lengths.float() * ratio + constant).long().clamp(min=1)


def never_emitted(model: EncoderDecoder, bos_id: int) -> list[int]:
    """Target ids a search never outputs: padding and BOS (EOS ends a sentence; everything else may appear).

    A trained model gives them almost no probability, but an untrained or diverged one can rank them first.
    """
    return sorted({getattr(model, "pad_id", 0), bos_id})


def greedy_search(
    model: EncoderDecoder,
    src: Tensor,
    src_lengths: Tensor,
    max_lengths: Tensor,
    bos_id: int,
    eos_id: int,
    return_attention: bool = False,
    min_length: int = 1,
) -> Hypotheses:
    """Pick the most probable token at each step until EOS or each sentence's maximum length.

    Args:
        src: ``(B, S)`` padded source ids; src_lengths: ``(B,)``; max_lengths: ``(B,)`` output budgets.
    """
    batch = [(src, src_lengths, max_lengths)]
    return next(greedy_stream(model, batch, bos_id, eos_id, return_attention, min_length))


@torch.inference_mode()
def greedy_stream(
    model: EncoderDecoder,
    batches: Iterable[SearchInput],
    bos_id: int,
    eos_id: int,
    return_attention: bool = False,
    min_length: int = 1,
    refill: bool = False,
) -> Iterator[Hypotheses]:
    """Greedy search of each ``(src, src_lengths, max_lengths)`` batch; one :class:`Hypotheses` per batch, in order.

    Finished sentences leave the live rows as they end, so the loop does no work for them; with ``refill``
    the next batches' sentences take their rows.
    """
    live = LiveBatch(model, batches, rows=1, refill=refill)
    decoder = model.decoder
    keep_attention = return_attention and decoder.attention is not None
    outputs: dict[int, list[int]] = {}
    weights_of: dict[int, list[Tensor]] = {}
    length_of: dict[int, int] = {}
    prev = torch.empty(0, dtype=torch.long)
    while True:
        added = live.admit()
        if added:
            prev = torch.cat([prev.to(live.ids.device), live.ids.new_full((added,), bos_id)])
            for sentence, length in zip(live.ids[-added:].tolist(), live.new_lengths(added), strict=True):
                outputs[sentence], weights_of[sentence], length_of[sentence] = [], [], length
        if len(live) == 0:
            return
        attentional, live.state, weights = decoder.forward_step(
            decoder.embedding(prev), live.state, live.memory
        )
        logits = decoder.logits(attentional)  # (n, V)
        logits[:, never_emitted(model, bos_id)] = float("-inf")
        logits[:, eos_id].masked_fill_(live.steps < min_length, float("-inf"))
        # (n,) the argmax, the first of equal maxima; torch's CPU max is ~3× faster than its argmax at (n, V)
        next_tokens = logits.max(dim=-1).indices
        live.steps += 1
        ended = (next_tokens == eos_id) | (live.steps >= live.budget)
        ids, tokens_list, ended_list = live.ids.tolist(), next_tokens.tolist(), ended.tolist()
        for row, sentence in enumerate(ids):
            if keep_attention:
                weights_of[sentence].append(weights[row, : length_of[sentence]])
            if tokens_list[row] != eos_id:
                outputs[sentence].append(tokens_list[row])
        keep = (~ended).nonzero(as_tuple=True)[0]
        if keep.numel() < len(live):
            live.select(keep, keep)
            next_tokens = next_tokens.index_select(0, keep)
        prev = next_tokens
        for record in live.finish([s for s, end in zip(ids, ended_list, strict=True) if end]):
            sentences = range(record.first, record.first + record.size)
            attention = (
                [torch.stack(weights_of.pop(i)).float().cpu() for i in sentences] if keep_attention else None
            )
            for i in sentences:
                length_of.pop(i), weights_of.pop(i, None)
            yield Hypotheses([outputs.pop(i) for i in sentences], attention)


def length_penalty(lengths: Tensor | int, alpha: float) -> Tensor:
    """GNMT length penalty (Wu et al. 2016, eq. 14): ``lp(Y) = ((5 + |Y|) / 6) ** alpha``; 1 at alpha = 0."""
    return ((5.0 + torch.as_tensor(lengths, dtype=torch.float)) / 6.0) ** alpha


def beam_search(
    model: EncoderDecoder,
    src: Tensor,
    src_lengths: Tensor,
    max_lengths: Tensor,
    bos_id: int,
    eos_id: int,
    beam_size: int = 5,
    alpha: float = 1.0,
    return_attention: bool = False,
    min_length: int = 1,
) -> Hypotheses:
    """Keep the ``beam_size`` most probable prefixes per sentence; return the best finished one (:func:`beam_stream`).

    Args:
        src: ``(B, S)`` padded source ids; src_lengths: ``(B,)``; max_lengths: ``(B,)`` output budgets.
    """
    batch = [(src, src_lengths, max_lengths)]
    return next(beam_stream(model, batch, bos_id, eos_id, beam_size, alpha, return_attention, min_length))


@torch.inference_mode()
def beam_stream(
    model: EncoderDecoder,
    batches: Iterable[SearchInput],
    bos_id: int,
    eos_id: int,
    beam_size: int = 5,
    alpha: float = 1.0,
    return_attention: bool = False,
    min_length: int = 1,
    refill: bool = False,
) -> Iterator[Hypotheses]:
    """Beam search of each ``(src, src_lengths, max_lengths)`` batch; one :class:`Hypotheses` per batch, in order.

    Each step scores every (beam × vocabulary) extension of a sentence at once with one ``topk``, keeping the
    best ``2k`` so that ``k`` candidates without EOS always remain to continue (as in fairseq). A candidate
    ending in EOS among the best ``k`` is a finished hypothesis, ranked by ``log P(Y|X) / lp(Y)`` (GNMT length
    penalty, :func:`length_penalty`, ``|Y|`` counting EOS). A sentence stops when it has ``k`` finished
    hypotheses or reaches its output budget (then its best ``k`` candidates finish as they are), and leaves
    the live rows (with ``refill`` the next batches' sentences take them). With ``beam_size=1`` this is exactly
    greedy search.

    Args:
        beam_size: ``k``; alpha: the length-penalty exponent (0: plain log-probability).
        min_length: EOS is not allowed before this many output tokens.
    """
    if beam_size < 1:
        raise ValueError(f"decoding.beam_size={beam_size}: must be at least 1")
    k = beam_size
    live = LiveBatch(model, batches, rows=k, refill=refill)
    decoder = model.decoder
    keep_attention = return_attention and decoder.attention is not None
    scores = torch.empty(0, k)  # (n, k) log-probs of each live sentence's beams
    # (n·k, t) tokens so far of each beam (row b·k + j is beam j of live sentence b); sentence b's start at
    # column first[b] (sentences admitted later have fewer)
    prefixes = torch.empty(0, 0, dtype=torch.long)
    first = torch.empty(0, dtype=torch.long)
    history: Tensor | None = None  # (n·k, t, S) attention so far, when asked for, columns as prefixes'
    prev = torch.empty(0, dtype=torch.long)
    n_finished = torch.empty(0, dtype=torch.long)
    finished: dict[int, list[tuple[float, list[int], Tensor | None]]] = {}
    length_of: dict[int, int] = {}
    while True:
        added = live.admit()
        if added:
            device, width = live.ids.device, prefixes.size(1)
            fresh = torch.full((added, k), float("-inf"), device=device)
            fresh[:, 0] = 0.0  # one live beam at the start, so the first step has no duplicates
            scores = torch.cat([scores.to(device), fresh])
            prefixes = torch.cat([prefixes.to(device), prefixes.new_zeros(added * k, width, device=device)])
            first = torch.cat([first.to(device), first.new_full((added,), width, device=device)])
            prev = torch.cat([prev.to(device), prev.new_full((added * k,), bos_id, device=device)])
            n_finished = torch.cat([n_finished.to(device), n_finished.new_zeros(added, device=device)])
            if keep_attention:
                source = live.memory.mask.size(1)
                blank = torch.zeros(added * k, width, source, device=device)
                history = blank if history is None else torch.cat([pad_source(history, source, dim=2), blank])
            for sentence, length in zip(live.ids[-added:].tolist(), live.new_lengths(added), strict=True):
                finished[sentence], length_of[sentence] = [], length
        if len(live) == 0:
            return
        n = len(live)
        attentional, state, weights = decoder.forward_step(decoder.embedding(prev), live.state, live.memory)
        live.state = state
        logits = decoder.logits(attentional).float()  # (n·k, V)
        log_norm = torch.logsumexp(logits, dim=-1, keepdim=True)  # log p = z − log Σ exp z, over every token
        logits[:, never_emitted(model, bos_id)] = float("-inf")
        logits[:, eos_id].masked_fill_((live.steps < min_length).repeat_interleave(k), float("-inf"))
        # a sentence's best 2k extensions are among its beams' own best 2k: rank each beam's V tokens by logit
        # (the order of its log-probabilities), then only k · 2k candidates per sentence
        width = min(2 * k, logits.size(-1))
        beam_logits, beam_tokens = logits.topk(width, dim=-1)  # (n·k, width)
        candidates = (scores.view(-1, 1) + (beam_logits - log_norm)).view(n, k * width)
        top_scores, top_ids = candidates.topk(min(2 * k, k * width), dim=-1)  # (n, 2k), best first
        origin = top_ids // width  # the beam each candidate extends, and its new token:
        token = beam_tokens.view(n, k * width).gather(1, top_ids)
        live.steps += 1
        if keep_attention and weights is not None:
            history = torch.cat([history, weights.unsqueeze(1)], dim=1)  # (n·k, t, S)
        last = (live.steps >= live.budget).unsqueeze(
            1
        )  # (n, 1): out of budget, the best k finish as they are
        finish = (token[:, :k] == eos_id) | last
        finish &= torch.isfinite(top_scores[:, :k])
        ends_row, ends_col = finish.nonzero(as_tuple=True)  # the (few) hypotheses that end at this step
        if ends_row.numel() > 0:
            source_rows = ends_row * k + origin[ends_row, ends_col]  # their beams' rows
            normalised = top_scores[ends_row, ends_col] / length_penalty(live.steps[ends_row], alpha)
            ends = zip(
                live.ids[ends_row].tolist(),
                source_rows.tolist(),
                first[ends_row].tolist(),
                prefixes.index_select(0, source_rows).tolist(),
                token[ends_row, ends_col].tolist(),
                normalised.tolist(),
                strict=True,
            )
            for sentence, source_row, start, tokens, end_token, score in ends:
                tokens = tokens[start:]
                if end_token != eos_id:
                    tokens.append(end_token)
                attention = None
                if history is not None:
                    attention = history[source_row, start:, : length_of[sentence]].float().cpu()
                finished[sentence].append((score, tokens, attention))
        n_finished += finish.sum(dim=1)
        done = last.squeeze(1) | (n_finished >= k)
        # The next beams: the best k candidates that do not end in EOS (a stable sort keeps score order).
        keep_cols = torch.sort((token == eos_id).int(), dim=1, stable=True).indices[:, :k]  # (n, k)
        scores = top_scores.gather(1, keep_cols)
        rows = (torch.arange(n, device=scores.device).unsqueeze(1) * k + origin.gather(1, keep_cols)).view(-1)
        next_tokens = token.gather(1, keep_cols).view(-1)  # (n·k,)
        done_ids = live.ids[done].tolist()
        keep = (~done).nonzero(as_tuple=True)[0]
        if keep.numel() < n:
            keep_rows = live.sentence_rows(keep)
            scores, n_finished, first = (t.index_select(0, keep) for t in (scores, n_finished, first))
            rows, next_tokens = rows.index_select(0, keep_rows), next_tokens.index_select(0, keep_rows)
            live.select(keep, rows)  # every beam of a sentence holds the same memory
        else:
            live.select(None, rows)
        prefixes = torch.cat([prefixes.index_select(0, rows), next_tokens.unsqueeze(1)], dim=1)
        if history is not None:  # the source positions the memory still has (the others are padding for all)
            history = history.index_select(0, rows)[:, :, : live.memory.mask.size(1)]
        if first.numel() > 0 and int(first.min()) > 0:  # columns before every live sentence's start
            drop = int(first.min())
            prefixes, first = prefixes[:, drop:], first - drop
            history = None if history is None else history[:, drop:]
        prev = next_tokens
        for record in live.finish(done_ids):
            yield _best(record, finished, length_of)


def _best(
    record: BatchRecord,
    finished: dict[int, list[tuple[float, list[int], Tensor | None]]],
    length_of: dict[int, int],
) -> Hypotheses:
    """A batch's best finished hypothesis per sentence (``max`` keeps the first of equal scores)."""
    best = []
    for sentence in range(record.first, record.first + record.size):
        best.append(max(finished.pop(sentence), key=lambda h: h[0]))
        length_of.pop(sentence)
    attention = None if best[0][2] is None else [h[2] for h in best]
    return Hypotheses([h[1] for h in best], attention, [h[0] for h in best])
