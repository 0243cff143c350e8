"""Output layer and cross-entropy in chunks of tokens: the training loss without the ``(B, T, V)`` logits.

The mean cross-entropy of ``softmax(W x + b)`` over the non-padding targets (with label smoothing ``ε``, as
``F.cross_entropy`` defines it: ``(1-ε)·(-log p_y) + ε·mean_v(-log p_v)``) has the gradient
``∂L/∂z = (softmax(z) - q) / N`` with ``q = (1-ε)·onehot(y) + ε/V`` for each of the ``N`` real tokens. So the
forward pass can compute, ``chunk`` tokens at a time, each chunk's logits, its loss *and* its gradients for
``x``, ``W`` and ``b``, and keep only those: the logits of one chunk live at a time instead of the full
``(B·T, V)`` tensor and its gradient. The FLOPs are the same as the plain layer's forward and backward
(the two backward products run in the forward pass), and only over the real (non-padding) tokens' rows. Tested
equal to ``F.cross_entropy(generator(x))``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from seq2seq.models import onednn


def _loss_and_gradient(logits: Tensor, targets: Tensor, smoothing: float) -> tuple[Tensor, Tensor]:
    """Each row's loss ``(C,)`` and ``∂(Σ loss)/∂logits = softmax(z) − q`` ``(C, V)`` of logits ``(C, V)`` with
    targets ``(C,)``, as operators (where the compiled pass, ``csrc/cross_entropy.cpp``, is not in use)."""
    vocab, y = logits.size(1), targets.unsqueeze(1)
    # softmax once (one exp per logit; log_softmax then exp took two, and 2.8× the time), the log-normaliser from
    # each row's largest logit and probability (the same v; p at least 1/V): exact where log p_y underflows. amax,
    # not max: without the indices it is 7× faster
    grad = torch.softmax(logits, dim=-1)  # (C, V)
    log_norm = logits.amax(dim=-1) - grad.amax(dim=-1).log()  # log Σ_v exp(z_v), (C,)
    nll = log_norm - logits.gather(1, y).squeeze(1)  # (C,)
    if smoothing:  # mean_v(−log p_v) = log-normaliser − mean_v(z_v)
        token_loss = (1 - smoothing) * nll + smoothing * (log_norm - logits.mean(dim=-1))
        grad.sub_(smoothing / vocab)
    else:
        token_loss = nll
    grad.scatter_add_(1, y, torch.full_like(nll, -(1 - smoothing)).unsqueeze(1))
    return token_loss, grad


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        features: Tensor,
        weight: Tensor,
        bias: Tensor,
        targets: Tensor,
        ignore_index: int,
        smoothing: float,
        chunk: int,
        use_onednn: bool | int,
        compiled: bool,
    ) -> Tensor:
        padded, rows = features, None
        real = targets != ignore_index
        if not bool(real.all()):  # padding rows add nothing to the loss: the products run over real rows only
            rows = real.nonzero().squeeze(1)  # (N,)
            features, targets = features.index_select(0, rows), targets[rows]
        count = max(targets.numel(), 1)
        grad_x = torch.zeros_like(features)
        dtype = torch.promote_types(weight.dtype, torch.float32)  # softmax and sums at least in float32
        grad_w, grad_b = None, None
        total = features.new_zeros((), dtype=dtype)
        for start in range(0, features.size(0), chunk):
            x = features[start : start + chunk]  # (C, H)
            y = targets[start : start + chunk]  # (C,)
            logits = onednn.linear(x, weight, bias, use_onednn).to(dtype)  # (C, V)
            if compiled and logits.device.type == "cpu":  # one pass per row: csrc/cross_entropy.cpp
                token_loss, column_sums = torch.ops.seq2seq_kernels.softmax_cross_entropy_(
                    logits, y, smoothing
                )
                grad = logits  # (C, V): now ∂(Σ token_loss)/∂logits
            else:
                token_loss, grad = _loss_and_gradient(logits, y, smoothing)
                column_sums = grad.sum(0)
            total = total + token_loss.sum()
            # ∂L/∂logits is grad / N; the 1/N is applied to the (C, H) and (V,) sides of the products, never in a
            # pass over the (C, V) gradient
            grad_x[start : start + chunk] = (onednn.mm(grad, weight.to(grad.dtype), use_onednn) / count).to(
                features.dtype
            )
            chunk_w = onednn.mm_tn(grad, x.to(grad.dtype) / count, use_onednn)
            grad_w = chunk_w if grad_w is None else grad_w.add_(chunk_w)
            grad_b = column_sums / count if grad_b is None else grad_b.add_(column_sums / count)
        if rows is not None:  # back to every row, zero at padding
            grad_x = torch.zeros_like(padded).index_copy_(0, rows, grad_x)
        if grad_w is None:  # no real token: no gradient
            grad_w, grad_b = torch.zeros_like(weight), torch.zeros_like(bias)
        ctx.save_for_backward(grad_x, grad_w.to(weight.dtype), grad_b.to(bias.dtype))
        return total / count

    @staticmethod
    @once_differentiable  # the written-out backward is not itself differentiable: a double backward raises
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        grad_x, grad_w, grad_b = ctx.saved_tensors
        return (
            grad_x * grad_output,
            grad_w * grad_output,
            grad_b * grad_output,
            None,
            None,
            None,
            None,
            None,
            None,
        )


def linear_cross_entropy(
    features: Tensor,
    layer: torch.nn.Linear,
    targets: Tensor,
    ignore_index: int,
    label_smoothing: float = 0.0,
    chunk: int = 2048,
    use_onednn: bool | int = True,
    compiled: bool = False,
) -> Tensor:
    """Mean cross-entropy of ``layer(features)`` against ``targets``, ``chunk`` tokens at a time.

    Args:
        features: ``(N, H)`` inputs of the output layer (``h̃`` after dropout).
        layer: the output layer ``W_s`` (``V × H`` weight and a bias).
        targets: ``(N,)`` gold ids; ``ignore_index`` (padding) counts for nothing.
        label_smoothing: ``ε`` of ``F.cross_entropy``.
        chunk: tokens whose logits are computed at once.
        use_onednn: the logits, ``∂L/∂x`` and ``∂L/∂W`` products through oneDNN on CPU (:mod:`seq2seq.models.onednn`).
        compiled: each CPU chunk's softmax, loss and gradient in one compiled pass per row
            (``csrc/cross_entropy.cpp``; ``speed.compiled_kernels``, already built by :mod:`seq2seq.models.kernels`).
    """
    if layer.bias is None:
        raise ValueError("linear_cross_entropy needs an output layer with a bias")
    return _LinearCrossEntropy.apply(
        features,
        layer.weight,
        layer.bias,
        targets,
        ignore_index,
        float(label_smoothing),
        int(chunk),
        use_onednn,  # True, False or a row limit (onednn.active)
        bool(compiled),
    )
