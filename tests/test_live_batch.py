"""Continuous batching: a stream of batches searched with refilled rows gives each batch's own search results."""

from types import SimpleNamespace

import pytest
import torch

from seq2seq.models.decoder import DecoderState, Memory
from seq2seq.models.decoding import Decoding, decode, decode_stream
from seq2seq.models.live_batch import can_refill, cat_memory, cat_state
from seq2seq.models.search import beam_search, beam_stream, greedy_search, greedy_stream
from seq2seq.models.seq2seq import EncoderDecoder

BOS, EOS = 2, 3
VOCAB = 14


def _model(attention="bahdanau", rnn_type="gru", **kwargs):
    torch.manual_seed(3)
    model = EncoderDecoder(VOCAB, VOCAB, 6, 8, attention=attention, rnn_type=rnn_type, **kwargs).eval()
    with torch.no_grad():
        model.decoder.generator.weight.mul_(6.0)  # sharp outputs; EOS ends some sentences, budgets others
        model.decoder.generator.bias[EOS] -= 0.5
    return model


def _batches(sizes=(4, 3, 5, 2), seed=5):
    """Batches of different sizes and source widths; each sentence its own length and output budget."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for size in sizes:
        lengths = torch.randint(1, 8, (size,), generator=g)
        lengths[0] = lengths.max()  # the batch's width is its longest sentence, as collate pads
        src = torch.randint(4, VOCAB, (size, int(lengths.max())), generator=g)
        for row, n in enumerate(lengths.tolist()):
            src[row, n:] = 0
        budgets = torch.randint(1, 10, (size,), generator=g)
        batches.append((src, lengths, budgets))
    return batches


class RowCounter:
    """Wraps ``decoder.forward_step``: the decoder rows and the memory's source width at every step."""

    def __init__(self, model):
        self.rows, self.widths, step = [], [], model.decoder.forward_step

        def counted(embedded, state, memory):
            self.rows.append(embedded.size(0))
            self.widths.append(memory.mask.size(1))
            return step(embedded, state, memory)

        model.decoder.forward_step = counted


def _assert_same_attention(one, refilled, attention):
    """The refilled search's attention maps equal the batch's own (none for the fixed-context model)."""
    if attention == "none":
        assert refilled.attention is None
        return
    for a, b in zip(one.attention, refilled.attention, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("attention", "rnn_type"),
    [("bahdanau", "gru"), ("luong_general", "lstm"), ("none", "rnn"), ("luong_concat", "gru")],
)
def test_refilled_greedy_gives_every_batch_its_own_results(attention, rnn_type):
    model, batches = _model(attention, rnn_type), _batches()
    alone = [greedy_search(model, *batch, BOS, EOS, return_attention=True) for batch in batches]
    streamed = list(greedy_stream(model, batches, BOS, EOS, return_attention=True, refill=True))
    assert len(streamed) == len(batches)
    for one, refilled in zip(alone, streamed, strict=True):
        assert refilled.tokens == one.tokens
        _assert_same_attention(one, refilled, attention)
    assert len({len(tokens) for hyps in alone for tokens in hyps.tokens}) > 3  # sentences end at many steps


@pytest.mark.parametrize("attention", ["bahdanau", "none"])
def test_refilled_beam_gives_every_batch_its_own_results(attention):
    model, batches = _model(attention, "lstm"), _batches(seed=8)
    alone = [beam_search(model, *batch, BOS, EOS, beam_size=3, return_attention=True) for batch in batches]
    streamed = list(beam_stream(model, batches, BOS, EOS, beam_size=3, return_attention=True, refill=True))
    assert len(streamed) == len(batches)
    for one, refilled in zip(alone, streamed, strict=True):
        assert refilled.tokens == one.tokens
        torch.testing.assert_close(torch.tensor(refilled.scores), torch.tensor(one.scores))
        _assert_same_attention(one, refilled, attention)


def test_refill_takes_fewer_fuller_steps_within_the_token_budget():
    model, batches = _model(), _batches(sizes=(5, 5, 5, 5), seed=11)
    counter = RowCounter(model)
    list(greedy_stream(model, batches, BOS, EOS))
    by_batch = counter.rows
    counter.rows, counter.widths = [], []
    list(greedy_stream(model, batches, BOS, EOS, refill=True))
    refilled, widths = counter.rows, counter.widths
    assert sum(refilled) == sum(by_batch)  # the same sentence-steps, in fewer, fuller steps
    assert len(refilled) < len(by_batch)
    assert sum(rows < 5 for rows in by_batch) > sum(rows < 5 for rows in refilled)
    # never more padded source tokens live than a batch of the stream holds
    assert max(r * w for r, w in zip(refilled, widths, strict=True)) <= max(b[0].numel() for b in batches)


def test_refill_admits_no_more_than_the_token_budget_when_long_sentences_are_live():
    """Two long sentences, then seven short ones: beside a live long one only one short fits the budget."""
    model, g = _model(), torch.Generator().manual_seed(4)
    batches = [
        (
            torch.randint(4, VOCAB, (2, 7), generator=g),
            torch.tensor([7, 7]),
            torch.tensor([9, 2]),
        ),  # 14 tokens
        (torch.randint(4, VOCAB, (7, 2), generator=g), torch.full((7,), 2), torch.full((7,), 3)),  # 14 tokens
    ]
    counter = RowCounter(model)
    streamed = [h.tokens for h in greedy_stream(model, batches, BOS, EOS, refill=True)]
    assert streamed == [greedy_search(model, *batch, BOS, EOS).tokens for batch in batches]
    steps = list(zip(counter.rows, counter.widths, strict=True))
    assert all(rows * width <= 14 for rows, width in steps)
    assert max(rows for rows, width in steps if width == 7) == 2  # the long one and one short one padded to 7
    assert max(rows for rows, width in steps if width == 2) > 2  # once it ends, the memory narrows: more fit
    assert steps[0] == (2, 7) and steps[-1][1] == 2


