"""The GRU kernel (``models/gru_kernel.py``) computes what ``nn.GRU`` computes on a packed batch."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seq2seq.models import kernels
from seq2seq.models.encoders import RecurrentEncoder
from seq2seq.models.gru_kernel import gru_layers


def packed_gru(rnn: nn.GRU, inputs: torch.Tensor, lengths: torch.Tensor):
    packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
    outputs, final = rnn(packed)
    outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=inputs.size(1))
    return outputs, final


def loop(compiled: bool) -> bool:
    """The step loops in Python operators (False) or as the compiled operators (True: built first)."""
    if compiled:
        kernels.load()
    return compiled


def weighted_sum(outputs: torch.Tensor, final: torch.Tensor, seed: int = 7) -> torch.Tensor:
    """A loss that weights every output and final state differently (so no gradient cancels by symmetry)."""
    generator = torch.Generator().manual_seed(seed)
    w_out = torch.randn(outputs.shape, generator=generator, dtype=outputs.dtype)
    w_final = torch.randn(final.shape, generator=generator, dtype=final.dtype)
    return (outputs * w_out).sum() + (final * w_final).sum()


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("lengths", [[7, 2, 5, 1], [7, 7, 7, 7]])
@pytest.mark.parametrize("compiled", [False, True])
def test_values_and_gradients_equal_nn_gru(
    bidirectional: bool, layers: int, lengths: list[int], compiled
) -> None:
    torch.manual_seed(0)
    rnn = nn.GRU(5, 4, num_layers=layers, batch_first=True, bidirectional=bidirectional).double()
    inputs = torch.randn(4, 7, 5, dtype=torch.double, requires_grad=True)
    lengths_t = torch.tensor(lengths)
    expected = packed_gru(rnn, inputs, lengths_t)
    got = gru_layers(rnn, inputs, lengths_t, compiled=loop(compiled))
    for want, have in zip(expected, got, strict=True):
        assert have.shape == want.shape
        torch.testing.assert_close(have, want, rtol=0, atol=1e-12)
    params = [inputs, *rnn.parameters()]
    want_grads = torch.autograd.grad(weighted_sum(*expected), params)
    have_grads = torch.autograd.grad(weighted_sum(*got), params)
    for want, have in zip(want_grads, have_grads, strict=True):
        torch.testing.assert_close(have, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("compiled", [False, True])
def test_outputs_are_zero_at_padding_and_final_state_is_each_sentences_last(compiled) -> None:
    torch.manual_seed(1)
    rnn = nn.GRU(3, 2, batch_first=True, bidirectional=True).double()
    inputs = torch.randn(2, 5, 3, dtype=torch.double)
    outputs, final = gru_layers(rnn, inputs, torch.tensor([5, 3]), compiled=loop(compiled))
    assert torch.all(outputs[1, 3:] == 0) and torch.all(outputs[1, :3] != 0)
    # forward direction: the state after the last real token; reverse direction: the state at position 0
    torch.testing.assert_close(final[0, 1], outputs[1, 2, :2], rtol=0, atol=0)
    torch.testing.assert_close(final[1, 1], outputs[1, 0, 2:], rtol=0, atol=0)


@pytest.mark.parametrize("compiled", [False, True])
def test_a_retained_graph_runs_twice_and_the_input_gradient_flows(compiled) -> None:
    torch.manual_seed(2)
    rnn = nn.GRU(3, 4, batch_first=True, bidirectional=True).double()
    inputs = torch.randn(3, 4, 3, dtype=torch.double, requires_grad=True)
    loss = weighted_sum(*gru_layers(rnn, inputs, torch.tensor([4, 1, 3]), compiled=loop(compiled)))
    first = torch.autograd.grad(loss, [inputs, rnn.weight_hh_l0], retain_graph=True)
    second = torch.autograd.grad(loss, [inputs, rnn.weight_hh_l0])
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert first[0].abs().sum() > 0


def test_a_second_derivative_raises_instead_of_being_wrong() -> None:
    """The written-out backward is not differentiable again: a double backward stops with an error."""
    rnn = nn.GRU(3, 4, batch_first=True).double()
    inputs = torch.randn(2, 3, 3, dtype=torch.double, requires_grad=True)
    outputs, final = gru_layers(rnn, inputs, torch.tensor([3, 2]))
    (grad,) = torch.autograd.grad((outputs**2).sum() + (final**2).sum(), inputs, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()


def kernel_node(node):
    """The first ``_GRULayer`` backward node found upstream of ``node``."""
    pending = [node]
    while pending:
        node = pending.pop()
        if type(node).__name__ == "_GRULayerBackward":
            return node
        pending.extend(child for child, _ in node.next_functions if child is not None)
    raise AssertionError("no _GRULayer node in the graph")


@pytest.mark.parametrize("compiled", [False, True])
def test_the_graph_is_freed_without_the_garbage_collector(compiled) -> None:
    rnn = nn.GRU(3, 4, batch_first=True, bidirectional=True)
    compiled = loop(compiled)
    gc.disable()
    try:
        outputs, final = gru_layers(rnn, torch.randn(2, 4, 3), torch.tensor([4, 2]), compiled=compiled)
        node = weakref.ref(kernel_node(final.grad_fn))
        (outputs.sum() + final.sum()).backward()
        del outputs, final
        assert node() is None  # a reference cycle would keep the autograd node (and its saved steps) alive
    finally:
        gc.enable()


def test_without_gradients_the_kernel_gives_the_same_outputs() -> None:
    rnn = nn.GRU(3, 4, batch_first=True, bidirectional=True).double()
    inputs = torch.randn(3, 5, 3, dtype=torch.double)
    lengths = torch.tensor([2, 5, 4])
    with torch.inference_mode():
        got = gru_layers(rnn, inputs, lengths)
        want = packed_gru(rnn, inputs, lengths)
    for have, expected in zip(got, want, strict=True):
        torch.testing.assert_close(have, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_the_encoder_gives_the_same_with_the_switch_on_and_off(rnn_type: str) -> None:
    torch.manual_seed(3)
    encoder = RecurrentEncoder(rnn_type, 6, 8, num_layers=2, bidirectional=True).double()
    embedded = torch.randn(3, 5, 6, dtype=torch.double)
    lengths = torch.tensor([5, 1, 3])
    results = []
    for switch in (True, False):
        encoder.gru_kernel = switch
        results.append(encoder(embedded, lengths))
    (on_outputs, on_final), (off_outputs, off_final) = results
    torch.testing.assert_close(on_outputs, off_outputs, rtol=0, atol=1e-12)
    for on, off in zip(
        on_final if isinstance(on_final, tuple) else [on_final],
        off_final if isinstance(off_final, tuple) else [off_final],
        strict=True,
    ):
        torch.testing.assert_close(on, off, rtol=0, atol=1e-12)


def test_float32_compiled_loops_equal_the_python_loops() -> None:
    """The benchmark's dtype, at a hidden size that is no whole number of vectors (the scalar tail runs too): the
    compiled step loops within float32 rounding of the Python ones, values and every gradient."""
    torch.manual_seed(3)
    rnn = nn.GRU(6, 19, batch_first=True, bidirectional=True)
    inputs = torch.randn(5, 9, 6, requires_grad=True)
    lengths = torch.tensor([9, 3, 7, 9, 1])
    results = []
    for compiled in (False, loop(True)):
        got = gru_layers(rnn, inputs, lengths, compiled=compiled)
        grads = torch.autograd.grad(weighted_sum(*got), [inputs, *rnn.parameters()])
        results.append((*got, *grads))
    for python, compiled in zip(*results, strict=True):
        torch.testing.assert_close(compiled, python, rtol=1e-5, atol=1e-5)
    assert results[1][2].abs().sum() > 0  # the input's gradient


def test_the_switch_reaches_the_encoder() -> None:
    """speed.compiled_kernels sets the encoder's loops as it sets the attention's score."""
    from seq2seq.models.seq2seq import EncoderDecoder
    from seq2seq.training.module import set_model_speed

    model = EncoderDecoder(11, 13, embedding_size=8, hidden_size=6, attention="bahdanau")
    set_model_speed(model, {"compiled_kernels": False})
    assert model.encoder.compiled_kernels is False
    set_model_speed(model, {"compiled_kernels": True})
    assert model.encoder.compiled_kernels is True


def test_without_gradients_the_python_loop_runs_whatever_the_switch() -> None:
    """Validation and decoding (no autograd) give the same bits with the compiled operators on or off, so a run's
    scores equal seq2seq-evaluate's, which builds nothing (float32: the compiled σ would differ in the last bits)."""
    torch.manual_seed(4)
    rnn = nn.GRU(6, 19, batch_first=True, bidirectional=True)
    inputs, lengths = torch.randn(4, 8, 6), torch.tensor([8, 2, 5, 8])
    with torch.no_grad():
        on, off = gru_layers(rnn, inputs, lengths, compiled=loop(True)), gru_layers(rnn, inputs, lengths)
    for a, b in zip(on, off, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
