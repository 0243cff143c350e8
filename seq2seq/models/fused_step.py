"""A whole decoder step as one autograd function with its backward written out (:class:`FusedStep`).

For the benchmark's decoder — one GRU layer whose step reads Bahdanau's additive attention with the previous state
(Bahdanau et al. 2015, App. A), with or without input feeding (Luong et al. 2015, §3.3) — step ``t`` of the hoisted
loop (``models/unroll.py``) is::

    [g_h; q] = s_{t-1} [W_hh; W]ᵀ + [b_hh; 0]            c_t, α_t = read(q)   (models/step_attention.py)
    g_x = [h̃_{t-1}; c_t] W_xᵀ + (W_ie y_{t-1} + b_ih)    (h̃_{t-1} only with input feeding)
    r, z = σ(g_x^{r,z} + g_h^{r,z})       n = tanh(g_x^n + r ⊙ g_h^n)       s_t = n + z ⊙ (s_{t-1} − n)
    h̃_t = tanh([s_t; c_t] W_cᵀ + b_c)

(the GRU equations of ``nn.GRUCell``). Written as separate operators that is about twenty autograd nodes per step,
four of them Python autograd functions (the three step weights' products and the attention read); each costs
tens of microseconds of dispatch on CPU, forward and backward, next to products of a few hundred. Here the step is one
node: the forward computes the same operators without recording them, and the backward runs the chain rule
in reverse by hand: ``tanh``'s derivative, ``∂[s_t; c_t] = ∂a W_c``, the GRU's gate derivatives into one
``(B, 3H)`` buffer for ``∂g_x`` and one ``(B, 3H + A)`` buffer for ``∂[g_h; q]`` (no concatenation of parts),
the attention read's backward (:func:`~seq2seq.models.step_attention.read_backward`), and ``∂s_{t-1}``,
``∂h̃_{t-1}``. The weights' and memory's gradients are gathered over all steps as
:class:`~seq2seq.models.step_weights.StepWeight` and :class:`~seq2seq.models.step_attention.StepAttention` do.
With ``speed.compiled_kernels`` the whole loop is one autograd function instead (:func:`loop`): its forward runs
every step in one C++ call and its backward all of them in reverse in another (``csrc/fused_step.cpp``: the same
products and attention read, each step's GRU gates one vectorised pass forward and one backward), each step's
records written into stacked tensors there; no autograd node, Python or record keeping per step, and each weight's
and the memory's gradient one product over all steps, as here.
Tested equal to the step loop (``tests/test_fused_step.py``, ``tests/test_unroll.py``); ``speed.fused_step``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from seq2seq.models import gru_kernel, onednn
from seq2seq.models.step_attention import StepAttention, read_backward, read_forward
from seq2seq.models.step_weights import StepWeight


class FusedStep:
    """The step weights and attention memory of one forward pass, stepped by :meth:`step`.

    Args:
        w_h: ``[W_hh; W]ᵀ`` ``(H, 3H + A)``; w_x: the ``[h̃; c]`` (or ``c``) columns of ``W_ih``, transposed
            ``(H + D or D, 3H)``; w_out: ``W_cᵀ`` ``(H + D, H)`` — each a :class:`StepWeight`.
        reads: the attention memory (keys, values, ``v``).
        b_h: ``[b_hh; 0]`` ``(3H + A,)``; b_out: ``b_c`` ``(H,)``.
    """

    def __init__(
        self,
        w_h: StepWeight,
        w_x: StepWeight,
        w_out: StepWeight,
        reads: StepAttention,
        b_h: Tensor,
        b_out: Tensor,
        use_onednn: bool | int = True,
    ) -> None:
        self.w_h, self.w_x, self.w_out, self.reads = w_h, w_x, w_out, reads
        self.b_h, self.b_out, self.use_onednn = b_h, b_out, use_onednn

    def step(self, pre: Tensor, hidden: Tensor, attentional: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """``s_t`` ``(B, H)``, ``h̃_t`` ``(B, H)`` and ``α_t`` ``(B, S)`` from ``W_ie y_{t-1} + b_ih`` ``(B, 3H)``,
        ``s_{t-1}`` and, with input feeding, ``h̃_{t-1}`` (None without)."""
        reads = self.reads
        return _Step.apply(
            pre,
            hidden,
            attentional,
            self.b_h,
            self.b_out,
            self.w_h.handle,
            self.w_x.handle,
            self.w_out.handle,
            reads.keys,
            reads.values,
            reads.energy,
            self,
        )


class _Step(torch.autograd.Function):
    """The step, in the Python of :func:`_forward` and :func:`_backward`; its records kept for the weights' and the
    memory's gradients. (With the compiled operators the whole loop is :func:`loop` instead.)"""

    @staticmethod
    def forward(
        ctx: Any,
        pre: Tensor,
        hidden: Tensor,
        attentional: Tensor | None,
        b_h: Tensor,
        b_out: Tensor,
        w_h: Tensor,
        w_x: Tensor,
        w_out: Tensor,
        keys: Tensor,
        values: Tensor,
        energy: Tensor,
        plan: FusedStep,
    ) -> tuple[Tensor, Tensor, Tensor]:
        reads = plan.reads.steps
        indices = [plan.w_h.steps.record(hidden)]  # each step weight's and the read's index of this step
        use_onednn = plan.use_onednn  # the setting (True, False or a row limit): each product decides
        forward_weights = (plan.w_h.forward_weight, plan.w_x.forward_weight, plan.w_out.forward_weight)
        new_hidden, out, weights, gates_h, rz, n, rest, features, kept, at_read = _forward(
            pre, hidden, attentional, b_h, b_out, *forward_weights, keys, values, energy, reads, use_onednn
        )
        indices.append(at_read)
        indices += [plan.w_x.steps.record(rest), plan.w_out.steps.record(features)]
        # the steps' records, not the plan: it holds the weights' handles and memory, with their graphs
        ctx.records = (plan.w_h.steps, reads, plan.w_x.steps, plan.w_out.steps)
        ctx.indices, ctx.feeding, ctx.use_onednn = indices, attentional is not None, use_onednn
        ctx.save_for_backward(hidden, rz, n, gates_h, out, w_h, w_x, w_out, *kept)
        return new_hidden, out, weights

    @staticmethod
    @once_differentiable  # the written-out backward is not itself differentiable: a double backward raises
    def backward(ctx: Any, grad_hidden: Tensor, grad_out: Tensor, grad_weights: Tensor):
        hidden, rz, n, gates_h, out, w_h, w_x, w_out, *kept = ctx.saved_tensors
        at_h, at_read, at_x, at_out = ctx.indices
        steps_h, reads, steps_x, steps_out = ctx.records
        grad_x, grad_previous, grad_attentional, grad_h, grad_a, grad_energy = _backward(
            grad_hidden, grad_out, grad_weights, hidden, rz, n, gates_h, out, w_h, w_x, w_out, kept,
            reads, at_read, ctx.use_onednn,
        )  # fmt: skip
        steps_out.grads[at_out], steps_x.grads[at_x], steps_h.grads[at_h] = grad_a, grad_x, grad_h
        return (
            grad_x,  # ∂(W_ie y_{t-1} + b_ih): the input gates' own
            grad_previous,
            grad_attentional if ctx.feeding else None,
            grad_h.sum(0),
            grad_a.sum(0),
            None,  # the weights' gradients: one product each over all steps (StepWeight)
            None,
            None,
            None,  # the memory's: all steps at once (StepAttention)
            None,
            grad_energy,
            None,
        )


