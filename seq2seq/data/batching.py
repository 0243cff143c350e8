"""Length-bucketed batches under a token budget, sharded across data-parallel ranks, and padding.

Sentences of similar length go together so little compute is spent on padding: the sampler shuffles
(per epoch, from the seed), sorts within large pools by length, cuts batches whose padded size
``n · max(len)`` stays within ``max_tokens``, shuffles the batches and deals them out to ranks. A training
run resumed mid-epoch skips the batches its epoch had already trained
(:meth:`TokenBudgetBatchSampler.resume`), so it sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from seq2seq.data.tokenizer import BOS_ID, EOS_ID, PAD_ID


@dataclass
class Example:
    """One encoded pair; ``index`` is its position in the split (predictions are reordered by it).

    ``source`` and ``reference`` keep the pair's text (after ``data.preprocess`` normalisation), so that
    whoever decodes a batch can score it without looking the split up elsewhere.
    """

    index: int
    src: list[int]
    tgt: list[int]
    source: str = ""
    reference: str = ""


class PairDataset(Dataset):
    def __init__(self, examples: Sequence[Example]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Example:
        return self.examples[i]

    def lengths(self) -> list[int]:
        """Padded cost of each example: max(source, target + 1) tokens."""
        return [max(len(e.src), len(e.tgt) + 1) for e in self.examples]


@dataclass
class Batch:
    """A padded batch.

    Attributes:
        src: ``(B, S)`` source ids; src_lengths ``(B,)``.
        tgt_in: ``(B, T)`` BOS y_1 … y_n (decoder inputs); tgt_out ``(B, T)`` y_1 … y_n EOS (labels).
        indices: ``(B,)`` positions of the examples in their split.
        sources, references: the examples' text (:class:`Example`).
    """

    src: Tensor
    src_lengths: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    indices: Tensor
    sources: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)

    def to(self, device: torch.device | str) -> Batch:
        tensors = (self.src, self.src_lengths, self.tgt_in, self.tgt_out, self.indices)
        return Batch(*(t.to(device) for t in tensors), self.sources, self.references)

    @property
    def num_target_tokens(self) -> int:
        return int((self.tgt_out != PAD_ID).sum())


def _pad(sequences: Sequence[Sequence[int]]) -> Tensor:
    out = torch.full((len(sequences), max(len(s) for s in sequences)), PAD_ID, dtype=torch.long)
    for i, s in enumerate(sequences):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def collate(examples: Sequence[Example]) -> Batch:
    """Pad a list of examples into a :class:`Batch`."""
    return Batch(
        src=_pad([e.src for e in examples]),
        src_lengths=torch.tensor([len(e.src) for e in examples], dtype=torch.long),
        tgt_in=_pad([[BOS_ID, *e.tgt] for e in examples]),
        tgt_out=_pad([[*e.tgt, EOS_ID] for e in examples]),
        indices=torch.tensor([e.index for e in examples], dtype=torch.long),
        sources=[e.source for e in examples],
        references=[e.reference for e in examples],
    )


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Yield lists of dataset indices whose padded size stays within ``max_tokens``.

    Args:
        lengths: padded cost of each example (see :meth:`PairDataset.lengths`).
        max_tokens: budget per batch, ``batch_size · longest example``; a single longer example forms its own batch.
        shuffle: training order (random, reshuffled each epoch from ``seed``); otherwise evaluation order,
            sorted by length.
        seed: base seed; the order of epoch ``e`` depends only on ``(seed, e)``.
        pool_size: examples sorted together; larger pools pad less, smaller ones mix lengths more.
        num_replicas, rank: data-parallel sharding; by default read from ``torch.distributed`` when initialised.
            Together the ranks cover every example exactly once per epoch. Training (``shuffle``): every rank
            gets the same number of batches (DDP's gradient all-reduce needs it), so the largest batches are
            halved until the count divides evenly. Evaluation: whole batches are dealt out unchanged, so each
            sentence is decoded in the same batch as in one process and the scores are identical; ranks may
            get one batch more or fewer.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        shuffle: bool = True,
        seed: int = 0,
        pool_size: int = 100_000,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        self.lengths = list(lengths)
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.pool_size = pool_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, batches of it already trained)
        # ((epoch, world, rank), that rank's batches of that epoch): see _rank_batches
        self._cached: tuple[tuple[int, int, int], list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of each epoch."""
        self.epoch = epoch

    def resume(self, epoch: int, batches_done: int) -> None:
        """Make the next pass over ``epoch`` start after its first ``batches_done`` batches (of this rank).

        Used once, by a run resumed mid-epoch from a checkpoint; ``len()`` stays the full epoch's count.
        """
        if batches_done < 0:
            raise ValueError(f"batches_done must be >= 0, got {batches_done}")
        self._resume = (epoch, batches_done)

    def _world(self) -> tuple[int, int]:
        if self.num_replicas is not None:
            return self.num_replicas, self.rank or 0
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        return 1, 0

    def _all_batches(self) -> list[list[int]]:
        order = list(range(len(self.lengths)))
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        if self.shuffle:
            rng.shuffle(order)
            pools = [order[i : i + self.pool_size] for i in range(0, len(order), self.pool_size)]
        else:
            pools = [order]
        batches: list[list[int]] = []
        for pool in pools:
            pool.sort(key=lambda i: self.lengths[i])  # stable: ties keep the shuffled order
            batch: list[int] = []
            longest = 0
            for i in pool:
                new_longest = max(longest, self.lengths[i])
                if batch and new_longest * (len(batch) + 1) > self.max_tokens:
                    batches.append(batch)
                    batch, new_longest = [], self.lengths[i]
                batch.append(i)
                longest = new_longest
            if batch:
                batches.append(batch)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def _shard(self, batches: list[list[int]], world: int) -> list[list[int]]:
        """Split the largest batches until every rank gets one (training: until the count divides evenly);
        no example is repeated or lost."""
        while len(batches) < world or (self.shuffle and len(batches) % world):
            largest = max(range(len(batches)), key=lambda b: len(batches[b]))
            if len(batches[largest]) < 2:
                raise ValueError(
                    f"{len(self.lengths)} examples are too few to give {world} data-parallel ranks one batch "
                    "each; use fewer devices or a larger split"
                )
            big = batches.pop(largest)
            batches[largest:largest] = [big[: len(big) // 2], big[len(big) // 2 :]]
        return batches

    def _rank_batches(self) -> list[list[int]]:
        """This rank's batches of the current epoch, computed once per (epoch, world, rank): Lightning asks for
        ``len()`` several times per epoch, and on a large corpus each pass sorts every example."""
        world, rank = self._world()
        key = (self.epoch, world, rank)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, self._shard(self._all_batches(), world)[rank::world])
        return self._cached[1]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._rank_batches()
        if self._resume is not None:
            epoch, done = self._resume
            self._resume = None
            if epoch == self.epoch:
                batches = batches[done:]
        for batch in batches:
            yield list(batch)  # a copy: the cached epoch stays intact whatever the consumer does

    def __len__(self) -> int:
        return len(self._rank_batches())
