"""A GRU layer over a padded batch as one autograd function with its backward written out (:func:`gru_layers`).

``nn.GRU`` on CPU runs each step as separate ATen operators, autograd records every one of them (about a dozen
backward nodes per step and direction), and each weight's gradient is ``T`` thin products accumulated one by one.
Here, for each layer:

* the input projections of every step and both directions are one batched product before the loop;
* a step is one ``baddbmm`` for both directions' ``W_h h`` and five fused elementwise operators;
* the backward runs the same loop in reverse with the gates' derivatives written out, one ``baddbmm`` per step
  for the hidden state's gradient; after the last step the gradients of ``W_i``, ``W_h``, both biases and the
  input are one product (or sum) each over all steps (the "batch the weight gradients" step of cuDNN's RNNs);
* with the compiled operators (``speed.compiled_kernels``), in training, each of the two loops is one C++ call
  (``csrc/gru_layer.cpp``): per step the product and one vectorised pass for the gates, state and mask.

The equations are ``nn.GRU``'s (Cho et al. 2014, with ``r`` applied to ``W_hn h + b_hn`` as in cuDNN)::

    r = σ(W_ir x + b_ir + W_hr h + b_hr)        z = σ(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))        h' = (1 − z) ⊙ n + z ⊙ h

with ``nn.GRU``'s parameters, so checkpoints are the same either way. Padding follows a packed sequence: a
sentence's state stops changing after its last token, the reverse direction reads each sentence from its own last
token, and outputs are zero at padding. Tested equal to ``nn.GRU`` on packed input, values and gradients
(``tests/test_gru_kernel.py``). Used by :class:`~seq2seq.models.encoders.RecurrentEncoder` on CPU
(``speed.gru_kernel``); on CUDA cuDNN's fused kernel is faster.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from seq2seq.models import onednn


def gru_layers(
    rnn: nn.GRU, inputs: Tensor, lengths: Tensor, use_onednn: bool | int = True, compiled: bool = False
) -> tuple[Tensor, Tensor]:
    """What ``rnn`` (``batch_first``) returns on the packed batch, through :class:`_GRULayer`.

    Args:
        inputs: ``(B, S, I)`` right-padded; lengths: ``(B,)`` real lengths (any device).
        use_onednn: the products over all steps through oneDNN on CPU (:mod:`seq2seq.models.onednn`).
        compiled: in training (autograd on), each layer's step loop, forward and backward, as one compiled
            operator (``csrc/gru_layer.cpp``: per step the same product and one vectorised pass for the gates;
            ``speed.compiled_kernels``, already built) for float32 and float64 CPU tensors. Without autograd
            (validation, decoding) the Python loop runs either way, so that a model's scores do not depend on
            whether it was evaluated in its training process or by ``seq2seq-evaluate`` (which builds nothing).

    Returns:
        outputs ``(B, S, D·H)`` (zero at padding) and the final states ``(L·D, B, H)`` in ``nn.GRU``'s order.
    """
    batch, steps, _ = inputs.shape
    directions = 2 if rnn.bidirectional else 1
    lengths = lengths.to(inputs.device)
    time = torch.arange(steps, device=inputs.device)
    real = time.unsqueeze(1) < lengths.unsqueeze(0)  # (S, B)
    # reverse direction: position t of a sentence reads its token (length − 1 − t); padding stays where it is
    reverse = torch.where(real, lengths.unsqueeze(0) - 1 - time.unsqueeze(1), time.unsqueeze(1))  # (S, B)
    alive = [int(n) for n in real.sum(1).tolist()]  # sentences still running at each step
    mask = real.unsqueeze(-1).to(inputs.dtype)  # (S, B, 1)
    compiled = compiled and torch.is_grad_enabled() and inputs.device.type == "cpu"
    compiled = compiled and inputs.dtype in (torch.float32, torch.float64)
    layer_input = inputs.transpose(0, 1)  # (S, B, I), time-major
    finals = []
    for layer in range(rnn.num_layers):
        if layer > 0 and rnn.dropout > 0 and rnn.training:
            layer_input = F.dropout(layer_input, rnn.dropout, training=True)
        suffixes = [f"_l{layer}", f"_l{layer}_reverse"][:directions]
        params = [
            torch.stack([getattr(rnn, f"{name}{suffix}") for suffix in suffixes])
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        ]
        arranged = [layer_input, _along(layer_input, reverse)] if directions == 2 else [layer_input]
        states = _GRULayer.apply(
            torch.stack(arranged), mask, alive, use_onednn, compiled, *params
        )  # (D, S, B, H)
        outputs = [states[0], _along(states[1], reverse)] if directions == 2 else [states[0]]
        layer_input = torch.cat(outputs, dim=-1) * mask  # (S, B, D·H)
        finals.append(states[:, -1])
    return layer_input.transpose(0, 1), torch.cat(finals)


def gates(x: Tensor, from_h: Tensor) -> tuple[Tensor, Tensor]:
    """The GRU's gates ``σ(·)`` of ``r, z`` ``(..., 2H)`` and ``n`` ``(..., H)`` from ``W_i x + b_i`` ``(..., 3H)`` and
    ``W_h h + b_h`` (``from_h``, ``(..., ≥ 3H)``: its first ``2H`` columns become ``σ`` of the ``r, z`` arguments, in
    place). The new state is ``n + z (h − n)``. Also the decoder's fused step (:mod:`seq2seq.models.fused_step`)."""
    size = x.size(-1) // 3
    rz = from_h[..., : 2 * size].add_(x[..., : 2 * size]).sigmoid_()
    n = torch.addcmul(x[..., 2 * size :], rz[..., :size], from_h[..., 2 * size : 3 * size]).tanh_()
    return rz, n


