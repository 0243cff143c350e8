"""The compiled additive score (models/attention_kernel.py): values and gradients of the operators it replaces."""

import os
import shutil

import pytest
import torch

from seq2seq.models import attention_kernel, kernels

pytestmark = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX") or "c++") is None,
    reason="no C++ compiler: speed.compiled_kernels=auto falls back",
)


def _inputs(b, s, a, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(b, s, a, generator=g, dtype=dtype) * 2
    query = torch.randn(b, a + 3, generator=g, dtype=dtype)[
        :, 1 : a + 1
    ]  # strided rows: a slice, as in the step
    v = torch.randn(a, generator=g, dtype=dtype)
    grad = torch.randn(b, s, generator=g, dtype=dtype)
    grad[0, -2:] = 0  # padding: α = 0, so no gradient
    return keys, query, v, grad


def _reference(keys, query, v, grad):
    """The operators of models/step_attention.py: σ(K + 2 W q), 2 g v; ∂v, ∂(W q) and the keys' by autograd."""
    keys, query, v = (t.clone().requires_grad_() for t in (keys, query, v))
    gates = torch.sigmoid(keys + 2 * query.unsqueeze(1))
    scores = 2 * gates @ v
    # grad is ∂L/∂(g v), twice ∂L/∂e
    grad_query, grad_v, grad_keys = torch.autograd.grad(scores, (query, v, keys), grad / 2)
    return scores.detach(), grad_query, grad_v, grad_keys


# (rtol, atol) per dtype: float64 exact to rounding; float32's σ through PyTorch's faster exp (20 ulp, the one its
# softmax uses), within float32 rounding
TOLERANCES = {torch.float64: (1e-12, 1e-12), torch.float32: (1e-5, 1e-4)}


@pytest.mark.parametrize(
    "dtype, a",  # under one vector, a remainder after whole vectors, whole vectors only; the benchmark's size
    [(torch.float64, 6), (torch.float64, 37), (torch.float64, 64), (torch.float32, 304)],
)
def test_scores_and_gradients_equal_the_operators(dtype, a):
    kernels.load()
    rtol, atol = TOLERANCES[dtype]
    keys, query, v, grad = _inputs(3, 5, a, dtype)
    scores, grad_query, grad_v, grad_keys = _reference(keys, query, v, grad)
    torch.testing.assert_close(attention_kernel.scores(keys, query, v), scores, rtol=rtol, atol=atol)
    keys_grad = torch.zeros_like(keys)
    got_query, got_v = attention_kernel.scores_backward(keys, query, v, grad, keys_grad)
    torch.testing.assert_close(got_query, grad_query, rtol=rtol, atol=atol)
    torch.testing.assert_close(got_v, grad_v, rtol=rtol, atol=atol)
    # the kept running sum is the keys' gradient but for the factor v
    torch.testing.assert_close(keys_grad * v, grad_keys, rtol=rtol, atol=atol)
    assert (keys_grad[0, -2:] == 0).all() and (keys_grad[0, :-2] != 0).all()


def test_the_keys_running_sum_adds_up_over_steps():
    kernels.load()
    keys, query, v, grad = _inputs(2, 4, 19, torch.float64, seed=1)
    once = torch.zeros_like(keys)
    attention_kernel.scores_backward(keys, query, v, grad, once)
    twice = once.clone()
    attention_kernel.scores_backward(keys, query, v, grad, twice)
    torch.testing.assert_close(twice, 2 * once, rtol=1e-14, atol=0)


def test_active_only_for_what_it_computes():
    keys = torch.zeros(2, 3, 4)
    assert attention_kernel.active(True, keys, torch.zeros(1, 4))
    assert not attention_kernel.active(False, keys)
    assert not attention_kernel.active(True, keys.transpose(1, 2))  # strided keys
    assert not attention_kernel.active(True, keys.half())
    assert not attention_kernel.active(True, keys, torch.zeros(4, dtype=torch.float64))  # mixed dtypes
