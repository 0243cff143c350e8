"""Translating raw sentences with a trained model, without Lightning: :class:`Translator`.

Used by ``seq2seq-translate``, by the attention maps drawn during training and by ``seq2seq-evaluate``.
Sentences are encoded as in training (:class:`~seq2seq.data.encoding.PairEncoder`), batched by length under a
token budget, decoded with :func:`~seq2seq.models.decoding.decode` and put back in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from seq2seq.data.batching import TokenBudgetBatchSampler, collate
from seq2seq.data.encoding import PairEncoder
from seq2seq.models.decoding import Decoding, decode
from seq2seq.models.seq2seq import EncoderDecoder

NO_ATTENTION = (
    "attention=none: the fixed-context decoder has no attention weights, so no attention maps are drawn"
)


@dataclass
class Translation:
    """One translated sentence.

    Attributes:
        source: the raw input; text: the detokenized hypothesis ("" for an empty input).
        source_pieces: SentencePiece pieces as fed to the encoder (reversed with ``data.reverse_source``).
        output_pieces: the hypothesis pieces, then ``</s>`` when the search ended with EOS.
        attention: ``(len(output_pieces), len(source_pieces))`` weights; None for ``attention=none`` or
            when not asked for.
    """

    source: str
    text: str
    source_pieces: list[str]
    output_pieces: list[str]
    attention: torch.Tensor | None = None


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

    def translate(self, sentences: Sequence[str], return_attention: bool = False) -> list[Translation]:
        """Translate raw sentences in order, batched by length.

        Empty (or whitespace-only) sentences, and sentences with no pieces, translate to "" without running
        the model, so outputs stay aligned with inputs.
        """
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
            for indices in sampler:
                examples = [dataset[keep[i]] for i in indices]
                batch = collate(examples).to(device)
                hyps = decode(self.model, batch, self.decoding, return_attention=return_attention)
                attention = hyps.attention or [None] * len(examples)
                budgets = self.decoding.max_lengths(batch.src_lengths).tolist()
                for example, tokens, weights, budget in zip(
                    examples, hyps.tokens, attention, budgets, strict=True
                ):
                    ended = len(tokens) < budget  # only EOS stops a search before its budget
                    line = todo[example.index]
                    results[line] = Translation(
                        source=sentences[line],
                        text=tgt_tokenizer.decode(tokens),
                        source_pieces=src_tokenizer.pieces(example.src),
                        output_pieces=tgt_tokenizer.pieces(tokens) + (["</s>"] if ended else []),
                        attention=weights,
                    )
        finally:
            self.model.train(was_training)
        return results
