"""A weight read at every step of a loop, with its gradient computed once for all steps (:class:`StepWeight`).

Backpropagation through time gives a weight ``W`` used at every step ``t`` as ``y_t = b_t + x_t W`` the gradient
``∂L/∂W = Σ_t x_tᵀ ∂L/∂y_t``. Autograd computes it step by step: ``T`` thin products (their inner dimension is
the batch, ``B``), each accumulated into a full-size gradient. Here every step's backward only passes
``∂L/∂x_t = ∂L/∂y_t Wᵀ`` on and keeps ``∂L/∂y_t``; when the last of them has run, the weight's gradient is one
``(I, T·B) × (T·B, O)`` product over the stacked inputs and output gradients — the same sum, in one well-shaped
product and without ``T`` accumulations (the "batch the weight gradients" step of cuDNN-style RNN kernels).

Used by :func:`seq2seq.models.unroll.hoisted_unroll` for the per-step products of the decoder's step loop.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from seq2seq.models import onednn


class StepWeight:
    """One weight ``(I, O)`` for the steps of one forward pass: ``mm(x, add) = add + x @ weight``.

    Args:
        weight: the weight as the steps read it, ``(I, O)`` (e.g. ``linear.weight.t()``); its gradient flows back
            through whatever produced it, once.
        use_onednn: each step's products through oneDNN on CPU (:mod:`seq2seq.models.onednn`).
    """

    def __init__(self, weight: Tensor, use_onednn: bool | int = True) -> None:
        # held by the graph's nodes; it holds no tensor with a graph, so no reference cycle
        self.steps = _Steps(use_onednn)
        self.handle = _Gather.apply(weight, self.steps)  # its backward runs after every step's backward
        if onednn.active(use_onednn, weight, rows=1):  # a step's few rows (a row limit is for tall products)
            # the forward products read the weight stored row by row, (I, O), copied once per forward pass: oneDNN
            # runs x W 10–20 % faster from it than from a Linear's (O, I) seen transposed, which the backward's
            # ∂y Wᵀ reads (docs/performance.md, "Weight layouts")
            self.steps.forward_weight = weight.detach().contiguous()

    @property
    def forward_weight(self) -> Tensor:
        """The weight ``(I, O)`` the steps' forward products read: the same values as :attr:`handle`."""
        return self.handle if self.steps.forward_weight is None else self.steps.forward_weight

    def mm(self, x: Tensor, add: Tensor) -> Tensor:
        """``add + x @ weight`` for ``x`` ``(B, I)``; ``add`` ``(B, O)`` or a bias ``(O,)``."""
        return _StepProduct.apply(x, add, self.handle, self.steps)


class _Steps:
    """What the steps leave for the weight's gradient: their inputs (forward order) and output gradients."""

    def __init__(self, use_onednn: bool | int) -> None:
        self.use_onednn = use_onednn
        self.forward_weight: Tensor | None = None  # a copy without graph, where the forward reads one
        self.inputs: list[Tensor] = []
        self.grads: dict[int, Tensor] = {}

    def record(self, x: Tensor) -> int:
        """Keep a step's input ``(B, I)`` for the weight's gradient; returns the step's index."""
        self.inputs.append(x.detach())
        return len(self.inputs) - 1


class _StepProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, add: Tensor, weight: Tensor, steps: _Steps) -> Tensor:
        ctx.steps, ctx.index, ctx.bias = steps, steps.record(x), add.dim() == 1
        ctx.save_for_backward(weight)
        forward_weight = weight if steps.forward_weight is None else steps.forward_weight
        # every step: the batch's rows, so no padding to a bucket
        return onednn.addmm(add, x, forward_weight, steps.use_onednn, pad_rows=False)

    @staticmethod
    @once_differentiable  # the written-out backward is not itself differentiable: a double backward raises
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        (weight,) = ctx.saved_tensors
        ctx.steps.grads[ctx.index] = grad
        grad_x = (
            onednn.mm(grad, weight.t(), ctx.steps.use_onednn, pad_rows=False)
            if ctx.needs_input_grad[0]
            else None
        )
        grad_add = (grad.sum(0) if ctx.bias else grad) if ctx.needs_input_grad[1] else None
        return grad_x, grad_add, None, None  # the weight's share: in _Gather, with every other step's


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, weight: Tensor, steps: _Steps) -> Tensor:
        ctx.steps = steps
        return weight.view_as(weight)

    @staticmethod
    @once_differentiable  # the written-out backward is not itself differentiable: a double backward raises
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        steps = ctx.steps
        order = sorted(steps.grads)  # the steps whose output reached the loss
        if order:
            inputs = torch.cat([steps.inputs[i] for i in order])  # (N, I)
            grads = torch.cat([steps.grads[i] for i in order])  # (N, O)
            grad = grad + onednn.mm_tn(inputs, grads, steps.use_onednn)  # grad: other uses of the handle
        steps.grads = {}  # (the inputs stay while the graph does: a retained graph can be run again)
        return grad, None
