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


def test_an_epochs_batches_are_computed_once_and_follow_the_epoch(monkeypatch):
    sampler = TokenBudgetBatchSampler(LENGTHS, 300, seed=4)
    fresh = list(TokenBudgetBatchSampler(LENGTHS, 300, seed=4))
    passes = []
    compute = sampler._all_batches
    monkeypatch.setattr(sampler, "_all_batches", lambda: passes.append(sampler.epoch) or compute())
    first = list(sampler)
    assert first == fresh and len(sampler) == len(first)
    first[0].append(-1)  # a consumer changing a batch it was given does not change the epoch
    assert list(sampler) == fresh
    sampler.set_epoch(1)
    second = list(sampler)
    assert len(sampler) == len(second) and second != fresh
    assert passes == [0, 1]  # repeated len() and iteration (as Lightning does): one pass per epoch


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


def test_eval_shards_deal_the_single_process_batches_unchanged():
    """Under DDP each sentence is decoded in the same batch as in one process, so the scores are identical."""
    single = list(TokenBudgetBatchSampler(LENGTHS, 300, shuffle=False, num_replicas=1, rank=0))
    shards = [
        list(TokenBudgetBatchSampler(LENGTHS, 300, shuffle=False, num_replicas=3, rank=r)) for r in range(3)
    ]
    assert sorted(map(tuple, single)) == sorted(tuple(batch) for shard in shards for batch in shard)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    for r, shard in enumerate(shards):
        assert len(TokenBudgetBatchSampler(LENGTHS, 300, shuffle=False, num_replicas=3, rank=r)) == len(shard)


def test_eval_shards_split_a_batch_only_so_that_every_rank_gets_one():
    shards = [
        list(TokenBudgetBatchSampler([3, 4, 5], 100, shuffle=False, num_replicas=2, rank=r)) for r in (0, 1)
    ]
    assert all(len(shard) == 1 for shard in shards)
    assert sorted(i for shard in shards for batch in shard for i in batch) == [0, 1, 2]


def test_too_few_examples_for_the_ranks_is_a_clear_error():
    with pytest.raises(ValueError, match="too few to give 4 data-parallel ranks one batch each"):
        list(TokenBudgetBatchSampler([3, 4], 100, num_replicas=4, rank=0))


def test_resume_skips_the_batches_already_trained_once():
    sampler = TokenBudgetBatchSampler(LENGTHS, 300, seed=5)
    sampler.set_epoch(2)
    epoch = list(sampler)
    sampler.resume(epoch=2, batches_done=4)
    assert list(sampler) == epoch[4:]
    assert len(sampler) == len(epoch)  # Lightning counts the whole epoch
    assert list(sampler) == epoch  # the skip is used once


def test_resume_of_another_epoch_skips_nothing():
    sampler = TokenBudgetBatchSampler(LENGTHS, 300, seed=5)
    sampler.resume(epoch=1, batches_done=3)  # that epoch was complete: training goes on with the next one
    sampler.set_epoch(2)
    fresh = TokenBudgetBatchSampler(LENGTHS, 300, seed=5)
    fresh.set_epoch(2)
    assert list(sampler) == list(fresh)


def test_resume_per_rank():
    shards = [TokenBudgetBatchSampler(LENGTHS, 300, seed=5, num_replicas=2, rank=r) for r in (0, 1)]
    full = [list(s) for s in shards]
    for shard in shards:
        shard.resume(epoch=0, batches_done=2)
    assert [list(s) for s in shards] == [f[2:] for f in full]