def _forward(pre, hidden, attentional, b_h, b_out, w_h, w_x, w_out, keys, values, energy, reads, use_onednn):
    """The step's forward in Python operators: ``s_t``, ``h̃_t``, ``α_t``, ``[g_h]`` (σ of r, z in place), ``rz``,
    ``n``, the inputs of ``W_x`` and ``W_c``, what the read keeps and its index."""
    size = hidden.size(1)
    gates = 3 * size
    projected = onednn.addmm(b_h, hidden, w_h, use_onednn, False)  # (B, 3H + A)
    gates_h, query = projected[:, :gates], projected[:, gates:]
    context, weights, kept, at_read = read_forward(query, keys, values, energy, reads)
    rest = context if attentional is None else torch.cat([attentional, context], dim=1)
    gates_x = onednn.addmm(pre, rest, w_x, use_onednn, False)  # (B, 3H)
    # the GRU's gates, as in the encoder's kernel: σ of the r, z arguments (in gates_h's place) and n
    rz, n = gru_kernel.gates(gates_x, gates_h)
    new_hidden = torch.lerp(n, hidden, rz[:, size:])  # n + z (s − n)
    features = torch.cat([new_hidden, context], dim=1)
    out = onednn.addmm(b_out, features, w_out, use_onednn, False).tanh_()  # h̃_t (B, H)
    return new_hidden, out, weights, gates_h, rz, n, rest, features, kept, at_read


