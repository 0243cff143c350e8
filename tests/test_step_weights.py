"""StepWeight: a weight's gradient over all steps of a loop, computed once, equals autograd's step-by-step sum."""

import pytest
import torch

from seq2seq.models import onednn
from seq2seq.models.step_weights import StepWeight


def _recurrence(weight, bias, x0, inputs, deferred, skip_last=False):
    """h_t = tanh(b + [h_{t-1}; u_t] W), summed into a loss; optionally one step that never reaches the loss."""
    step = StepWeight(weight) if deferred else None
    h, loss = x0, 0.0
    for t, u in enumerate(inputs.unbind(0)):
        x = torch.cat([h, u], dim=-1)
        y = step.mm(x, bias) if deferred else torch.addmm(bias, x, weight)
        if skip_last and t == inputs.size(0) - 1:
            break  # its output is dropped: no gradient from it
        h = torch.tanh(y)
        loss = loss + (h * torch.arange(h.size(-1), dtype=h.dtype)).sum()
    return loss


@pytest.mark.parametrize("skip_last", [False, True])
def test_gradients_equal_autograd_step_by_step(skip_last):
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    x0 = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    inputs = torch.randn(5, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    grads = {}
    for deferred in (False, True):
        loss = _recurrence(weight.t().t(), bias, x0, inputs, deferred, skip_last)
        grads[deferred] = (loss, *torch.autograd.grad(loss, [weight, bias, x0, inputs]))
    for plain, fast in zip(grads[False], grads[True], strict=True):
        torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-12)
    assert grads[True][1].abs().sum() > 0


@pytest.mark.skipif(not onednn.active(True, torch.ones(1)), reason="oneDNN not available")
def test_float32_through_onednn_reads_a_row_by_row_copy_and_equals_autograd():
    """A Linear's weight seen transposed, as the decoder passes it: the forward products read a packed (I, O) copy
    of it (oneDNN's faster layout), the backward the weight itself; values and gradients as autograd's."""
    g = torch.Generator().manual_seed(3)
    linear_weight = torch.randn(4, 7, generator=g, requires_grad=True)  # (O, I), as nn.Linear keeps it
    bias = torch.randn(4, generator=g, requires_grad=True)
    x0 = torch.randn(3, 4, generator=g, requires_grad=True)
    inputs = torch.randn(5, 3, 3, generator=g, requires_grad=True)
    step = StepWeight(linear_weight.t())
    assert step.forward_weight.is_contiguous() and step.forward_weight.shape == (7, 4)
    assert not step.forward_weight.requires_grad
    torch.testing.assert_close(step.forward_weight, linear_weight.detach().t(), rtol=0, atol=0)
    without = StepWeight(linear_weight.t(), use_onednn=False)
    assert without.forward_weight is without.handle  # no copy where the products stay with torch
    grads = {}
    for deferred in (False, True):
        loss = _recurrence(linear_weight.t(), bias, x0, inputs, deferred)
        grads[deferred] = (loss, *torch.autograd.grad(loss, [linear_weight, bias, x0, inputs]))
    for plain, fast in zip(grads[False], grads[True], strict=True):
        torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


def test_other_uses_of_the_weight_and_a_retained_graph():
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    xs = torch.randn(4, 2, 6, generator=g, dtype=torch.float64)
    add = torch.zeros(2, 3, dtype=torch.float64)

    def loss_of(deferred):
        step = StepWeight(weight) if deferred else None
        handle = step.handle if deferred else weight
        total = (handle**2).sum()  # the weight read outside the steps as well
        for x in xs.unbind(0):
            total = total + (step.mm(x, add) if deferred else torch.addmm(add, x, weight)).pow(2).sum()
        return total

    expected = torch.autograd.grad(loss_of(False), weight)[0]
    loss = loss_of(True)
    first = torch.autograd.grad(loss, weight, retain_graph=True)[0]
    second = torch.autograd.grad(loss, weight)[0]  # the same graph, run again
    torch.testing.assert_close(first, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(second, expected, rtol=1e-12, atol=1e-12)


def test_the_steps_are_freed_with_the_graph_without_the_garbage_collector():
    """No reference cycle through the graph: what the steps kept goes as soon as the graph does."""
    import gc
    import weakref

    weight = torch.randn(5, 3, requires_grad=True)
    gc.disable()
    try:
        step = StepWeight(weight.t().t())
        out = sum(step.mm(torch.randn(2, 5), torch.zeros(3)).sum() for _ in range(4))
        kept = weakref.ref(step.steps)
        out.backward()
        del step, out
        assert kept() is None
    finally:
        gc.enable()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_a_second_derivative_raises_instead_of_being_wrong():
    g = torch.Generator().manual_seed(2)
    weight = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(4, dtype=torch.float64)
    x0 = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    inputs = torch.randn(2, 3, 3, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad(_recurrence(weight, bias, x0, inputs, True), x0, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()
