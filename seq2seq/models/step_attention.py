"""An additive attention read in a step loop, with one backward node per step and the memory's gradients gathered once.

In the hoisted step loop (``models/unroll.py``) every target step ``t`` reads the same keys ``2 U h̄`` ``(B, S, A)`` and
values ``h̄`` ``(B, S, D)`` (:class:`~seq2seq.models.attention.AdditiveScore` in its ``tanh_as_sigmoid`` form):

    g_t = σ(2 U h̄ + 2 W q_t)        e_t = 2 g_t v − Σv        α_t = softmax(e_t) over real positions
    c_t = Σ_j α_tj h̄_j                                          (Bahdanau, Cho & Bengio 2015, eqs. 5–6, App. A)

with ``q_t`` Bahdanau's previous state ``s_{t-1}`` or, for Luong's ``concat`` score (Luong et al. 2015, eq. 8), the
step's new state ``h_t``.

Written as autograd operators this is about a dozen backward nodes per step, and the values' gradient
``Σ_t α_tᵀ ∂L/∂c_t`` comes as ``T`` outer products (inner size 1) accumulated one by one. :class:`StepAttention`
reads it as one autograd function per step whose backward is written out (softmax, σ and ``v``); each step adds
``∂e_t σ'_t`` into one buffer, which the memory's backward multiplies by ``v`` once for the keys' gradient, and keeps
``(α_t, ∂L/∂c_t)``; after the last step the values' gradient is one batched product ``(B, S, T) × (B, T, D)``, as
:mod:`~seq2seq.models.step_weights` does for weights. In the step loop a ``(B, S, A)`` elementwise pass takes several
times its time in isolation (``docs/performance.md``), so the backward makes few of them: σ' in the recomputed gates'
place, the query's gradient as one ``(B, 1, S) × (B, S, A)`` product.

Its backward needs each step's gates ``g_t`` ``(B, S, A)``: ``T`` of them are most of what a training update keeps
for its backward (on the toy benchmark 79 MiB kept with them, 26 without: ``docs/performance.md``). With
``recompute`` (``speed.recompute_attention``) a step keeps only ``2 W q_t`` ``(B, A)`` and its backward computes
``g_t`` again, one add and one σ, as activation checkpointing does (Chen et al. 2016, "Training Deep Nets with
Sublinear Memory Cost"); the gradients are the same bit for bit. With ``kernel`` (``speed.compiled_kernels``) the
scores and their backward are one compiled pass over the keys each (:mod:`~seq2seq.models.attention_kernel`), which
keeps no gates and computes them again in the backward whatever ``recompute`` says.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from seq2seq.models import attention_kernel
from seq2seq.models.attention import masked_read


class StepAttention:
    """The attention memory of one forward pass, read by :meth:`read` once per step.

    Args:
        keys: ``2 U h̄`` ``(B, S, A)`` (``AdditiveScore.project_keys`` with ``tanh_as_sigmoid``).
        values: ``h̄`` ``(B, S, D)``.
        invalid: ``(B, S)`` bool, True at padding.
        energy: ``v`` as the energy layer's weight ``(1, A)``.
        recompute: each step's backward computes its gates again instead of keeping them (module docstring).
        kernel: the scores by the compiled kernel (``speed.compiled_kernels``, already built), where it applies.
    """

    def __init__(
        self,
        keys: Tensor,
        values: Tensor,
        invalid: Tensor,
        energy: Tensor,
        recompute: bool = False,
        kernel: bool = False,
    ) -> None:
        # held by the graph's nodes; it holds no tensor with a graph
        self.steps = _Reads(
            invalid, energy.detach()[0], recompute, attention_kernel.active(kernel, keys, energy)
        )
        self.keys, self.values = _GatherMemory.apply(keys, values, self.steps)
        self.energy = energy

    def read(self, projected: Tensor) -> tuple[Tensor, Tensor]:
        """Context ``(B, D)`` and weights ``(B, S)`` for a projected query ``W q`` ``(B, A)``."""
        return _Read.apply(projected, self.keys, self.values, self.energy, self.steps)


class _Reads:
    """What the steps leave for the memory's gradients: the keys' running sum, and each step's α and ∂L/∂c."""

    def __init__(self, invalid: Tensor, energy: Tensor, recompute: bool, kernel: bool) -> None:
        self.invalid = invalid
        self.energy = energy  # v (A,): the factor the keys' gradient is multiplied by once
        self.recompute = recompute
        self.kernel = kernel
        self.weights: list[Tensor] = []
        self.context_grads: dict[int, Tensor] = {}
        # Σ_t ∂e_t σ'_t (B, S, A): the keys' gradient but for the factor v
        self.keys_grad: Tensor | None = None


class _Read(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, projected: Tensor, keys: Tensor, values: Tensor, energy: Tensor, steps: _Reads):
        context, weights, kept, ctx.index = read_forward(projected, keys, values, energy, steps)
        ctx.steps = steps
        ctx.save_for_backward(*kept)
        return context, weights

    @staticmethod
    @once_differentiable  # the written-out backward is not itself differentiable: a double backward raises
    def backward(ctx: Any, grad_context: Tensor, grad_weights: Tensor):
        grad_projected, grad_energy = read_backward(
            ctx.steps, ctx.index, ctx.saved_tensors, grad_context, grad_weights
        )
        return grad_projected, None, None, grad_energy, None