def test_without_refill_each_batch_is_searched_alone():
    model, batches = _model(), _batches()
    counter = RowCounter(model)
    alone = [beam_search(model, *batch, BOS, EOS, beam_size=2).tokens for batch in batches]
    rows_alone, counter.rows = counter.rows, []
    streamed = [h.tokens for h in beam_stream(model, batches, BOS, EOS, beam_size=2, refill=False)]
    assert streamed == alone
    assert counter.rows == rows_alone  # step for step the same rows: no step mixes two batches


def test_models_whose_rows_depend_on_the_step_decode_batch_by_batch():
    local = _model("luong_local")
    assert not can_refill(local)
    assert can_refill(_model("bahdanau"))
    batches = _batches()
    counter = RowCounter(local)
    alone = [greedy_search(local, *batch, BOS, EOS).tokens for batch in batches]
    rows_alone, counter.rows = counter.rows, []
    streamed = [h.tokens for h in greedy_stream(local, batches, BOS, EOS, refill=True)]
    assert streamed == alone
    assert counter.rows == rows_alone


def test_decode_stream_hands_each_batch_back_with_its_hypotheses_in_order():
    model = _model()
    batches = [
        SimpleNamespace(src=src, src_lengths=lengths, tag=i) for i, (src, lengths, _) in enumerate(_batches())
    ]
    for name in ("greedy", "beam"):
        decoding = Decoding(name, beam_size=2, max_length_constant=3)
        pairs = list(decode_stream(model, iter(batches), decoding))
        assert [batch.tag for batch, _ in pairs] == [0, 1, 2, 3]
        for batch, hyps in pairs:
            assert hyps.tokens == decode(model, batch, decoding).tokens


def test_cat_memory_pads_the_shorter_source_and_masks_it():
    first = Memory(
        torch.ones(2, 3, 4), torch.ones(2, 3, 5), torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 4)
    )
    second = Memory(torch.full((1, 5, 4), 2.0), None, torch.ones(1, 5, dtype=torch.bool), torch.zeros(1, 4))
    second.keys = torch.full((1, 5, 5), 2.0)
    joined = cat_memory(first, second)
    assert joined.outputs.shape == (3, 5, 4) and joined.keys.shape == (3, 5, 5)
    assert joined.mask.tolist() == [[True] * 3 + [False] * 2] * 2 + [[True] * 5]
    assert joined.outputs[:2, 3:].abs().sum() == 0 and torch.equal(joined.outputs[2], second.outputs[0])
    state = cat_state(
        DecoderState((torch.zeros(1, 2, 4), torch.ones(1, 2, 4)), torch.zeros(2, 4), 3),
        DecoderState((torch.ones(1, 1, 4), torch.ones(1, 1, 4)), torch.ones(1, 4), 0),
    )
    assert state.hidden[0].shape == (1, 3, 4) and state.hidden[0][0, 2].sum() == 4
    assert state.attentional.shape == (3, 4)


def test_cat_memory_zeroes_every_padded_position(monkeypatch):
    """The joined tensor starts uninitialised: deterministic mode fills such memory with NaN (True for masks),
    so a padded position that was not written would show."""
    monkeypatch.setattr(torch.utils.deterministic, "fill_uninitialized_memory", True)
    wide = Memory(
        torch.ones(2, 5, 4), torch.ones(2, 5, 3), torch.ones(2, 5, dtype=torch.bool), torch.ones(2, 4)
    )
    narrow = Memory(
        torch.full((3, 2, 4), 2.0),
        torch.full((3, 2, 3), 2.0),
        torch.ones(3, 2, dtype=torch.bool),
        torch.zeros(3, 4),
    )
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        joined = [cat_memory(wide, narrow), cat_memory(narrow, wide)]
    finally:
        torch.use_deterministic_algorithms(before)
    for memory, narrow_rows in zip(joined, (slice(2, 5), slice(0, 3)), strict=True):
        for tensor in (memory.outputs, memory.keys):
            assert not tensor.isnan().any()
            assert tensor[narrow_rows, 2:].abs().sum() == 0 and torch.all(tensor[narrow_rows, :2] == 2.0)
        assert memory.mask[narrow_rows].tolist() == [[True] * 2 + [False] * 3] * 3
        assert memory.mask.sum() == 2 * 5 + 3 * 2


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_a_transformer_decoder_drops_finished_sentences_without_narrowing_its_memory(search):
    """Its cached cross keys keep the batch's source width; a finished sentence's rows leave all the same."""
    model = _model(encoder_type="transformer", decoder_type="transformer", encoder_heads=2, decoder_heads=2)
    assert not can_refill(model)
    batches = _batches()
    stream, alone = (greedy_stream, greedy_search) if search == "greedy" else (beam_stream, beam_search)
    options = {} if search == "greedy" else {"beam_size": 2}
    streamed = [h.tokens for h in stream(model, batches, BOS, EOS, refill=True, **options)]
    each_alone = [
        [
            alone(model, src[i : i + 1, : int(n)], n.view(1), b.view(1), BOS, EOS, **options).tokens[0]
            for i, n, b in zip(range(len(lengths)), lengths, budgets, strict=True)
        ]
        for src, lengths, budgets in batches
    ]
    assert streamed == each_alone
    # sentences end at different steps
    assert len({len(tokens) for batch in streamed for tokens in batch}) > 1