def gate_gradients(
    grad: Tensor, previous: Tensor, rz: Tensor, n: Tensor, from_h: Tensor, grad_x: Tensor, grad_from_h: Tensor
) -> None:
    """The backward of :func:`gates` and ``h' = n + z (h − n)`` for ``∂L/∂h'`` ``grad`` ``(..., H)``: writes
    ``∂L/∂(W_i x + b_i)`` into ``grad_x`` and ``∂L/∂(W_h h + b_h)`` into ``grad_from_h`` (both ``(..., 3H)``).
    ``previous`` is ``h``; ``rz``, ``n`` are :func:`gates`' results, ``from_h`` its second argument after it ran.
    ``h``'s direct share, ``∂L/∂h' ⊙ z``, is the caller's."""
    hidden = grad.size(-1)
    r_, z_, n_ = slice(0, hidden), slice(hidden, 2 * hidden), slice(2 * hidden, 3 * hidden)
    # n: through (1 − z) ⊙ · and tanh; r and z (grad_from_h's first 2H as scratch): through σ
    tanh_grad = torch.addcmul(grad, grad, rz[..., z_], value=-1)
    torch.ops.aten.tanh_backward.grad_input(tanh_grad, n, grad_input=grad_x[..., n_])
    torch.mul(grad_x[..., n_], from_h[..., n_], out=grad_from_h[..., r_])
    torch.mul(grad, previous - n, out=grad_from_h[..., z_])
    torch.ops.aten.sigmoid_backward.grad_input(
        grad_from_h[..., : 2 * hidden], rz, grad_input=grad_x[..., : 2 * hidden]
    )
    grad_from_h[..., : 2 * hidden] = grad_x[..., : 2 * hidden]
    torch.mul(grad_x[..., n_], rz[..., r_], out=grad_from_h[..., n_])


def _along(sequence: Tensor, index: Tensor) -> Tensor:
    """``sequence[index[t, b], b]``: ``(S, B, F)`` reordered in time per sentence by ``index`` ``(S, B)``."""
    return sequence.gather(0, index.unsqueeze(-1).expand_as(sequence))


