"""The live rows of a search, refilled from the next batches as sentences finish (continuous batching).

A search over one batch loses rows as its sentences end, so its last steps run a few sentences through the
same weights (for an 8000-way output layer a step of one sentence costs about a quarter of a step of forty on
a CPU, docs/performance.md). :class:`LiveBatch` holds the sentences being searched — their encoder memory,
decoder state, ids, steps taken and output budgets — and with ``refill`` admits the next batch's sentences into
the rows that finished ones free, never holding more padded source tokens (sentences × the widest live source)
than the batch they come from had, so memory and attention stay within the batch budget. A sentence's
computation does not depend on its batch-mates (the searches' rule), so refilling changes only which rows share
a matrix product: outputs are the same up to float rounding (tested).

Refilling needs each row's decoder state to be independent of when it started: recurrent decoders whose
attention does not read the step number (:func:`can_refill`). Others decode batch by batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from seq2seq.models.decoder import DecoderState, Memory, RecurrentDecoder
from seq2seq.models.local_attention import LocalAttention

SearchInput = tuple[
    Tensor, Tensor, Tensor
]  # padded source ids (B, S), their lengths (B,), output budgets (B,)


def can_refill(model: torch.nn.Module) -> bool:
    """True for recurrent decoders whose attention ignores the step (not local attention): their rows can start
    at different steps. The Transformer's cached keys and local attention's window position are per step."""
    decoder = getattr(model, "decoder", None)
    return isinstance(decoder, RecurrentDecoder) and not isinstance(decoder.attention, LocalAttention)


def pad_source(tensor: Tensor | None, length: int, dim: int = 1) -> Tensor | None:
    """Zero-pad ``tensor`` along its source dimension ``dim`` to ``length`` (False for masks)."""
    if tensor is None or tensor.size(dim) >= length:
        return tensor
    pad = [0, 0] * (tensor.dim() - 1 - dim) + [0, length - tensor.size(dim)]
    return F.pad(tensor, pad)


def cat_source(first: Tensor, second: Tensor) -> Tensor:
    """``first``'s rows then ``second``'s in one tensor, zero-padded along dimension 1 to the wider of the two.

    Written into one new tensor, so joining holds the two inputs and the result, never padded copies besides;
    only the padding is zeroed, not the whole tensor first.
    """
    length = max(first.size(1), second.size(1))
    joined = first.new_empty((first.size(0) + second.size(0), length, *first.shape[2:]))
    for rows, part in ((joined[: first.size(0)], first), (joined[first.size(0) :], second)):
        rows[:, : part.size(1)] = part
        rows[:, part.size(1) :] = 0  # False for a mask
    return joined


def cat_memory(first: Memory, second: Memory) -> Memory:
    """Two memories' rows in one, the shorter source padded (its mask False there)."""
    keys = None if first.keys is None else cat_source(first.keys, second.keys)
    return Memory(
        cat_source(first.outputs, second.outputs),
        keys,
        cat_source(first.mask, second.mask),
        torch.cat([first.context, second.context]),
    )


def narrow_source(memory: Memory, lengths: Tensor) -> Memory:
    """``memory`` without the source positions past its longest sentence (``lengths`` ``(n,)``): padding for all."""
    width = int(lengths.max()) if lengths.numel() else 0
    if width >= memory.mask.size(1) or width == 0:
        return memory
    keys = None if memory.keys is None else memory.keys[:, :width].contiguous()
    return Memory(
        memory.outputs[:, :width].contiguous(), keys, memory.mask[:, :width].contiguous(), memory.context
    )


def cat_state(first: DecoderState, second: DecoderState) -> DecoderState:
    """Two states' rows in one (``step`` is unused by the decoders :func:`can_refill` admits)."""
    if isinstance(first.hidden, tuple):
        hidden = tuple(torch.cat([a, b], dim=1) for a, b in zip(first.hidden, second.hidden, strict=True))
    else:
        hidden = torch.cat([first.hidden, second.hidden], dim=1)
    return DecoderState(
        hidden, torch.cat([first.attentional, second.attentional]), max(first.step, second.step)
    )


@dataclass
class BatchRecord:
    """One input batch in flight: where its sentences' ids start, how many there are, how many are unfinished."""

    first: int
    size: int
    source_lengths: list[int]
    unfinished: int = field(init=False)

    def __post_init__(self) -> None:
        self.unfinished = self.size


@dataclass
class Encoded:
    """A batch encoded and waiting: its memory, initial state and budgets; ``admitted`` sentences taken so far."""

    record: BatchRecord
    memory: Memory
    state: DecoderState
    lengths: Tensor
    budget: Tensor
    admitted: int = 0