def read_forward(
    projected: Tensor, keys: Tensor, values: Tensor, energy: Tensor, steps: _Reads
) -> tuple[Tensor, Tensor, tuple, int]:
    """One step's read, without autograd: context ``(B, D)``, weights ``(B, S)``, the tensors its backward
    (:func:`read_backward`) needs, to be saved by the calling autograd function, and the step's index in
    ``steps`` (its weights are appended there)."""
    # e = 2 g v without − Σv: softmax ignores a constant, and its gradient, Σ_j ∂e_j, is 0
    if steps.kernel:  # kept: the keys and W q, from which the kernel's backward computes the gates again
        kept = (keys, projected)
        scores = attention_kernel.scores(keys, projected, energy[0])
    else:
        gates = _gates(keys, projected)
        # the gates, or what computes them again
        kept = (keys, projected) if steps.recompute else (gates, None)
        scores = (gates @ energy[0]).mul_(2)
    context, weights = masked_read(scores, steps.invalid, values)  # (B, D), (B, S)
    steps.weights.append(weights.detach())  # without its graph: no reference cycle through a node
    return context, weights, (*kept, weights, values, energy), len(steps.weights) - 1


def read_backward(
    steps: _Reads, index: int, saved: tuple, grad_context: Tensor, grad_weights: Tensor
) -> tuple[Tensor, Tensor]:
    """The gradients of step ``index``'s projected query ``(B, A)`` and of ``v`` ``(1, A)``; the memory's shares
    go into ``steps`` (module docstring). ``saved``: what :func:`read_forward` returned to keep."""
    gates, projected, weights, values, energy = saved
    steps.context_grads[index] = grad_context  # the values' share: in _GatherMemory, all steps at once
    # ∂α through the context, plus any direct use of the weights (zeros when none), as (B, 1, D) × (B, D, S):
    # the same product as (B, S, D) × (B, D, 1), which CPU bmm runs about 10× slower (one output column)
    grad_weights = torch.baddbmm(
        grad_weights.unsqueeze(1), grad_context.unsqueeze(1), values.transpose(1, 2)
    ).squeeze(1)  # (B, S)
    # softmax: ∂e_j = α_j (∂α_j − Σ_k α_k ∂α_k); zero at padding, where α is 0. Then ∂(2 g v) / ∂g:
    grad_scores = weights * (grad_weights - (weights * grad_weights).sum(1, keepdim=True)) * 2  # (B, S)
    if steps.kernel:  # kept were the keys
        if steps.keys_grad is None:
            steps.keys_grad = torch.zeros_like(gates)
        grad_projected, grad_energy = attention_kernel.scores_backward(
            gates, projected, energy[0], grad_scores, steps.keys_grad
        )
        return grad_projected, grad_energy.unsqueeze(0)
    if steps.recompute:
        gates = _gates(gates, projected)  # kept were the keys
    grad_scores = grad_scores.unsqueeze(-1)
    # Σ_b (B, 1, S) × (B, S, A): the one-row product (1, B·S) × (B·S, A) ran several times slower in the step loop
    grad_energy = torch.bmm(grad_scores.transpose(1, 2), gates).sum(0)  # (1, A)
    # σ' = σ(1 − σ), and ∂L/∂g = ∂e v: ∂pre = ∂e v σ'. pre = keys + 2 W q, so W q's gradient is 2 v Σ_s ∂e σ', one
    # (B, 1, S) × (B, S, A) product, and the keys' is ∂e σ' times v, which the memory's backward applies once to
    # the sum over steps: no (B, S, A) tensor of ∂pre per step
    if steps.recompute:  # the gates are this backward's own: σ' in their place
        slope = gates.addcmul_(gates, gates, value=-1)
    else:  # kept for the graph (a retained one runs again)
        slope = torch.addcmul(gates, gates, gates, value=-1)
    grad_projected = torch.bmm(grad_scores.transpose(1, 2), slope).squeeze(1).mul_(energy[0]).mul_(2)
    if steps.keys_grad is None:
        steps.keys_grad = slope.mul_(grad_scores)  # slope is this backward's own tensor either way
    else:
        steps.keys_grad.addcmul_(slope, grad_scores)
    return grad_projected, grad_energy


def _gates(keys: Tensor, projected: Tensor) -> Tensor:
    """``σ(2 U h̄ + 2 W q)`` ``(B, S, A)`` from the doubled keys and a projected query ``W q`` ``(B, A)``."""
    return torch.add(keys, projected.unsqueeze(1), alpha=2).sigmoid_()


class _GatherMemory(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, keys: Tensor, values: Tensor, steps: _Reads):
        ctx.steps = steps
        return keys.view_as(keys), values.view_as(values)

    @staticmethod
    @once_differentiable  # the written-out backward is not itself differentiable: a double backward raises
    def backward(ctx: Any, grad_keys: Tensor, grad_values: Tensor):
        steps = ctx.steps
        if steps.keys_grad is not None:  # Σ_t ∂e_t σ'_t, times v: the keys' gradient from every step
            # grad_keys, grad_values: other uses (zeros when none)
            grad_keys = torch.addcmul(grad_keys, steps.keys_grad, steps.energy)
        order = sorted(steps.context_grads)
        if order:
            weights = torch.stack([steps.weights[i] for i in order], dim=2)  # (B, S, T)
            grads = torch.stack([steps.context_grads[i] for i in order], dim=1)  # (B, T, D)
            grad_values = torch.baddbmm(grad_values, weights, grads)
        steps.keys_grad, steps.context_grads = None, {}  # (α stays while the graph does: it can run again)
        return grad_keys, grad_values, None
