"""One entry to search: :func:`decode` runs greedy or beam search for a batch as a :class:`Decoding` says.

Validation, test, translation, attention maps and the benchmark all decode through it, so the choice between
the searches and the output budget ``ceil(ratio · |x| + constant)`` are made in one place.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from torch import Tensor

from seq2seq.models import onednn
from seq2seq.models.search import Hypotheses, beam_stream, greedy_stream, max_output_lengths
from seq2seq.models.seq2seq import EncoderDecoder

SEARCHES = ("greedy", "beam")


class SourceBatch(Protocol):
    """What decoding reads of a batch: padded source ids ``(B, S)`` and their lengths ``(B,)``."""

    src: Tensor
    src_lengths: Tensor


Batch = TypeVar("Batch", bound=SourceBatch)


@dataclass(frozen=True)
class Decoding:
    """The ``decoding`` config: which search, its beam and length penalty, and the output budget.

    Attributes:
        name: ``greedy`` | ``beam``.
        beam_size, length_penalty: beam search only (GNMT length penalty α, Wu et al. 2016).
        max_length_ratio, max_length_constant: output budget ``ceil(ratio · |x| + constant)`` tokens.
        refill: in :func:`decode_stream`, the next batches' sentences take the rows of finished ones
            (continuous batching, :mod:`seq2seq.models.live_batch`); the same outputs up to float rounding.
    """

    name: str = "greedy"
    beam_size: int = 5
    length_penalty: float = 1.0
    max_length_ratio: float = 1.5
    max_length_constant: float = 10
    refill: bool = True

    def __post_init__(self) -> None:
        if self.name not in SEARCHES:
            raise ValueError(f"decoding={self.name!r} is not available; choose one of {SEARCHES}")

    @classmethod
    def from_config(cls, cfg: Any) -> Decoding:
        """From a ``decoding`` config node (``conf/decoding/*.yaml``); missing keys keep their defaults."""
        fields = ("name", "beam_size", "length_penalty", "max_length_ratio", "max_length_constant", "refill")
        return cls(**{key: cfg[key] for key in fields if key in cfg and cfg[key] is not None})

    def max_lengths(self, src_lengths: Tensor) -> Tensor:
        """Each sentence's output budget ``(B,)``."""
        return max_output_lengths(src_lengths, self.max_length_ratio, self.max_length_constant)


def decode(
    model: EncoderDecoder, batch: SourceBatch, decoding: Decoding, return_attention: bool = False
) -> Hypotheses:
    """Search one batch with ``decoding``'s search; returns token ids (no BOS/EOS) per sentence."""
    return next(decode_stream(model, [batch], decoding, return_attention))[1]


def decode_stream(
    model: EncoderDecoder, batches: Iterable[Batch], decoding: Decoding, return_attention: bool = False
) -> Iterator[tuple[Batch, Hypotheses]]:
    """Search batch after batch; yields each batch with its hypotheses, in order.

    With ``decoding.refill`` the sentences of the next batches take the rows of finished ones, never more padded
    source tokens live than the batch they come from holds (:mod:`seq2seq.models.live_batch`; recurrent decoders
    without local attention; others decode batch by batch). The search's products read row-major copies of the
    weights (:func:`~seq2seq.models.onednn.row_major_copies`), made again for each batch handed back: the caller may
    change the weights between batches, never during a search.
    """
    taken: deque[Batch] = deque()

    def inputs() -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        for batch in batches:
            taken.append(batch)
            yield batch.src, batch.src_lengths, decoding.max_lengths(batch.src_lengths)

    ids = (model.bos_id, model.eos_id)
    if decoding.name == "beam":
        searches = beam_stream(
            model,
            inputs(),
            *ids,
            beam_size=int(decoding.beam_size),
            alpha=float(decoding.length_penalty),
            return_attention=return_attention,
            refill=decoding.refill,
        )
    else:
        searches = greedy_stream(
            model, inputs(), *ids, return_attention=return_attention, refill=decoding.refill
        )
    while True:
        with onednn.row_major_copies():
            hypotheses = next(searches, None)
        if hypotheses is None:
            return
        yield taken.popleft(), hypotheses
