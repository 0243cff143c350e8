"""The fast teacher-forced unrolls (models/unroll.py) compute what the decoder's step loop computes."""

import pytest
import torch

from seq2seq.models import unroll
from seq2seq.models.seq2seq import EncoderDecoder
from seq2seq.models.step_weights import StepWeight

SETUPS = [  # (attention, context, input_feeding): every decoder the config can build
    ("none", "init", False),
    ("none", "every_step", False),
    ("none", "init", True),
    ("none", "every_step", True),
    ("bahdanau", "init", True),
    ("bahdanau", "init", False),
    ("luong_dot", "init", False),
    ("luong_general", "init", False),
    ("luong_concat", "init", False),
    ("luong_general", "init", True),
    ("luong_concat", "init", True),
]
HOISTED = [s for s in SETUPS if s[0] == "bahdanau" or s[2]]  # a step reads the previous output: no fused call


def _model(rnn_type, attention, context, input_feeding, layers):
    torch.manual_seed(0)
    return EncoderDecoder(
        11,
        13,
        embedding_size=6,
        hidden_size=8,
        rnn_type=rnn_type,
        attention=attention,
        context=context,
        input_feeding=input_feeding,
        encoder_layers=layers,
        decoder_layers=layers,
    ).double()


def _batch():
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, 11, (3, 7), generator=g)
    src[1, 5:] = 0
    src[2, 2:] = 0
    tgt_in = torch.randint(4, 13, (3, 6), generator=g)
    tgt_in[:, 0] = 2
    return src, torch.tensor([7, 5, 2]), tgt_in


