"""FusedStep: a one-layer GRU's Bahdanau step as one autograd function equals the step loop, values and gradients."""

import gc
import os
import shutil
import weakref

import pytest
import torch

from seq2seq.models import kernels, onednn, unroll
from seq2seq.models.fused_step import FusedStep
from seq2seq.models.seq2seq import EncoderDecoder

V_SRC, V_TGT = 11, 13


def _model(input_feeding=True, rnn_type="gru", layers=1, attention="bahdanau", dtype=torch.float64, hidden=8):
    torch.manual_seed(0)
    model = EncoderDecoder(
        V_SRC,
        V_TGT,
        embedding_size=6,
        hidden_size=hidden,
        rnn_type=rnn_type,
        attention=attention,
        input_feeding=input_feeding,
        encoder_layers=layers,
        decoder_layers=layers,
    )
    return model.to(dtype)


def _batch():
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, V_SRC, (3, 7), generator=g)
    src[1, 5:] = 0
    src[2, 2:] = 0
    tgt_in = torch.randint(4, V_TGT, (3, 6), generator=g)
    tgt_in[:, 0] = 2
    return src, torch.tensor([7, 5, 2]), tgt_in


def _run(model, fast=True, fused=True, recompute=True, weights_in_loss=False, kernel=False):
    """Loss (cross-entropy, plus the attention weights' squares when asked), attention, every gradient."""
    model.fast_unroll, model.fused_step = fast, fused
    model.decoder.attention.recompute_gates = recompute
    model.decoder.attention.compiled_kernels = kernel
    model.zero_grad()
    src, lengths, tgt_in = _batch()
    logits, weights = model(src, lengths, tgt_in, return_attention=True)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V_TGT), tgt_in.roll(-1, 1).reshape(-1))
    if weights_in_loss:
        loss = loss + (weights**2).sum()
    loss.backward()
    return loss.detach(), weights.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _kernel():
    """The compiled operators (built here: a failed build fails the test), or a skip without a compiler."""
    if shutil.which(os.environ.get("CXX") or "c++") is None:
        pytest.skip("no C++ compiler: speed.compiled_kernels=auto falls back")
    kernels.load()
    return True


@pytest.fixture
def steps(monkeypatch):
    """How many steps ran through FusedStep."""
    count, step = [], FusedStep.step
    monkeypatch.setattr(FusedStep, "step", lambda self, *a: count.append(1) or step(self, *a))
    return count


@pytest.fixture
def loops(monkeypatch):
    """How many loops ran as the compiled whole-loop function (fused_step.loop)."""
    count, loop = [], unroll.compiled_loop
    monkeypatch.setattr(unroll, "compiled_loop", lambda *a: count.append(1) or loop(*a))
    return count


@pytest.mark.parametrize("input_feeding", [True, False])
@pytest.mark.parametrize("recompute, kernel", [(True, False), (False, False), (True, True)])
@pytest.mark.parametrize("weights_in_loss", [False, True])
def test_fused_step_equals_the_step_loop(steps, loops, input_feeding, recompute, kernel, weights_in_loss):
    """Also with the compiled operators (speed.compiled_kernels): then the whole loop is one function, and unfused
    the attention scores are the kernel's."""
    kernel = kernel and _kernel()
    model = _model(input_feeding)
    loss, weights, grads = _run(model, fast=False, weights_in_loss=weights_in_loss)
    assert steps == [] and loops == []
    fused = _run(model, recompute=recompute, weights_in_loss=weights_in_loss, kernel=kernel)
    if kernel:
        assert steps == [] and loops == [1]  # the whole loop in one call
    else:
        assert len(steps) == _batch()[2].size(1) and loops == []  # every target step
    unfused = _run(model, fused=False, recompute=recompute, weights_in_loss=weights_in_loss, kernel=kernel)
    for other in (fused, unfused):
        torch.testing.assert_close(other[0], loss, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(other[1], weights, rtol=1e-10, atol=1e-12)
        assert other[2].keys() == grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(other[2][name], grad, rtol=1e-9, atol=1e-11, msg=name)
    assert all(g.abs().sum() > 0 for g in fused[2].values())  # every parameter gets a gradient


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, (1e-10, 1e-12)), (torch.float32, (1e-4, 1e-6))])
@pytest.mark.parametrize("input_feeding", [True, False])
def test_the_compiled_loops_gate_pass_covers_whole_vectors_and_a_tail(loops, dtype, tolerance, input_feeding):
    """Hidden size 22: the compiled loop's vectorised gate passes (csrc/fused_step.cpp) run whole vectors and a
    scalar tail for every vector width (4-16 lanes), forward and backward, equal to the step loop's operators."""
    model = _model(input_feeding, dtype=dtype, hidden=22)
    loss, weights, grads = _run(model, fast=False, weights_in_loss=True)
    compiled = _run(model, weights_in_loss=True, kernel=_kernel())
    assert loops == [1]
    rtol, atol = tolerance
    torch.testing.assert_close(compiled[0], loss, rtol=rtol, atol=atol)
    torch.testing.assert_close(compiled[1], weights, rtol=rtol, atol=atol)
    for name, grad in grads.items():
        torch.testing.assert_close(compiled[2][name], grad, rtol=100 * rtol, atol=atol, msg=name)


