"""Attention maps at validation: a fixed, length-spread set of sentences; nothing drawn for attention=none."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from seq2seq.data.batching import Example, PairDataset
from seq2seq.evaluation.artifacts import pick_examples
from seq2seq.inference.checkpoint import load_checkpoint
from seq2seq.training.callbacks import AttentionMaps
from seq2seq.training.module import Seq2SeqModule
from tests.test_translate import write_checkpoint

VAL = [("w01 " * n).strip() for n in (5, 1, 9, 3, 7, 2, 8, 4, 6)]  # 9 sentences of 1..9 words


def test_pick_examples_spreads_over_lengths_and_is_fixed():
    sources = [s for (s,) in ((v,) for v in VAL)]
    picks = pick_examples(sources, 3)
    assert [len(sources[i].split()) for i in picks] == [1, 5, 9]  # shortest, middle, longest
    assert pick_examples(sources, 3) == picks
    assert sorted(pick_examples(sources, 20)) == list(range(9))
    assert pick_examples(sources, 0) == [] and pick_examples([], 3) == []


def _trainer(sanity_checking=False):
    val = SimpleNamespace(dataset=PairDataset([Example(i, [], [], s, s) for i, s in enumerate(VAL)]))
    return SimpleNamespace(
        sanity_checking=sanity_checking, is_global_zero=True, val_dataloaders=val, loggers=[], global_step=7
    )


def _module(path) -> Seq2SeqModule:
    trained = load_checkpoint(path)
    return Seq2SeqModule(trained.cfg, trained.src_tokenizer, trained.tgt_tokenizer, model=trained.model)


def test_attention_maps_are_drawn_for_the_fixed_examples(tmp_path):
    module = _module(write_checkpoint(tmp_path))
    module.train()
    callback = AttentionMaps(3, tmp_path / "plots" / "attention")
    callback.on_validation_end(_trainer(sanity_checking=True), module)
    assert not (tmp_path / "plots").exists()  # not during Lightning's sanity check
    callback.on_validation_end(_trainer(), module)
    names = sorted(p.name for p in (tmp_path / "plots" / "attention").iterdir())
    assert names == ["val_00000.png", "val_00001.png", "val_00002.png"]  # 5, 1 and 9 words
    assert module.training  # decoding for the maps leaves the module as it found it


@pytest.mark.parametrize("context", ["init", "every_step"])
def test_fixed_context_model_draws_no_map_and_says_so(tmp_path, caplog, context):
    module = _module(write_checkpoint(tmp_path, "model/attention=none", f"model.context={context}"))
    callback = AttentionMaps(3, tmp_path / "plots" / "attention")
    with caplog.at_level(logging.INFO, logger="seq2seq.training.callbacks"):
        callback.on_validation_end(_trainer(), module)
        callback.on_validation_end(_trainer(), module)
    assert not (tmp_path / "plots").exists()
    said = [r.getMessage() for r in caplog.records if "no attention maps" in r.getMessage()]
    assert len(said) == 1 and "attention=none" in said[0]  # once, not at every validation
    translations = module.translator().translate(["w01 w02"], return_attention=True)
    assert translations[0].attention is None and translations[0].output_pieces


def test_the_progress_bar_total_is_what_training_will_really_run():
    from seq2seq.training.progress import RunProgressBar, time_capped

    bar = RunProgressBar()
    bar._trainer = SimpleNamespace(
        num_training_batches=394, max_steps=30, global_step=10, accumulate_grad_batches=1
    )
    assert bar.total_train_batches == 20  # max_steps ends training 20 batches into this 394-batch epoch
    bar._trainer.max_steps = -1
    assert bar.total_train_batches == 394
    bar._trainer.accumulate_grad_batches, bar._trainer.max_steps = 2, 15
    assert bar.total_train_batches == 10
    # max_time: 90 s left at 2 batches/s after 20 batches → 20 + 1 + 180
    assert time_capped(394, 20, 2.0, 90.0) == 201
    assert time_capped(394, 20, 2.0, 1000.0) == 394  # the epoch ends first
    assert time_capped(394, 20, None, 90.0) == 394 and time_capped(394, 20, 2.0, None) == 394
