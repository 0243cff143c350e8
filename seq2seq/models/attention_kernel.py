"""Bahdanau's additive score as one compiled CPU pass over the keys, forward and backward (``csrc/additive_score.cpp``).

In the sigmoid form of :mod:`~seq2seq.models.step_attention` a step's scores are (Bahdanau, Cho & Bengio 2015,
App. A, with ``tanh(x) = 2σ(2x) − 1``)::

    g = σ(K + 2 W q_t)  (B, S, A)        e_bs = 2 Σ_a v_a g_bsa       K = 2 U h̄ (the doubled keys)

Written as operators, the forward is three passes over a ``(B, S, A)`` tensor (an add into a new tensor, σ in
place, the product with ``v``) and the backward seven (``g`` again, ``∂v``, σ', ``∂d``, and the keys' running
sum); in the step loop each such pass takes several times its time in isolation (``docs/performance.md``). The
kernel reads ``K`` once in the forward, keeping nothing of size ``(B, S, A)``, and in the backward reads it once more
and adds to the keys' running sum once, with ``grad`` = ``∂L/∂(gv)`` ``(B, S)`` (twice ``∂L/∂e``)::

    ∂v = Σ_bs grad_bs g_bs      ∂(W q)_b = 2 v ⊙ Σ_s grad_bs g_bs (1 − g_bs)      keys_grad_bs += grad_bs g_bs (1 − g_bs)

(``keys_grad`` times ``v`` is the keys' gradient, as :class:`~seq2seq.models.step_attention.StepAttention` keeps
it). Positions with ``grad`` 0 — padding, where α is 0 — are skipped.

Built and loaded by :mod:`~seq2seq.models.kernels` (``speed.compiled_kernels``). Tested equal to the operators in
float64 (``tests/test_attention_kernel.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def active(enabled: bool, *tensors: Tensor) -> bool:
    """Whether the kernel computes a read of these tensors: ``enabled`` (``speed.compiled_kernels``, already built),
    CPU float32 or float64 tensors of one dtype, the first (the keys) contiguous."""
    if not enabled or not tensors or not tensors[0].is_contiguous():
        return False
    dtype = tensors[0].dtype
    return dtype in (torch.float32, torch.float64) and all(
        t.device.type == "cpu" and t.dtype == dtype for t in tensors
    )


def scores(keys: Tensor, query: Tensor, v: Tensor) -> Tensor:
    """``e = 2 Σ_a v_a σ(K + 2 W q)`` ``(B, S)`` from the doubled keys ``(B, S, A)``, the projected query ``W q``
    ``(B, A)`` (its rows may be a slice of a wider tensor) and ``v`` ``(A,)``, without autograd."""
    return torch.ops.seq2seq_kernels.additive_score(keys, _rows(query), v.contiguous())


def scores_backward(
    keys: Tensor, query: Tensor, v: Tensor, grad: Tensor, keys_grad: Tensor
) -> tuple[Tensor, Tensor]:
    """``(∂(W q) (B, A), ∂v (A,))`` for ``grad`` ``= ∂L/∂(gv)`` ``(B, S)``; adds ``grad ⊙ σ'`` to ``keys_grad``
    ``(B, S, A)`` in place (module docstring)."""
    v = v.contiguous()
    v_rows, query_rows = torch.ops.seq2seq_kernels.additive_score_backward(
        keys, _rows(query), v, grad.contiguous(), keys_grad
    )
    return query_rows.mul_(v).mul_(2), v_rows.sum(0)


def _rows(t: Tensor) -> Tensor:
    """``t`` with packed rows (a column slice of a contiguous tensor stays a view)."""
    return t if t.stride(-1) == 1 else t.contiguous()