class _GRULayer(torch.autograd.Function):
    """States ``(D, S, B, H)`` of ``D`` independent GRUs over time-major inputs ``(D, S, B, I)`` from ``h_0 = 0``.

    Weights ``(D, 3H, I)``, ``(D, 3H, H)``, biases ``(D, 3H)``, gates in ``nn.GRU``'s order ``r, z, n``. A state
    with mask 0 at a step (``(S, B, 1)``) keeps its previous value; ``alive[t]`` is the number of 1s at step ``t``.
    """

    @staticmethod
    def forward(
        ctx: Any,
        inputs: Tensor,
        mask: Tensor,
        alive: list[int],
        use_onednn: bool | int,
        compiled: bool,
        w_ih: Tensor,
        w_hh: Tensor,
        b_ih: Tensor,
        b_hh: Tensor,
    ) -> Tensor:
        directions, steps, batch, _ = inputs.shape
        hidden = w_hh.size(2)
        flat = inputs.flatten(1, 2)  # (D, S·B, I)
        projected = torch.stack(
            [onednn.linear(flat[d], w_ih[d], b_ih[d], use_onednn) for d in range(directions)]
        )
        projected = projected.view(directions, steps, batch, 3 * hidden)  # W_i x + b_i, every step at once
        w_hh_t, b_hh = w_hh.transpose(1, 2).contiguous(), b_hh.unsqueeze(1)
        ctx.alive, ctx.use_onednn, ctx.compiled = alive, use_onednn, compiled
        if compiled:  # the loop below in C++, its per-step (σ(r, z), W_hn h + b_hn) and n stacked
            out, from_h, n = torch.ops.seq2seq_kernels.gru_layer(
                projected, mask.view(steps, batch), w_hh_t, b_hh
            )
            ctx.save_for_backward(inputs, mask, w_ih, w_hh, out, from_h, n)
            return out
        out = inputs.new_empty(directions, steps, batch, hidden)
        h = inputs.new_zeros(directions, batch, hidden)
        from_hs = []  # per step (D, B, 3H): σ of the r, z arguments, and W_hn h + b_hn
        for t in range(steps):
            from_h = torch.baddbmm(b_hh, h, w_hh_t)  # (D, B, 3H): W_h h + b_h
            rz, n = gates(projected[:, t], from_h)
            if alive[t] == batch:
                h = torch.lerp(n, h, rz[..., hidden:], out=out[:, t])  # n + z (h − n)
            else:
                h = torch.lerp(h, torch.lerp(n, h, rz[..., hidden:]), mask[t], out=out[:, t])
            from_hs.append((from_h, n))
        ctx.save_for_backward(inputs, mask, w_ih, w_hh, out)
        ctx.from_hs = from_hs  # no graph: no reference cycle
        return out

    @staticmethod
    @once_differentiable  # the written-out backward is not itself differentiable: a double backward raises
    def backward(ctx: Any, grad_states: Tensor) -> tuple[Tensor | None, ...]:
        inputs, mask, w_ih, w_hh, states, *kept = ctx.saved_tensors
        directions, steps, batch, _ = inputs.shape
        if ctx.compiled:
            grad_x, grad_from_h = torch.ops.seq2seq_kernels.gru_layer_backward(
                grad_states, states, mask.view(steps, batch), w_hh, *kept
            )
        else:
            grad_x, grad_from_h = _backward_loop(ctx, grad_states, mask, w_hh, states)
        grad_x, grad_from_h = grad_x.flatten(1, 2), grad_from_h.flatten(1, 2)  # (D, S·B, 3H)
        previous = torch.cat([torch.zeros_like(states[:, :1]), states[:, :-1]], dim=1).flatten(1, 2)
        on, flat, d_ = ctx.use_onednn, inputs.flatten(1, 2), range(directions)  # one product per direction
        grad_inputs = None
        if ctx.needs_input_grad[0]:
            grad_inputs = torch.stack([onednn.mm(grad_x[d], w_ih[d], on) for d in d_]).view_as(inputs)
        grad_w_ih = torch.stack([onednn.mm_tn(grad_x[d], flat[d], on) for d in d_])
        grad_w_hh = torch.stack([onednn.mm_tn(grad_from_h[d], previous[d], on) for d in d_])
        return grad_inputs, None, None, None, None, grad_w_ih, grad_w_hh, grad_x.sum(1), grad_from_h.sum(1)


def _backward_loop(
    ctx: Any, grad_states: Tensor, mask: Tensor, w_hh: Tensor, states: Tensor
) -> tuple[Tensor, Tensor]:
    """The step loop of :class:`_GRULayer`'s backward in Python operators: ``∂L/∂(W_i x + b_i)`` and
    ``∂L/∂(W_h h + b_h)``, each ``(D, S, B, 3H)``."""
    directions, steps, batch, hidden = states.shape
    z_ = slice(hidden, 2 * hidden)
    grad_h = torch.zeros_like(states[:, 0])
    grad_x = states.new_empty(*states.shape[:3], 3 * hidden)  # ∂L/∂(W_i x + b_i) per step, (D, S, B, 3H)
    grad_from_h = torch.empty_like(grad_x)  # ∂L/∂(W_h h + b_h)
    for t in reversed(range(steps)):
        from_h, n = ctx.from_hs[t]
        rz = from_h[..., : 2 * hidden]
        h_prev = states[:, t - 1] if t > 0 else torch.zeros_like(grad_h)
        grad = grad_h + grad_states[:, t]
        if ctx.alive[t] == batch:
            grad_new, grad_h = grad, torch.mul(grad, rz[..., z_])
        else:  # h = h_prev + m (h_new − h_prev): a masked sentence passes its gradient straight on
            grad_new = grad * mask[t]
            grad_h = torch.addcmul(grad - grad_new, grad_new, rz[..., z_])
        gate_gradients(grad_new, h_prev, rz, n, from_h, grad_x[:, t], grad_from_h[:, t])
        grad_h = torch.baddbmm(grad_h, grad_from_h[:, t], w_hh)  # + ∂L/∂(W_h h) W_h
    return grad_x, grad_from_h
