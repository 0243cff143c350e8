"""Decoding: greedy search, batched over sentences, reusing :meth:`RecurrentDecoder.forward_step`."""

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
            (real source positions only), or None for the fixed-context model.
    """

    tokens: list[list[int]]
    attention: list[Tensor] | None


def max_output_lengths(src_lengths: Tensor, ratio: float, constant: int) -> Tensor:
    """``ceil(ratio · |x| + constant)`` per sentence: ``(B,)`` long."""
    return torch.ceil(src_lengths.float() * ratio + constant).long().clamp(min=1)


@torch.inference_mode()
def greedy_search(
    model: EncoderDecoder,
    src: Tensor,
    src_lengths: Tensor,
    max_lengths: Tensor,
    bos_id: int,
    eos_id: int,
    return_attention: bool = False,
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
        next_tokens = decoder.logits(attentional).argmax(dim=-1)  # (B_alive,)
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
