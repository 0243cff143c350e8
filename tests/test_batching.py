import random

import pytest

from seq2seq.data.batching import Example, PairDataset, TokenBudgetBatchSampler, collate
from seq2seq.data.tokenizer import BOS_ID, EOS_ID, PAD_ID

LENGTHS = [random.Random(0).randint(1, 60) for _ in range(500)]


def _all(sampler):
    return [i for batch in sampler for i in batch]


def test_budget_respected_and_every_example_once():
    sampler = TokenBudgetBatchSampler(LENGTHS, max_tokens=300, seed=1)
    batches = list(sampler)
    assert sorted(_all(sampler)) == list(range(500))
    for batch in batches:
        assert len(batch) * max(LENGTHS[i] for i in batch) <= 300
    assert len(sampler) == len(batches)


def test_padding_efficiency_is_high():
    batches = list(TokenBudgetBatchSampler(LENGTHS, max_tokens=600, seed=1))
    real = sum(LENGTHS[i] for b in batches for i in b)
    padded = sum(len(b) * max(LENGTHS[i] for i in b) for b in batches)
    assert real / padded > 0.9


def test_oversized_example_gets_its_own_batch():
    batches = list(TokenBudgetBatchSampler([5, 50, 5], max_tokens=20, shuffle=False))
    assert [1] in batches


def test_epochs_are_deterministic_and_differ():
    a = TokenBudgetBatchSampler(LENGTHS, 300, seed=4)
    b = TokenBudgetBatchSampler(LENGTHS, 300, seed=4)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert sorted(_all(a)) == list(range(500))


def test_eval_order_is_sorted_and_fixed():
    sampler = TokenBudgetBatchSampler(LENGTHS, 300, shuffle=False)
    order = _all(sampler)
    assert [LENGTHS[i] for i in order] == sorted(LENGTHS)


@pytest.mark.parametrize("world", [2, 3])
def test_shards_are_disjoint_equal_and_complete(world):
    shards = [
        list(TokenBudgetBatchSampler(LENGTHS, 300, seed=2, num_replicas=world, rank=r)) for r in range(world)
    ]
    assert len({len(s) for s in shards}) == 1
    seen = [i for shard in shards for batch in shard for i in batch]
    assert sorted(seen) == list(range(500))


def test_collate_pads_and_shifts():
    batch = collate([Example(0, [5, 6, 7], [8, 9]), Example(1, [5], [8, 9, 10])])
    assert batch.src.tolist() == [[5, 6, 7], [5, PAD_ID, PAD_ID]]
    assert batch.src_lengths.tolist() == [3, 1]
    assert batch.tgt_in.tolist() == [[BOS_ID, 8, 9, PAD_ID], [BOS_ID, 8, 9, 10]]
    assert batch.tgt_out.tolist() == [[8, 9, EOS_ID, PAD_ID], [8, 9, 10, EOS_ID]]
    assert batch.num_target_tokens == 7
    assert PairDataset([Example(0, [1, 2, 3], [4])]).lengths() == [3]


def test_bad_budget():
    with pytest.raises(ValueError, match="max_tokens must be positive"):
        TokenBudgetBatchSampler([1], 0)