class LiveBatch:
    """The sentences a search is stepping, ``rows`` decoder rows each (1 for greedy, the beam size for beam).

    Attributes (per live sentence, in row order): ``ids`` ``(n,)`` sentence numbers over the whole stream,
    ``steps`` ``(n,)`` tokens chosen so far, ``budget`` ``(n,)`` output budgets, ``lengths`` ``(n,)`` source
    lengths (the memory is cut to the longest as the others leave); ``memory`` and ``state`` hold
    ``n · rows`` rows (sentence ``i``'s rows are ``i · rows … i · rows + rows − 1``). ``records`` lists every
    batch taken from the stream, in order.
    """

    def __init__(
        self, model: torch.nn.Module, batches: Iterable[SearchInput], rows: int, refill: bool
    ) -> None:
        self.model, self.rows = model, rows
        self.narrow = can_refill(model)  # rows independent of their batch-mates' source width
        self.refill = refill and self.narrow
        self.stream: Iterator[SearchInput] = iter(batches)
        self.records: list[BatchRecord] = []
        self.waiting: Encoded | None = None
        self.memory: Memory | None = None
        self.state: DecoderState | None = None
        self.ids = self.steps = self.budget = self.lengths = torch.empty(0, dtype=torch.long)
        self.capacity = 0  # padded source tokens live at once: those of the batch last taken from the stream
        self.sentences = 0  # ids handed out so far
        self._added_lengths: list[int] = []

    def __len__(self) -> int:
        return self.ids.numel()

    def admit(self) -> int:
        """Take sentences from the stream into free rows (all of the next batch once none is live, without
        refilling); returns how many were added, at the end of the rows."""
        added, self._added_lengths = 0, []
        while self.refill or len(self) == 0:
            if len(self) > 0 and (len(self) + 1) * int(self.lengths.max()) > self.capacity:
                break
            exhausted = self.waiting is None or self.waiting.admitted == self.waiting.record.size
            if exhausted and not self._encode_next():
                break
            waiting = self.waiting
            count = self._fitting(waiting)
            if count == 0:
                break
            self._append(waiting, waiting.admitted, count)
            self._added_lengths += waiting.record.source_lengths[waiting.admitted : waiting.admitted + count]
            waiting.admitted += count
            added += count
            if not self.refill:
                break
        return added

    def _fitting(self, waiting: Encoded) -> int:
        """How many of ``waiting``'s next sentences fit: live sentences × the widest source ≤ :attr:`capacity`."""
        live, width, count = len(self), int(self.lengths.max()) if len(self) else 0, 0
        for length in waiting.record.source_lengths[waiting.admitted :]:
            width = max(width, length)
            if live + count > 0 and (live + count + 1) * width > self.capacity:
                break
            count += 1
        return count

    def new_lengths(self, added: int) -> list[int]:
        """Source lengths of the ``added`` sentences the last :meth:`admit` appended."""
        return self._added_lengths[len(self._added_lengths) - added :]

    def select(self, sentences: Tensor | None, state_rows: Tensor) -> None:
        """Keep the live sentences at positions ``sentences`` (None: all) and the state rows ``state_rows``
        (reordered beams of the kept sentences)."""
        if sentences is not None:
            kept = (self.ids, self.steps, self.budget, self.lengths)
            self.ids, self.steps, self.budget, self.lengths = (t.index_select(0, sentences) for t in kept)
            self.memory = self.memory.index_select(self.sentence_rows(sentences))
            if self.narrow:
                self.memory = narrow_source(self.memory, self.lengths)
        self.state = self.state.index_select(state_rows)

    def sentence_rows(self, sentences: Tensor) -> Tensor:
        """The decoder rows ``(len(sentences) · rows,)`` of the live sentences at positions ``sentences``."""
        if self.rows == 1:
            return sentences
        return (sentences.unsqueeze(1) * self.rows + torch.arange(self.rows, device=sentences.device)).view(
            -1
        )

    def finish(self, ids: list[int]) -> list[BatchRecord]:
        """Count sentences ``ids`` as finished; returns the records, oldest first, that are now complete and
        have no unfinished batch before them (the order the caller must hand results back in)."""
        for sentence in ids:
            self.record_of(sentence).unfinished -= 1
        done = []
        while self.records and self.records[0].unfinished == 0:
            done.append(self.records.pop(0))
        return done

    def record_of(self, sentence: int) -> BatchRecord:
        """The record of the batch sentence ``sentence`` came in."""
        for record in self.records:
            if record.first <= sentence < record.first + record.size:
                return record
        raise KeyError(sentence)

    def _encode_next(self) -> bool:
        batch = next(self.stream, None)
        if batch is None:
            return False
        src, lengths, budget = batch
        memory, state = self.model.encode(src, lengths)
        record = BatchRecord(self.sentences, src.size(0), lengths.tolist())
        self.sentences += record.size
        self.records.append(record)
        self.waiting = Encoded(record, memory, state, lengths.to(src.device), budget.to(src.device))
        # sentences × the widest source, as the batch sampler counts
        self.capacity = record.size * src.size(1)
        return True

    def _append(self, waiting: Encoded, start: int, count: int) -> None:
        device = waiting.budget.device
        positions = torch.arange(start, start + count, device=device)
        rows = positions if self.rows == 1 else positions.repeat_interleave(self.rows)
        whole = start == 0 and count == waiting.record.size and self.rows == 1
        memory = waiting.memory if whole else waiting.memory.index_select(rows)
        state = waiting.state if whole else waiting.state.index_select(rows)
        ids = positions + waiting.record.first
        if self.memory is None or len(self) == 0:
            self.memory, self.state = memory, state
            self.ids, self.steps = ids, torch.zeros(count, dtype=torch.long, device=device)
            self.budget = waiting.budget.index_select(0, positions)
            self.lengths = waiting.lengths.index_select(0, positions)
            return
        self.memory, self.state = cat_memory(self.memory, memory), cat_state(self.state, state)
        self.ids = torch.cat([self.ids, ids])
        self.steps = torch.cat([self.steps, torch.zeros(count, dtype=torch.long, device=device)])
        self.budget = torch.cat([self.budget, waiting.budget.index_select(0, positions)])
        self.lengths = torch.cat([self.lengths, waiting.lengths.index_select(0, positions)])
