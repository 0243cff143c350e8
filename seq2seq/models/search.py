"""Decoding: greedy and beam search, batched over sentences, reusing :meth:`RecurrentDecoder.forward_step`.

Both search every sentence of a batch independently — per-sentence output budgets, per-sentence finishing,
finished sentences dropped from the batch — so a sentence's output never depends on its batch-mates.
Neither may end before ``min_length`` tokens (default 1: no empty output, as in fairseq and JoeyNMT) —
an undertrained model would otherwise stop at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

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


@torch.inference_mode()
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

    Finished sentences are dropped from the batch as they end, so the loop does no work for them.

    Args:
        src: ``(B, S)`` padded source ids; src_lengths: ``(B,)``; max_lengths: ``(B,)`` output budgets.
    """
    memory, state = model.encode(src, src_lengths)
    decoder = model.decoder
    batch = src.size(0)
    device = src.device
    outputs: list[list[int]] = [[] for _ in range(batch)]
    weights_per_sentence: list[list[Tensor]] = [[] for _ in range(batch)]
    alive = torch.arange(batch, device=device)  # original indices of unfinished sentences
    prev = torch.full((batch,), bos_id, dtype=torch.long, device=device)
    budget = max_lengths.to(device)
    step = 0
    while alive.numel() > 0:
        attentional, state, weights = decoder.forward_step(decoder.embedding(prev), state, memory)
        logits = decoder.logits(attentional)  # (B_alive, V)
        logits[:, never_emitted(model, bos_id)] = float("-inf")
        if step < min_length:
            logits[:, eos_id] = float("-inf")
        next_tokens = logits.argmax(dim=-1)  # (B_alive,)
        step += 1
        ended = (next_tokens == eos_id) | (step >= budget[alive])
        alive_list = alive.tolist()
        tokens_list = next_tokens.tolist()
        for row, index in enumerate(alive_list):
            if return_attention and weights is not None:
                weights_per_sentence[index].append(weights[row])
            if tokens_list[row] != eos_id:
                outputs[index].append(tokens_list[row])
        keep = (~ended).nonzero(as_tuple=True)[0]
        if keep.numel() < alive.numel():
            alive = alive.index_select(0, keep)
            memory = memory.index_select(keep)
            state = state.index_select(keep)
            next_tokens = next_tokens.index_select(0, keep)
        prev = next_tokens
    attention = None
    if return_attention and decoder.attention is not None:
        attention = [
            torch.stack(rows)[:, : int(src_lengths[i])].float().cpu()
            for i, rows in enumerate(weights_per_sentence)
        ]
    return Hypotheses(outputs, attention)


def length_penalty(lengths: Tensor | int, alpha: float) -> Tensor:
    """GNMT length penalty (Wu et al. 2016, eq. 14): ``lp(Y) = ((5 + |Y|) / 6) ** alpha``; 1 at alpha = 0."""
    return ((5.0 + torch.as_tensor(lengths, dtype=torch.float)) / 6.0) ** alpha


