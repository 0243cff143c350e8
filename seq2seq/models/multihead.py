"""Scaled dot-product multi-head attention with projected keys and values that can be cached.

``Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V`` per head, heads concatenated and projected (Vaswani et al. 2017,
§3.2). Unlike ``nn.MultiheadAttention`` the key/value projection is a separate call (:meth:`project`), so a
decoder projects the encoder outputs once per batch and appends one step's keys and values per decoded token
instead of re-projecting its prefix. The product itself is ``F.scaled_dot_product_attention``; when the weights
are wanted (heat maps, alignment) they are computed explicitly — the same maths.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MultiHeadAttention(nn.Module):
    """``heads`` heads of size ``d / heads`` over model size ``d``.

    Args:
        size: ``d`` (``model.hidden_size``); must be divisible by ``heads``.
        heads: number of heads ``h``.
        dropout: on the attention weights (training only).
    """

    def __init__(self, size: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if size % heads:
            raise ValueError(f"model.hidden_size={size} must be divisible by the number of heads ({heads})")
        self.heads, self.head_size, self.dropout = heads, size // heads, dropout
        self.query = nn.Linear(size, size)  # W^Q
        self.key_value = nn.Linear(size, 2 * size)  # [W^K; W^V]
        self.output = nn.Linear(size, size)  # W^O

    def _split(self, x: Tensor) -> Tensor:
        """``(B, T, d)`` → ``(B, h, T, d/h)``."""
        return x.view(x.size(0), x.size(1), self.heads, self.head_size).transpose(1, 2)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of inputs ``(B, S, d)``: two ``(B, h, S, d/h)`` tensors."""
        keys, values = self.key_value(x).chunk(2, dim=-1)
        return self._split(keys), self._split(values)

    def forward(
        self,
        x: Tensor,
        keys: Tensor,
        values: Tensor,
        mask: Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
        per_head: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Queries from ``x`` ``(B, T, d)`` read ``keys``/``values`` ``(B, h, S, d/h)``.

        Args:
            mask: ``(B, S)`` bool, True where a key may be read (source padding is False), or None.
            causal: query ``t`` reads keys ``≤ t`` only (self-attention over a whole target, ``S = T``).
            need_weights: also return the weights averaged over heads ``(B, T, S)``.
            per_head: with ``need_weights``, return each head's weights ``(B, h, T, S)`` instead of their
                average (the per-head alignment analysis).

        Returns:
            ``(B, T, d)`` and the weights (head-averaged, or per head) or None.
        """
        queries = self._split(self.query(x))  # (B, h, T, d/h)
        allowed = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, S)
        if causal:
            steps = torch.ones(x.size(1), keys.size(2), dtype=torch.bool, device=x.device).tril()
            allowed = steps if allowed is None else allowed & steps
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = queries @ keys.transpose(-1, -2) / math.sqrt(self.head_size)  # (B, h, T, S)
            if allowed is not None:
                scores = scores.masked_fill(~allowed, float("-inf"))
            probs = torch.softmax(scores, dim=-1)
            weights = probs if per_head else probs.mean(dim=1)  # (B, h, T, S) or (B, T, S)
            read = F.dropout(probs, dropout, self.training) @ values
        else:
            read = F.scaled_dot_product_attention(queries, keys, values, attn_mask=allowed, dropout_p=dropout)
        read = read.transpose(1, 2).reshape(x.size(0), x.size(1), -1)  # (B, T, d)
        return self.output(read), weights
