"""Luong local attention (Luong, Pham & Manning 2015, §3.2): attend only to a window around a position p_t.

At target step ``t`` the decoder state ``h_t`` (B, H) chooses an aligned source position ``p_t`` and reads only
the source positions ``s`` with ``|s - p_t| ≤ D`` (the window ``[p_t - D, p_t + D]``):

* **local-m** (monotonic, ``mode="m"``): ``p_t = t`` — source and target assumed aligned in order (clamped to
  the last real source position). The weights are eq. (7): a softmax of the scores inside the window. With
  ``reverse=True`` (``data.reverse_source``: the encoder reads the source backwards, Sutskever et al. 2014) the
  first target word faces the *end* of the encoder's input, so ``p_t = max(S - 1 - t, 0)`` with ``S`` the
  sentence's own source length.
* **local-p** (predictive, ``mode="p"``): ``p_t = S · sigmoid(v_pᵀ tanh(W_p h_t))`` (eq. 9), ``S`` the
  sentence's own source length, so ``p_t ∈ [0, S]``; the softmax inside the window is multiplied by a Gaussian
  centred on ``p_t`` (eq. 10): ``a_t(s) = align(h_t, h̄_s) · exp(-(s - p_t)² / (2σ²))`` with ``σ = D / 2``.
  As in the paper the product is not renormalised, so local-p weights sum to at most 1. ``reverse`` does not
  apply: the position is learnt.

The score inside the window is any of Luong's three (``dot``, ``general``, ``concat``; see ``attention.py``).
Positions count from 0; padding and positions outside the window get exactly zero weight. Luong et al. found
local-p with the ``general`` score best (their Table 4), hence the defaults.

Cost: :meth:`LocalAttention.read_window` gathers, per target step, only the ``2D + 1`` keys and encoder outputs
``floor(p_t) - D … floor(p_t) + D`` and scores those: O(T·D) instead of O(T·S). :meth:`LocalAttention.read_full`
scores the full ``(B, T, S)`` matrix and masks it: the same result (tested equal, gradients included). The window
is read for the ``concat`` score (its full path builds a ``(B, T, S, A)`` tanh tensor) when ``2D + 1 < S``;
``dot`` and ``general`` keep the full path, two dense matrix products that on a CPU beat gathering ``(B, T, W, ·)``
copies at every length measured up to S = 400 (``docs/performance.md``). Either way the weights are ``(B, T, S)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seq2seq.models.attention import (
    Attention,
    LuongConcatAttention,
    LuongDotAttention,
    LuongGeneralAttention,
)

LOCAL_MODES = ("p", "m")  # predictive (local-p), monotonic (local-m)
WINDOWED_SCORES = ("concat",)  # read only the window (read_window); the others score the full matrix
LOCAL_SCORES: dict[str, type[Attention]] = {
    "dot": LuongDotAttention,
    "general": LuongGeneralAttention,
    "concat": LuongConcatAttention,
}


class LocalAttention(Attention):
    """Luong local attention, queried with the current decoder state ``h_t`` after the RNN step.

    Args:
        query_size, memory_size: sizes of ``h_t`` and of the encoder outputs ``h̄_s``.
        attention_size: the ``concat`` score's layer and the position predictor's ``W_p`` output size.
        score: ``dot`` | ``general`` | ``concat``.
        mode: ``p`` (local-p) | ``m`` (local-m).
        window: ``D``, the half-width of the window (at least 1).
        reverse: local-m only: the source is read reversed, ``p_t = max(S - 1 - t, 0)``.
    """

    def __init__(
        self,
        query_size: int,
        memory_size: int,
        attention_size: int,
        score: str = "general",
        mode: str = "p",
        window: int = 10,
        reverse: bool = False,
    ) -> None:
        super().__init__()
        if score not in LOCAL_SCORES:
            raise ValueError(f"local attention score={score!r}: choose one of {sorted(LOCAL_SCORES)}")
        if mode not in LOCAL_MODES:
            raise ValueError(f"local attention mode={mode!r}: choose one of {LOCAL_MODES}")
        if window < 1:
            raise ValueError(f"local attention window={window}: must be at least 1")
        self.mode, self.window, self.reverse = mode, int(window), bool(reverse)
        self.windowed = score in WINDOWED_SCORES
        self.sigma = self.window / 2.0
        self.scorer = LOCAL_SCORES[score](query_size, memory_size, attention_size)
        if mode == "p":
            self.position_layer = nn.Linear(query_size, attention_size, bias=False)  # W_p
            self.position_energy = nn.Linear(attention_size, 1, bias=False)  # v_p

    def project_keys(self, memory: Tensor) -> Tensor:
        return self.scorer.project_keys(memory)

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        return self.scorer.score(query, keys)

    def score_all(self, queries: Tensor, keys: Tensor) -> Tensor:
        return self.scorer.score_all(queries, keys)

    def aligned_position(self, query: Tensor, lengths: Tensor, step: int = 0) -> Tensor:
        """``p_t``: ``S · sigmoid(v_pᵀ tanh(W_p h_t))`` (local-p, eq. 9) or ``min(t, S - 1)`` (local-m;
        ``max(S - 1 - t, 0)`` with ``reverse``), as float.

        ``query`` ``(B, H)`` at step ``step`` → ``(B,)``; or ``(B, T, H)`` at steps ``step … step + T - 1`` → ``(B, T)``.
        """
        single = query.dim() == 2
        queries = query.unsqueeze(1) if single else query  # (B, T, H)
        sizes = lengths.unsqueeze(1)  # (B, 1)
        if self.mode == "p":
            gate = torch.sigmoid(self.position_energy(torch.tanh(self.position_layer(queries)))).squeeze(-1)
            centre = sizes.to(gate.dtype) * gate  # (B, T)
        else:
            steps = torch.arange(step, step + queries.size(1), device=queries.device).unsqueeze(0)  # (1, T)
            last = sizes - 1
            centre = (last - steps).clamp(min=0) if self.reverse else torch.minimum(steps, last)
            centre = centre.to(queries.dtype)  # (B, T)
        return centre.squeeze(1) if single else centre

    def forward(
        self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor, step: int = 0
    ) -> tuple[Tensor, Tensor]:
        """One local read at target step ``step`` (0-based): context ``(B, H)`` and weights ``(B, S)``."""
        context, weights = self.forward_all(query.unsqueeze(1), keys, memory, mask, step)
        return context.squeeze(1), weights.squeeze(1)

    def forward_all(
        self, queries: Tensor, keys: Tensor, memory: Tensor, mask: Tensor, first_step: int = 0
    ) -> tuple[Tensor, Tensor]:
        """Reads for ``T`` queries ``(B, T, H)`` at steps ``first_step …``: context ``(B, T, H)``, weights ``(B, T, S)``."""
        centre = self.aligned_position(queries, mask.sum(dim=-1), first_step)  # (B, T)
        windowed = self.windowed and 2 * self.window + 1 < mask.size(1)
        read = self.read_window if windowed else self.read_full
        return read(queries, keys, memory, mask, centre)

    def read_window(
        self, queries: Tensor, keys: Tensor, memory: Tensor, mask: Tensor, centre: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Score only the ``W = 2D + 1`` positions ``floor(p_t) - D + w`` of each window: O(T·D).

        ``keys`` ``(B, S, K)`` and ``memory`` ``(B, S, H)`` are gathered to ``(B, T, W, ·)``; ``centre`` ``p_t`` ``(B, T)``.
        """
        batch, steps = centre.shape
        size = mask.size(1)
        offsets = torch.arange(-self.window, self.window + 1, device=mask.device)  # (W,)
        index = centre.detach().floor().long().unsqueeze(-1) + offsets  # (B, T, W) source positions
        distance = index.to(centre.dtype) - centre.unsqueeze(-1)  # (B, T, W)
        safe = index.clamp(0, size - 1)
        inside = (index >= 0) & (index < size) & mask.gather(1, safe.flatten(1)).view_as(safe)
        inside = inside & (distance.abs() <= self.window)  # |s - p_t| ≤ D, at real tokens
        rows = (safe + torch.arange(batch, device=mask.device).view(-1, 1, 1) * size).flatten()  # (B·T·W,)
        windowed_keys = keys.flatten(0, 1).index_select(0, rows).view(batch, steps, -1, keys.size(-1))
        scores = self.scorer.score_windows(queries, windowed_keys).masked_fill(~inside, float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # (B, T, W): eq. (7) inside the window
        if self.mode == "p":
            weights = weights * torch.exp(-(distance**2) / (2 * self.sigma**2))  # eq. (10)
        windowed_memory = memory.flatten(0, 1).index_select(0, rows).view(batch, steps, -1, memory.size(-1))
        context = torch.matmul(weights.unsqueeze(-2), windowed_memory).squeeze(-2)  # (B, T, H)
        # p_t ∈ [0, S]: each slot has its own column of [-D, S + D], the source is columns D … D + S - 1
        padded = weights.new_zeros(batch, steps, size + 2 * self.window + 1).scatter(
            -1, index + self.window, weights
        )
        return context, padded[..., self.window : self.window + size]  # (B, T, S)

    def read_full(
        self, queries: Tensor, keys: Tensor, memory: Tensor, mask: Tensor, centre: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Score the whole ``(B, T, S)`` matrix and mask it outside the window: O(T·S), the same result."""
        positions = torch.arange(mask.size(1), device=mask.device, dtype=centre.dtype)  # (S,)
        distance = positions.view(1, 1, -1) - centre.unsqueeze(-1)  # (B, T, S)
        # p_t ∈ [0, S] and D ≥ 1, so the window always holds at least one real position.
        inside = mask.unsqueeze(1) & (distance.abs() <= self.window)
        scores = self.score_all(queries, keys).masked_fill(~inside, float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # eq. (7) inside the window
        if self.mode == "p":
            weights = weights * torch.exp(-(distance**2) / (2 * self.sigma**2))  # eq. (10)
        return torch.bmm(weights, memory), weights