def _backward(grad_hidden, grad_out, grad_weights, hidden, rz, n, gates_h, out, w_h, w_x, w_out, kept, reads, at_read,
              use_onednn):  # fmt: skip
    """The step's backward in Python operators: ``∂(W_ie y + b_ih)``, ``∂s_{t-1}``, ``∂h̃_{t-1}``, ``∂[g_h; q]``,
    ``∂a`` and ``∂v``; the read's shares of the memory's gradients go into ``reads``."""
    size = hidden.size(1)
    # h̃ = tanh(a): ∂a = ∂h̃ (1 − h̃²)
    grad_a = torch.ops.aten.tanh_backward(grad_out, out)  # (B, H)
    grad_features = onednn.mm(grad_a, w_out.t(), use_onednn, False)  # (B, H + D): ∂[s_t; c_t]
    grad_new = grad_features[:, :size].add_(grad_hidden)  # ∂s_t, from h̃_t and from step t + 1
    grad_context = grad_features[:, size:]
    # the GRU, s_t = n + z (s − n): its gates' derivatives into ∂g_x and the first 3H columns of ∂[g_h; q]
    grad_x = rz.new_empty(rz.size(0), 3 * size)
    grad_h = grad_x.new_empty(grad_x.size(0), w_h.size(1))  # (B, 3H + A)
    gru_kernel.gate_gradients(grad_new, hidden, rz, n, gates_h, grad_x, grad_h[:, : 3 * size])
    grad_rest = onednn.mm(grad_x, w_x.t(), use_onednn, False)  # (B, H + D) or (B, D)
    grad_attentional = grad_rest[:, :size]  # (only with input feeding)
    grad_context = grad_context + grad_rest[:, -grad_context.size(1) :]
    grad_query, grad_energy = read_backward(reads, at_read, tuple(kept), grad_context, grad_weights)
    grad_h[:, 3 * size :].copy_(grad_query)
    # ∂s_{t-1}: its direct share ∂s_t ⊙ z, and through W_h and W
    grad_previous = onednn.addmm(grad_new * rz[:, size:], grad_h, w_h.t(), use_onednn, False)
    return grad_x, grad_previous, grad_attentional, grad_h, grad_a, grad_energy


