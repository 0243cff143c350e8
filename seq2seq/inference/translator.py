"""Translating raw sentences with a trained model, without Lightning: :class:`Translator`.

Used by ``seq2seq-translate``, by the attention maps drawn during training and by ``seq2seq-evaluate``.
Sentences are encoded as in training (:class:`~seq2seq.data.encoding.PairEncoder`), batched by length under a
token budget, decoded longest batch first with :func:`~seq2seq.models.decoding.decode_stream` (with
``decoding.refill`` the next batches' sentences take the rows of finished ones) and put back in input order. On request a
Transformer decoder's cross-attention comes per layer and head as well (:func:`hypothesis_heads`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from seq2seq.data.batching import TokenBudgetBatchSampler, collate
from seq2seq.data.encoding import PairEncoder
from seq2seq.data.tokenizer import BOS_ID, PAD_ID
from seq2seq.models.decoding import Decoding, decode_stream
from seq2seq.models.seq2seq import EncoderDecoder
from seq2seq.models.transformer import TransformerDecoder

NO_ATTENTION = (
    "attention=none: the fixed-context decoder has no attention weights, so no attention maps are drawn"
)
NO_HEADS = (
    "only a Transformer decoder (model/decoder=transformer) has attention heads; this model's is recurrent"
)


@torch.no_grad()
def hypothesis_heads(
    model: EncoderDecoder, src: torch.Tensor, src_lengths: torch.Tensor, outputs: Sequence[Sequence[int]]
) -> torch.Tensor:
    """Every decoder layer's cross-attention per head for each hypothesis, ``(L, B, h, T, S)``, ``T`` = the
    longest hypothesis + 1 (the EOS step).

    The decoder is fed ``BOS`` + the hypothesis itself (teacher forcing on its own output): a causal decoder's
    step ``t`` sees only the source and the tokens before it, so row ``t`` is the attention with which the
    search chose token ``t`` (greedy or the kept beam) — head by head, where the search keeps only the last
    layer's head average (``TransformerDecoder.cross_attention_heads``).
    """
    steps = max(len(tokens) for tokens in outputs) + 1
    targets = torch.full((len(outputs), steps), PAD_ID, dtype=torch.long, device=src.device)
    targets[:, 0] = BOS_ID
    for row, tokens in enumerate(outputs):
        targets[row, 1 : len(tokens) + 1] = torch.as_tensor(list(tokens), dtype=torch.long)
    memory, _ = model.encode(src, src_lengths)
    return model.decoder.cross_attention_heads(targets, memory)


@dataclass
class Translation:
    """One translated sentence.

    Attributes:
        source: the raw input; text: the detokenized hypothesis ("" for an empty input).
        source_pieces: SentencePiece pieces as fed to the encoder (reversed with ``data.reverse_source``).
        output_pieces: the hypothesis pieces, then ``</s>`` when the search ended with EOS.
        attention: ``(len(output_pieces), len(source_pieces))`` weights; None for ``attention=none`` or
            when not asked for.
        heads: ``(L, h, len(output_pieces), len(source_pieces))``: every Transformer decoder layer's
            cross-attention per head (``attention`` is the last layer's mean over heads); None unless asked for.
    """

    source: str
    text: str
    source_pieces: list[str]
    output_pieces: list[str]
    attention: torch.Tensor | None = None
    heads: torch.Tensor | None = None


class Translator:
    """A model with its encoder and decoding: raw sentences in, :class:`Translation` out, in order.

    Args:
        model: the trained model (left in the train/eval mode it had after each call).
        encoder: its text → ids encoding (tokenizers, normalisation, source reversal).
        decoding: the search to use.
        max_tokens: batch budget (sentences × longest source), e.g. ``data.batch.eval_max_tokens``.
    """

    def __init__(
        self, model: EncoderDecoder, encoder: PairEncoder, decoding: Decoding, max_tokens: int
    ) -> None:
        self.model = model
        self.encoder = encoder
        self.decoding = decoding
        self.max_tokens = int(max_tokens)

    @property
    def has_attention(self) -> bool:
        return self.model.decoder.attention is not None

    @property
    def has_heads(self) -> bool:
        """Whether the decoder is a Transformer, with cross-attention per layer and head."""
        return isinstance(self.model.decoder, TransformerDecoder)

    def translate(
        self, sentences: Sequence[str], return_attention: bool = False, return_heads: bool = False
    ) -> list[Translation]:
        """Translate raw sentences in order, batched by length; ``return_heads`` (a Transformer decoder only)
        adds each translation's per-layer, per-head cross-attention (:func:`hypothesis_heads`).

        Empty (or whitespace-only) sentences, and sentences with no pieces, translate to "" without running
        the model, so outputs stay aligned with inputs.

        Raises:
            ValueError: ``return_heads`` with a recurrent decoder (:data:`NO_HEADS`).
        """
        if return_heads and not self.has_heads:
            raise ValueError(f"per-head attention: {NO_HEADS}")
        results = [Translation(s, "", [], []) for s in sentences]
        dataset = self.encoder.encode_sources([s for s in sentences if s.strip()])
        todo = [i for i, s in enumerate(sentences) if s.strip()]  # input line of each dataset example
        keep = [position for position, example in enumerate(dataset.examples) if example.src]
        if not keep:
            return results
        # one process decodes everything here: no sharding even under DDP
        lengths = dataset.lengths()
        sampler = TokenBudgetBatchSampler(
            [lengths[p] for p in keep], self.max_tokens, shuffle=False, num_replicas=1, rank=0
        )
        device = next(self.model.parameters()).device
        tgt_tokenizer, src_tokenizer = self.encoder.tgt_tokenizer, self.encoder.src_tokenizer
        was_training = self.model.training
        self.model.eval()
        try:
            examples_of: deque[list] = (
                deque()
            )  # each batch's examples, in the order decoding hands batches back

            def batches():  # the longest first: with decoding.refill the shorter fill the rows around them
                for indices in sorted(
                    sampler, key=lambda rows: max(lengths[keep[i]] for i in rows), reverse=True
                ):
                    examples_of.append([dataset[keep[i]] for i in indices])
                    yield collate(examples_of[-1]).to(device)

            decoded = decode_stream(self.model, batches(), self.decoding, return_attention=return_attention)
            for batch, hyps in decoded:
                examples = examples_of.popleft()
                attention = hyps.attention or [None] * len(examples)
                budgets = self.decoding.max_lengths(batch.src_lengths).tolist()
                heads = (
                    hypothesis_heads(self.model, batch.src, batch.src_lengths, hyps.tokens)
                    if return_heads
                    else None
                )
                for row, (example, tokens, weights, budget) in enumerate(
                    zip(examples, hyps.tokens, attention, budgets, strict=True)
                ):
                    ended = len(tokens) < budget  # only EOS stops a search before its budget
                    line = todo[example.index]
                    steps = len(tokens) + int(ended)
                    results[line] = Translation(
                        source=sentences[line],
                        text=tgt_tokenizer.decode(tokens),
                        source_pieces=src_tokenizer.pieces(example.src),
                        output_pieces=tgt_tokenizer.pieces(tokens) + (["</s>"] if ended else []),
                        attention=weights,
                        heads=None if heads is None else heads[:, row, :, :steps, : len(example.src)].cpu(),
                    )
        finally:
            self.model.train(was_training)
        return results
