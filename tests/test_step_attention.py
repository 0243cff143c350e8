"""StepAttention: Bahdanau's read with a written-out backward equals autograd through the attention's own operators."""

import gc
import os
import shutil
import weakref

import pytest
import torch

from seq2seq.models import kernels
from seq2seq.models.attention import BahdanauAttention, masked_read
from seq2seq.models.step_attention import StepAttention

B, S, H, A, T = 3, 5, 4, 6, 4
COMPILER = shutil.which(os.environ.get("CXX") or "c++") is not None


def _kernel():
    """The compiled additive score (built here: a failed build fails the test), or a skip without a compiler."""
    if not COMPILER:
        pytest.skip("no C++ compiler: speed.compiled_kernels=auto falls back")
    kernels.load()
    return True


def _setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    attention = BahdanauAttention(H, H, A).double()
    values = torch.randn(B, S, H, generator=g, dtype=torch.float64, requires_grad=True)
    query = torch.randn(B, H, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    return attention, values, query, mask


def _loop(
    attention, values, query, mask, fast, drop_step=None, use_weights=False, recompute=False, kernel=False
):
    """q_t = tanh(q_{t-1} + c_{t-1}): each query depends on the previous read; a loss over contexts (and weights)."""
    keys = attention.project_keys(values)
    weight = attention.energy_layer.weight
    reads = StepAttention(keys, values, ~mask, weight, recompute, kernel) if fast else None
    assert not fast or reads.steps.kernel == kernel
    q, loss = query, 0.0
    for t in range(T):
        projected = attention.query_layer(q)
        if fast:
            context, weights = reads.read(projected)
        else:
            context, weights = masked_read(attention.score_projected(projected, keys), ~mask, values)
        if t == drop_step:
            continue  # this step's read never reaches the loss
        loss = loss + (context * torch.arange(1, H + 1, dtype=context.dtype)).sum()
        if use_weights:
            loss = loss + (weights**2).sum()
        q = torch.tanh(q + context)
    return loss, weights


@pytest.mark.parametrize("drop_step, use_weights", [(None, False), (2, False), (None, True)])
def test_values_and_gradients_equal_autograd(drop_step, use_weights):
    attention, values, query, mask = _setup()
    inputs = [values, query, *attention.parameters()]
    results = {}
    for fast, recompute, kernel in ((False, False, False), (True, False, False), (True, True, False)):
        loss, weights = _loop(attention, values, query, mask, fast, drop_step, use_weights, recompute, kernel)
        results[fast, recompute] = (loss, weights, *torch.autograd.grad(loss, inputs))
    for plain, fast, recomputed in zip(*results.values(), strict=True):
        torch.testing.assert_close(fast, plain, rtol=1e-10, atol=1e-12)
        assert torch.equal(recomputed, fast)  # the gates computed again are the kept ones, bit for bit
    assert (results[True, False][1][~mask] == 0).all()  # padding gets no weight
    assert all(g.abs().sum() > 0 for g in results[True, False][2:])  # every input gets a gradient


@pytest.mark.parametrize("drop_step, use_weights", [(None, False), (2, False), (None, True)])
def test_the_compiled_kernel_equals_autograd(drop_step, use_weights):
    """speed.compiled_kernels: the scores and their backward by the compiled pass, in float64."""
    kernel = _kernel()
    attention, values, query, mask = _setup(4)
    inputs = [values, query, *attention.parameters()]
    plain = _loop(attention, values, query, mask, False, drop_step, use_weights)
    compiled = _loop(attention, values, query, mask, True, drop_step, use_weights, kernel=kernel)
    for a, b in zip(
        (*compiled, *torch.autograd.grad(compiled[0], inputs)),
        (*plain, *torch.autograd.grad(plain[0], inputs)),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("recompute, kernel", [(False, False), (True, False), (False, True)])
def test_recompute_keeps_no_gates_between_forward_and_backward(recompute, kernel):
    """Kept: one (B, S, A) tensor per step; recomputed (and with the kernel, whatever recompute says): only the
    keys, the same for every step."""
    kernel = kernel and _kernel()
    attention, values, query, mask = _setup(3)
    kept = []

    def pack(tensor):
        kept.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss, _ = _loop(attention, values, query, mask, fast=True, recompute=recompute, kernel=kernel)
    storages = {t.untyped_storage().data_ptr() for t in kept if t.shape == (B, S, A)}
    assert len(storages) == (1 if recompute or kernel else T)  # the keys for all steps; or T steps' gates
    loss.backward()
    assert values.grad.abs().sum() > 0


@pytest.mark.parametrize("kernel", [False, True])
def test_a_retained_graph_runs_twice_and_the_memory_has_other_uses(kernel):
    kernel = kernel and _kernel()
    attention, values, query, mask = _setup(1)

    def extra():
        return (values**2).sum()  # the values read outside the steps as well

    expected = torch.autograd.grad(
        _loop(attention, values, query, mask, fast=False)[0] + extra(), [values, query]
    )
    loss = _loop(attention, values, query, mask, fast=True, kernel=kernel)[0] + extra()
    first = torch.autograd.grad(loss, [values, query], retain_graph=True)
    second = torch.autograd.grad(loss, [values, query])  # the same graph, run again
    for a, b, e in zip(first, second, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(b, e, rtol=1e-10, atol=1e-12)


def test_the_reads_are_freed_with_the_graph_without_the_garbage_collector():
    attention, values, query, mask = _setup(2)
    gc.disable()
    try:
        keys = attention.project_keys(values)
        reads = StepAttention(keys, values, ~mask, attention.energy_layer.weight)
        loss = sum(reads.read(attention.query_layer(query * t))[0].sum() for t in range(3))
        kept = weakref.ref(reads.steps)
        loss.backward()
        del reads, loss, keys
        assert kept() is None
    finally:
        gc.enable()
    assert values.grad is not None and values.grad.abs().sum() > 0


def test_a_second_derivative_raises_instead_of_being_wrong():
    attention, values, query, mask = _setup(2)
    loss, _ = _loop(attention, values, query, mask, fast=True)
    (grad,) = torch.autograd.grad(loss, query, create_graph=True)  # the loop's tanh makes ∂L/∂c depend on q
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()