@pytest.mark.parametrize(
    "options",
    [{"layers": 2}, {"rnn_type": "lstm"}, {"attention": "luong_concat"}, {"attention": "luong_general"}],
)
def test_other_decoders_keep_their_loop(steps, options):
    """Two layers, an LSTM, Luong's attention: not this step's maths, so not fused (and equal: test_unroll.py)."""
    _run(_model(**options), recompute=True)
    assert steps == []


def test_without_gradients_the_decoder_steps_alone(steps):
    model = _model()
    with torch.no_grad():
        src, lengths, tgt_in = _batch()
        model(src, lengths, tgt_in)
    assert steps == []


@pytest.mark.skipif(not onednn.active(True, torch.ones(1)), reason="oneDNN not available")
@pytest.mark.parametrize("kernel", [False, True])
def test_float32_through_onednn_equals_the_unfused_step(loops, kernel):
    """The benchmark's dtype and products: within float32 rounding of the separate operators'; also the compiled
    whole loop, whose forward reads its weights' row-by-row copies."""
    kernel = kernel and _kernel()
    model = _model(dtype=torch.float32)
    model.onednn_matmul = True
    loss, weights, grads = _run(model, fused=False)
    fused_loss, fused_weights, fused_grads = _run(model, kernel=kernel)
    assert loops == ([1] if kernel else [])
    torch.testing.assert_close(fused_loss, loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused_weights, weights, rtol=1e-5, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("kernel", [False, True])
def test_a_retained_graph_runs_twice(kernel):
    model = _model()
    model.decoder.attention.compiled_kernels = kernel and _kernel()
    src, lengths, tgt_in = _batch()
    loss = model(src, lengths, tgt_in)[0].square().mean()
    loss.backward(retain_graph=True)
    once = {n: p.grad.clone() for n, p in model.named_parameters()}
    loss.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, 2 * once[name], rtol=1e-12, atol=1e-14, msg=name)


def test_the_steps_are_freed_with_the_graph_without_the_garbage_collector(monkeypatch):
    """Nothing a step keeps refers back to its node (a cycle through a node is never collected: memory grows
    with every update)."""
    made, init = [], FusedStep.__init__
    monkeypatch.setattr(FusedStep, "__init__", lambda self, *a: made.append(self) or init(self, *a))
    model = _model()
    src, lengths, tgt_in = _batch()
    gc.disable()
    try:
        loss = model(src, lengths, tgt_in)[0].sum()
        records = [weakref.ref(made[0].w_h.steps), weakref.ref(made[0].reads.steps)]
        made.clear()
        loss.backward()
        del loss
        assert [r() for r in records] == [None, None]
    finally:
        gc.enable()
    assert model.decoder.attention.energy_layer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kernel", [False, True])
def test_a_second_derivative_raises_instead_of_being_wrong(kernel):
    model = _model()
    model.decoder.attention.compiled_kernels = kernel and _kernel()
    src, lengths, tgt_in = _batch()
    loss = model(src, lengths, tgt_in)[0].square().sum()
    weight = model.decoder.output_layer.bias
    (grad,) = torch.autograd.grad(loss, weight, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()


def _node(node, name):
    """The first autograd node called ``name`` upstream of ``node``."""
    pending = [node]
    while pending:
        node = pending.pop()
        if type(node).__name__ == name:
            return node
        pending.extend(child for child, _ in node.next_functions if child is not None)
    raise AssertionError(f"no {name} in the graph")


def test_the_compiled_loop_is_freed_with_the_graph_without_the_garbage_collector():
    model = _model()
    model.decoder.attention.compiled_kernels = _kernel()
    src, lengths, tgt_in = _batch()
    gc.disable()
    try:
        loss = model(src, lengths, tgt_in)[0].sum()
        node = weakref.ref(_node(loss.grad_fn, "_LoopBackward"))
        loss.backward()
        del loss
        assert node() is None
    finally:
        gc.enable()
    assert model.decoder.attention.energy_layer.weight.grad.abs().sum() > 0