def loop(
    pre: Tensor,
    hidden: Tensor,
    attentional: Tensor | None,
    b_h: Tensor,
    b_out: Tensor,
    w_h: Tensor,
    w_x: Tensor,
    w_out: Tensor,
    keys: Tensor,
    values: Tensor,
    energy: Tensor,
    invalid: Tensor,
    use_onednn: bool | int,
) -> tuple[Tensor, Tensor]:
    """Every step of the teacher-forced loop as one autograd function of compiled operators (module docstring):
    ``h̃`` ``(T, B, H)`` and ``α`` ``(T, B, S)`` from ``pre`` ``(T, B, 3H)``, ``s_0``, ``h̃_0`` (None without input
    feeding), the weights as :class:`FusedStep` takes them (tensors, not step weights), the keys ``2 U h̄``, the
    values ``h̄``, ``v`` ``(1, A)`` and the padding ``(B, S)``. Needs the built operators and the attention kernel's
    conditions (:func:`~seq2seq.models.attention_kernel.active`)."""
    return _Loop.apply(
        pre, hidden, attentional, b_h, b_out, w_h, w_x, w_out, keys, values, energy, invalid, use_onednn
    )


class _Loop(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, pre, hidden, attentional, b_h, b_out, w_h, w_x, w_out, keys, values, energy, invalid,
                use_onednn):  # fmt: skip
        onednn_on = onednn.active(use_onednn, hidden, pre, w_h, w_x, w_out)  # a row limit: the steps' B rows
        # the forward's products read each weight stored row by row: oneDNN's faster layout (step_weights.py)
        forward_weights = [w.contiguous() if onednn_on else w for w in (w_h, w_x, w_out)]
        outs, weights, hiddens, projected, n, rest, features = torch.ops.seq2seq_kernels.fused_loop(
            pre,
            hidden,
            attentional,
            b_h,
            b_out,
            *forward_weights,
            keys,
            values,
            energy[0],
            invalid,
            onednn_on,
        )
        ctx.save_for_backward(hiddens, projected, n, outs, weights, rest, features, w_h, w_x, w_out, keys, values,
                              energy)  # fmt: skip
        ctx.feeding, ctx.onednn, ctx.use_onednn = attentional is not None, onednn_on, use_onednn
        return outs, weights

    @staticmethod
    @once_differentiable  # the written-out backward is not itself differentiable: a double backward raises
    def backward(ctx: Any, grad_outs: Tensor, grad_weights: Tensor):
        hiddens, projected, n, outs, weights, rest, features, w_h, w_x, w_out, keys, values, energy = (
            ctx.saved_tensors
        )
        keys_grad = torch.zeros_like(keys)  # Σ_t ∂e_t σ'_t: the keys' gradient but for the factor v
        grad_pre, grad_hidden, grad_attentional, grad_h, grad_a, grad_energy, grad_contexts = (
            torch.ops.seq2seq_kernels.fused_loop_backward(
                grad_outs.contiguous(), grad_weights.contiguous(), hiddens, projected, n, outs, weights, w_h, w_x,
                w_out, keys, values, energy[0], keys_grad, ctx.feeding, ctx.onednn,
            )
        )  # fmt: skip
        on = ctx.use_onednn  # the weights' gradients: over all steps' rows, which a row limit may exclude

        def rows(x: Tensor) -> Tensor:
            return x.reshape(-1, x.size(-1))

        # each weight's gradient: one product over all steps' rows (as StepWeight gathers them)
        grad_w_h = onednn.mm_tn(rows(hiddens), rows(grad_h), on)
        grad_w_x = onednn.mm_tn(rows(rest), rows(grad_pre), on)
        grad_w_out = onednn.mm_tn(rows(features), rows(grad_a), on)
        # the memory's: keys Σ_t ∂e_t σ'_t v; values Σ_t α_tᵀ ∂c_t as one batched product (B, S, T) × (B, T, D)
        grad_values = torch.bmm(weights.permute(1, 2, 0), grad_contexts.transpose(0, 1))
        return (
            grad_pre,
            grad_hidden,
            grad_attentional if ctx.feeding else None,
            grad_h.sum((0, 1)),
            grad_a.sum((0, 1)),
            grad_w_h,
            grad_w_x,
            grad_w_out,
            keys_grad.mul_(energy[0]),
            grad_values,
            grad_energy,
            None,
            None,
        )