def _loss_and_grads(model, fast, step_weights=True):
    """``step_weights`` switches both speed.step_weights and speed.step_attention."""
    model.fast_unroll, model.step_weights, model.step_attention = fast, step_weights, step_weights
    model.zero_grad()
    src, lengths, tgt_in = _batch()
    logits, weights = model(src, lengths, tgt_in, return_attention=True)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 13), tgt_in.roll(-1, 1).reshape(-1))
    loss.backward()
    return loss.detach(), weights, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("rnn_type", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize(("attention", "context", "input_feeding"), SETUPS)
def test_fast_unroll_equals_step_loop(rnn_type, attention, context, input_feeding, layers):
    _check_fast_unroll(
        _model(rnn_type, attention, context, input_feeding, layers), attention, step_weights=True
    )


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("rnn_type", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize(("attention", "context", "input_feeding"), HOISTED)
def test_hoisted_loop_without_step_weights_equals_step_loop(
    rnn_type, attention, context, input_feeding, layers
):
    """speed.step_weights=false, speed.step_attention=false: autograd's own per-step gradients, the same values."""
    _check_fast_unroll(
        _model(rnn_type, attention, context, input_feeding, layers), attention, step_weights=False
    )


def _check_fast_unroll(model, attention, step_weights):
    loss, weights, grads = _loss_and_grads(model, fast=False)
    fast_loss, fast_weights, fast_grads = _loss_and_grads(model, fast=True, step_weights=step_weights)
    torch.testing.assert_close(fast_loss, loss, rtol=1e-10, atol=1e-12)
    if attention == "none":
        assert weights is None and fast_weights is None
    else:
        torch.testing.assert_close(fast_weights, weights, rtol=1e-10, atol=1e-12)
    assert grads.keys() == fast_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-9, atol=1e-11, msg=name)


def test_which_unroll_runs(monkeypatch):
    """Recurrences that do not read their previous output are fused (no step loop at all); others hoisted."""
    assert unroll.can_fuse(_model("gru", "luong_general", "init", False, 1).decoder)
    assert unroll.can_fuse(_model("lstm", "none", "every_step", False, 1).decoder)
    assert not unroll.can_fuse(_model("gru", "bahdanau", "init", False, 1).decoder)
    assert not unroll.can_fuse(_model("gru", "luong_dot", "init", True, 1).decoder)
    model = _model("gru", "luong_dot", "init", False, 1)
    calls = []
    monkeypatch.setattr(model.decoder, "forward_step", lambda *a: calls.append(1))
    monkeypatch.setattr(model.decoder.rnn, "forward", lambda *a: calls.append(1))
    src, lengths, tgt_in = _batch()
    logits, _ = model(src, lengths, tgt_in)
    assert logits.shape == (3, 6, 13) and calls == []


def test_the_hoisted_loop_defers_its_weight_gradients(monkeypatch):
    """speed.step_weights: W_h, W_rest and W_c are StepWeights while training, plain tensors without gradients."""
    made, init = [], StepWeight.__init__
    monkeypatch.setattr(
        StepWeight, "__init__", lambda self, w, *rest: made.append(tuple(w.shape)) or init(self, w, *rest)
    )
    model = _model("gru", "bahdanau", "init", True, 1)
    src, lengths, tgt_in = _batch()
    model(src, lengths, tgt_in)[0].sum().backward()
    h = 8  # (in, out): the [h̃; c] columns of W_ih; W_hh with Bahdanau's W appended; W_c
    assert made == [(h + h, 3 * h), (h, 3 * h + h), (h + h, h)]
    made.clear()
    with torch.no_grad():
        model(src, lengths, tgt_in)
    model.step_weights = False
    model(src, lengths, tgt_in)[0].sum().backward()
    assert made == []


def test_luong_concat_reads_through_step_attention(monkeypatch):
    """speed.step_attention: Luong's concat score, queried with the step's new state, is read through StepAttention
    at every step (Bahdanau's too); with the switch off, or without gradients, through the attention module."""
    from seq2seq.models.step_attention import StepAttention

    reads, read = [], StepAttention.read
    monkeypatch.setattr(StepAttention, "read", lambda self, q: reads.append(tuple(q.shape)) or read(self, q))
    src, lengths, tgt_in = _batch()
    h, steps = 8, tgt_in.size(1)
    for attention, layers in (("luong_concat", 1), ("luong_concat", 2), ("bahdanau", 1)):
        reads.clear()
        model = _model("gru", attention, "init", True, layers)
        model.fused_step = False  # else a one-layer GRU's Bahdanau step is one function
        model(src, lengths, tgt_in)[0].sum().backward()
        assert reads == [(3, h)] * steps, (attention, layers)  # the projected query W q: (B, A)
        reads.clear()
        with torch.no_grad():
            model(src, lengths, tgt_in)
        model.step_attention = False
        model(src, lengths, tgt_in)[0].sum().backward()
        assert reads == [], (attention, layers)


def test_fast_unroll_in_float32_with_dropout_off_in_eval():
    """The default dtype: equal within float32 rounding; scheduled sampling still runs the step loop."""
    torch.manual_seed(0)
    model = EncoderDecoder(
        11,
        13,
        embedding_size=6,
        hidden_size=8,
        decoder_dropout=0.3,
        encoder_dropout=0.3,
        encoder_layers=2,
        decoder_layers=2,
    ).eval()
    src, lengths, tgt_in = _batch()
    fast, _ = model(src, lengths, tgt_in)
    model.fast_unroll = False
    slow, _ = model(src, lengths, tgt_in)
    torch.testing.assert_close(fast, slow)
    features, _ = model(src, lengths, tgt_in, features=True)
    torch.testing.assert_close(model.decoder.logits(features), slow)
    with pytest.raises(ValueError, match="teacher_forcing_ratio=1"):
        model(src, lengths, tgt_in, teacher_forcing_ratio=0.5, features=True)


@pytest.mark.slow
def test_compiled_step_equals_the_eager_step():
    """speed.compile: the hoisted step through torch.compile (inductor) computes the same; its compile time is kept."""
    model = _model("gru", "bahdanau", "init", True, 1).float()
    src, lengths, tgt_in = _batch()
    eager, _ = model(src, lengths, tgt_in)
    model.compile_step = True
    compiled, _ = model(src, lengths, tgt_in)
    assert unroll.compile_seconds() > 0
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    compiled.sum().backward()  # and it trains
    assert model.decoder.rnn.cells[0].weight_hh.grad.abs().sum() > 0
