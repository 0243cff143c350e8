"""Attention mechanisms: Bahdanau (additive) and Luong (dot, general, concat).

Every mechanism scores a decoder query ``q`` (B, H) against the encoder outputs ``h̄_j`` (B, S, H),
normalises the scores with a softmax over the *real* source positions (padding gets exactly zero
weight) and returns the context ``c = Σ_j α_j h̄_j``:

=================  ======================================  ==========================================
variant            score(q, h̄_j)                           paper
=================  ======================================  ==========================================
``bahdanau``       vᵀ tanh(W q + U h̄_j)                     Bahdanau, Cho & Bengio 2015, eq. (6), App. A
``luong_dot``      qᵀ h̄_j                                   Luong, Pham & Manning 2015, eq. (8)
``luong_general``  qᵀ W h̄_j                                 Luong et al. 2015, eq. (8)
``luong_concat``   vᵀ tanh(W [q; h̄_j])                      Luong et al. 2015, eq. (8)
=================  ======================================  ==========================================

The part of each score that depends only on the source (``U h̄`` and ``W h̄``) is computed once per
batch by :meth:`Attention.project_keys`, not at every decoder step. :meth:`Attention.forward_all` reads
for all ``T`` queries of a teacher-forced target at once (``models/unroll.py``): the same maths, batched.

Where the query comes from differs: Bahdanau attends with the *previous* decoder state ``s_{i-1}``
before the RNN step; Luong attends with the *current* state ``h_t`` after it. Each class says which in
``query_is_previous_state`` and the decoder (``decoder.py``) places the call accordingly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Attention(nn.Module):
    """Base class: ``project_keys`` once per batch, then ``forward`` once per decoder step."""

    query_is_previous_state: bool = False

    def project_keys(self, memory: Tensor) -> Tensor:
        """Precompute the source-only part of the score. ``(B, S, H)`` → ``(B, S, K)``."""
        return memory

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        """Unnormalised scores ``(B, S)`` for a query ``(B, H)`` and projected keys ``(B, S, K)``."""
        raise NotImplementedError

    def forward(
        self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor, step: int = 0
    ) -> tuple[Tensor, Tensor]:
        """One attention read.

        Args:
            query: ``(B, H)`` decoder state.
            keys: ``(B, S, K)`` from :meth:`project_keys`.
            memory: ``(B, S, H)`` encoder outputs (the values).
            mask: ``(B, S)`` bool, True at real source tokens.
            step: the 0-based target step (global attention ignores it; local attention places its window).

        Returns:
            context ``(B, H)`` and weights ``(B, S)`` (rows sum to 1, zero at padding).
        """
        return masked_read(self.score(query, keys), ~mask, memory)

    def score_all(self, queries: Tensor, keys: Tensor) -> Tensor:
        """Scores ``(B, T, S)`` for ``T`` queries ``(B, T, H)`` at once."""
        raise NotImplementedError

    def score_windows(self, queries: Tensor, keys: Tensor) -> Tensor:
        """Scores ``(B, T, W)`` for ``T`` queries ``(B, T, H)``, each against its own ``W`` keys ``(B, T, W, K)``."""
        raise NotImplementedError

    def forward_all(
        self, queries: Tensor, keys: Tensor, memory: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """:meth:`forward` for ``T`` queries ``(B, T, H)`` at once → context ``(B, T, H)``, weights ``(B, T, S)``."""
        scores = self.score_all(queries, keys).masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # (B, T, S)
        return torch.bmm(weights, memory), weights


class AdditiveScore(Attention):
    """vᵀ tanh(W q + U h̄): shared by Bahdanau (query = s_{i-1}) and Luong concat (query = h_t).

    Luong's ``vᵀ tanh(W_a [h_t; h̄_s])`` is the same function with ``W_a = [W, U]`` split by columns.

    With ``tanh_as_sigmoid`` (the default; ``speed.tanh_as_sigmoid``) the score is computed through the identity
    ``tanh(x) = 2σ(2x) − 1``: ``vᵀ tanh(x) = 2 vᵀσ(2x) − Σ_k v_k``, the same score up to float rounding, because
    PyTorch's CPU ``tanh`` runs several times slower than its ``sigmoid`` (``docs/performance.md``). The keys are
    then kept doubled, ``2 U h̄``, so each step adds ``2 W q`` to them in one pass.

    ``recompute_gates`` (``speed.recompute_attention``): in the hoisted step loop's
    :class:`~seq2seq.models.step_attention.StepAttention`, each step's backward computes ``σ(…)`` ``(B, S, A)`` again
    instead of keeping it; ``compiled_kernels`` (``speed.compiled_kernels``, resolved to built ones or False): its
    scores and their backward by the compiled kernel of :mod:`~seq2seq.models.attention_kernel`.
    """

    tanh_as_sigmoid = True
    recompute_gates = True
    compiled_kernels = False

    def __init__(self, query_size: int, memory_size: int, attention_size: int) -> None:
        super().__init__()
        self.query_layer = nn.Linear(query_size, attention_size, bias=False)  # W
        self.key_layer = nn.Linear(memory_size, attention_size, bias=False)  # U
        self.energy_layer = nn.Linear(attention_size, 1, bias=False)  # v

    def project_keys(self, memory: Tensor) -> Tensor:
        keys = self.key_layer(memory)  # (B, S, A); doubled: 2 U h̄, the keys' share of σ's argument
        return keys * 2 if self.tanh_as_sigmoid else keys

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        return self.score_projected(self.query_layer(query), keys)

    def score_projected(self, projected: Tensor, keys: Tensor) -> Tensor:
        """The score from an already projected query ``W q`` ``(B, A)`` → ``(B, S)``."""
        return self.energy(projected.unsqueeze(1), keys)

    def score_all(self, queries: Tensor, keys: Tensor) -> Tensor:
        return self.energy(self.query_layer(queries).unsqueeze(2), keys.unsqueeze(1))  # (B, T, S)

    def score_windows(self, queries: Tensor, keys: Tensor) -> Tensor:
        return self.energy(self.query_layer(queries).unsqueeze(2), keys)  # (B, T, W)

    def energy(self, projected: Tensor, keys: Tensor) -> Tensor:
        """``vᵀ tanh(W q + U h̄)`` for a projected query and keys that broadcast to ``(..., A)`` → ``(...)``."""
        if not self.tanh_as_sigmoid:
            return self.energy_layer(torch.tanh(projected + keys)).squeeze(-1)
        gates = torch.sigmoid(torch.add(keys, projected, alpha=2))  # σ(2(W q + U h̄)), keys already doubled
        return self.energy_layer(gates).squeeze(-1).mul(2).sub(self.energy_layer.weight.sum())


class BahdanauAttention(AdditiveScore):
    """Additive attention of Bahdanau et al. (2015), queried with the previous decoder state s_{i-1}."""

    query_is_previous_state = True


class LuongConcatAttention(AdditiveScore):
    """Luong et al. (2015) ``concat`` score vᵀ tanh(W [h_t; h̄_s]), queried with the current state h_t."""


class LuongDotAttention(Attention):
    """Luong et al. (2015) ``dot`` score h_tᵀ h̄_s; needs query and memory of equal size."""

    def __init__(self, query_size: int, memory_size: int, attention_size: int | None = None) -> None:
        super().__init__()
        if query_size != memory_size:
            raise ValueError(f"luong_dot needs equal query ({query_size}) and memory ({memory_size}) sizes")

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        # (B, 1, H) × (B, H, S), not (B, S, H) × (B, H, 1): CPU bmm runs one output column about 10× slower
        return torch.bmm(query.unsqueeze(1), keys.transpose(1, 2)).squeeze(1)  # (B, S)

    def score_all(self, queries: Tensor, keys: Tensor) -> Tensor:
        return torch.bmm(queries, keys.transpose(1, 2))  # (B, T, S)

    def score_windows(self, queries: Tensor, keys: Tensor) -> Tensor:
        # one row per window, not one column (as in score)
        return torch.matmul(queries.unsqueeze(-2), keys.transpose(-1, -2)).squeeze(-2)  # (B, T, W)


class LuongGeneralAttention(LuongDotAttention):
    """Luong et al. (2015) ``general`` score h_tᵀ W_a h̄_s; ``W_a h̄_s`` is precomputed per batch."""

    def __init__(self, query_size: int, memory_size: int, attention_size: int | None = None) -> None:
        nn.Module.__init__(self)
        self.key_layer = nn.Linear(memory_size, query_size, bias=False)  # W_a

    def project_keys(self, memory: Tensor) -> Tensor:
        return self.key_layer(memory)  # (B, S, H)


ATTENTIONS: dict[str, type[Attention]] = {
    "bahdanau": BahdanauAttention,
    "luong_dot": LuongDotAttention,
    "luong_general": LuongGeneralAttention,
    "luong_concat": LuongConcatAttention,
}


def masked_read(scores: Tensor, invalid: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax of scores ``(B, S)`` over the real positions (``invalid`` ``(B, S)`` True at padding, weight 0
    there) and the context it reads from values ``(B, S, D)`` → context ``(B, D)``, weights ``(B, S)``."""
    weights = torch.softmax(scores.masked_fill(invalid, float("-inf")), dim=-1)
    return torch.bmm(weights.unsqueeze(1), values).squeeze(1), weights


def build_attention(name: str, query_size: int, memory_size: int, attention_size: int) -> Attention | None:
    """``none`` → ``None`` (the fixed-context model); otherwise the named mechanism."""
    if name == "none":
        return None
    if name not in ATTENTIONS:
        raise ValueError(f"unknown attention {name!r}: choose none or one of {sorted(ATTENTIONS)}")
    return ATTENTIONS[name](query_size, memory_size, attention_size)


def attention_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Entropy ``-Σ_j α_ij log α_ij`` (nats) of each target step's attention: ``(T, S)`` → ``(T,)``.

    0 when a step attends to one source token; ``log S`` when it spreads evenly.
    """
    return -torch.special.xlogy(weights, weights).sum(dim=-1)