@torch.inference_mode()
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
    """Keep the ``beam_size`` most probable prefixes per sentence; return the best finished one.

    Each step scores every (beam × vocabulary) extension of a sentence at once with one ``topk``, keeping the
    best ``2k`` so that ``k`` candidates without EOS always remain to continue (as in fairseq). A candidate
    ending in EOS among the best ``k`` is a finished hypothesis, ranked by ``log P(Y|X) / lp(Y)`` (GNMT length
    penalty, :func:`length_penalty`, ``|Y|`` counting EOS). A sentence stops when it has ``k`` finished
    hypotheses or reaches its output budget (then its best ``k`` candidates finish as they are), and leaves
    the batch. With ``beam_size=1`` this is exactly greedy search.

    Args:
        src: ``(B, S)`` padded source ids; src_lengths: ``(B,)``; max_lengths: ``(B,)`` output budgets.
        beam_size: ``k``; alpha: the length-penalty exponent (0: plain log-probability).
        min_length: EOS is not allowed before this many output tokens.
    """
    if beam_size < 1:
        raise ValueError(f"decoding.beam_size={beam_size}: must be at least 1")
    k = beam_size
    memory, state = model.encode(src, src_lengths)
    decoder = model.decoder
    batch, device = src.size(0), src.device
    beams = torch.arange(batch, device=device).repeat_interleave(k)  # row b·k + j is beam j of sentence b
    memory, state = memory.index_select(beams), state.index_select(beams)
    alive = torch.arange(batch, device=device)  # original indices of unfinished sentences
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # (B, k) log-probs; one live beam at the start, so the first step has no duplicates
    prefixes = torch.empty(batch * k, 0, dtype=torch.long, device=device)  # (B·k, t) tokens so far
    history: Tensor | None = None  # (B·k, t, S) attention so far, when asked for
    prev = torch.full((batch * k,), bos_id, dtype=torch.long, device=device)
    n_finished = torch.zeros(batch, dtype=torch.long, device=device)
    finished: list[list[tuple[float, list[int], Tensor | None]]] = [[] for _ in range(batch)]
    budget = max_lengths.to(device)
    step = 0
    while alive.numel() > 0:
        n = alive.numel()
        attentional, state, weights = decoder.forward_step(decoder.embedding(prev), state, memory)
        logits = decoder.logits(attentional).float()  # (n·k, V)
        log_norm = torch.logsumexp(logits, dim=-1, keepdim=True)  # log p = z − log Σ exp z, over every token
        logits[:, never_emitted(model, bos_id)] = float("-inf")
        if step < min_length:
            logits[:, eos_id] = float("-inf")
        # a sentence's best 2k extensions are among its beams' own best 2k: rank each beam's V tokens by logit
        # (the order of its log-probabilities), then only k · 2k candidates per sentence
        width = min(2 * k, logits.size(-1))
        beam_logits, beam_tokens = logits.topk(width, dim=-1)  # (n·k, width)
        candidates = (scores.view(-1, 1) + (beam_logits - log_norm)).view(n, k * width)
        top_scores, top_ids = candidates.topk(min(2 * k, k * width), dim=-1)  # (n, 2k), best first
        origin = top_ids // width  # the beam each candidate extends, and its new token:
        token = beam_tokens.view(n, k * width).gather(1, top_ids)
        step += 1
        if return_attention and weights is not None:
            step_weights = weights.unsqueeze(1)  # (n·k, 1, S)
            history = step_weights if history is None else torch.cat([history, step_weights], dim=1)
        last = (step >= budget[alive]).unsqueeze(1)  # (n, 1): out of budget, the best k finish as they are
        finish = (token[:, :k] == eos_id) | last
        finish &= torch.isfinite(top_scores[:, :k])
        ends_row, ends_col = finish.nonzero(as_tuple=True)  # the (few) hypotheses that end at this step
        if ends_row.numel() > 0:
            source_rows = ends_row * k + origin[ends_row, ends_col]  # their beams' rows
            normalised = top_scores[ends_row, ends_col] / length_penalty(step, alpha)
            ends = zip(
                alive[ends_row].tolist(),
                source_rows.tolist(),
                prefixes.index_select(0, source_rows).tolist(),
                token[ends_row, ends_col].tolist(),
                normalised.tolist(),
                strict=True,
            )
            for sentence, source_row, tokens, end_token, score in ends:
                if end_token != eos_id:
                    tokens.append(end_token)
                attention = None if history is None else history[source_row]
                finished[sentence].append((score, tokens, attention))
        n_finished[alive] += finish.sum(dim=1)
        done = last.squeeze(1) | (n_finished[alive] >= k)
        # The next beams: the best k candidates that do not end in EOS (a stable sort keeps score order).
        keep_cols = torch.sort((token == eos_id).int(), dim=1, stable=True).indices[:, :k]  # (n, k)
        scores = top_scores.gather(1, keep_cols)
        rows = (torch.arange(n, device=device).unsqueeze(1) * k + origin.gather(1, keep_cols)).view(-1)
        next_tokens = token.gather(1, keep_cols).view(-1)  # (n·k,)
        keep = (~done).nonzero(as_tuple=True)[0]
        if keep.numel() < n:
            keep_rows = (keep.unsqueeze(1) * k + torch.arange(k, device=device)).view(-1)
            alive, scores = alive.index_select(0, keep), scores.index_select(0, keep)
            rows, next_tokens = rows.index_select(0, keep_rows), next_tokens.index_select(0, keep_rows)
            memory = memory.index_select(keep_rows)  # every beam of a sentence holds the same memory
        state = state.index_select(rows)
        prefixes = torch.cat([prefixes.index_select(0, rows), next_tokens.unsqueeze(1)], dim=1)
        if history is not None:
            history = history.index_select(0, rows)
        prev = next_tokens
    best = [max(hyps, key=lambda h: h[0]) for hyps in finished]  # max keeps the first of equal scores
    attention = None
    if return_attention and decoder.attention is not None:
        attention = [h[2][:, : int(src_lengths[i])].float().cpu() for i, h in enumerate(best)]
    return Hypotheses([h[1] for h in best], attention, [h[0] for h in best])
