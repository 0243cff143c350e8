"""The Transformer (Vaswani et al. 2017) as an encoder for any decoder, and as a decoder with cached steps.

Both are pre-layer-norm stacks (each sub-layer reads ``LayerNorm(x)`` and adds its output to ``x``; one final
``LayerNorm``), which train without the post-LN warm-up sensitivity (Xiong et al. 2020). ``d`` is
``model.hidden_size``; embeddings (``model.embedding_size``; projected to ``d`` when the sizes differ) get
sinusoidal positions (``positional.py``). Embeddings are N(0, 1) and are not scaled by √d.

* :class:`TransformerEncoder` — ``nn.TransformerEncoderLayer`` × L with a key-padding mask. Besides one output
  per source position ``(B, S, d)`` it returns a "final state" for a recurrent decoder: the mean of the real
  positions' outputs, once per encoder layer ``(L, B, d)`` — the hybrid of Chen et al. (2018, RNMT+) then
  bridges it into the RNN's initial state like an RNN encoder's final state.
* :class:`TransformerDecoder` — masked self-attention, cross-attention over the encoder outputs, feed-forward.
  Trained on the whole target at once (causal mask); searched one token at a time through the same
  ``forward_step`` interface as the recurrent decoder, with the keys and values of earlier steps cached
  (:class:`TransformerState`) and those of the source projected once (:class:`TransformerMemory`).
  Its attention weights (heat maps, alignment) are the last layer's cross-attention averaged over heads;
  :meth:`TransformerDecoder.cross_attention_heads` gives every layer's, per head (the per-head alignment analysis).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seq2seq.models.decoder import RecurrentDecoder
from seq2seq.models.multihead import MultiHeadAttention
from seq2seq.models.positional import SinusoidalPositions

KeyValues = list[tuple[Tensor, Tensor]]  # per layer, keys and values (B, h, S, d/h)


def _select(pairs: KeyValues, index: Tensor) -> KeyValues:
    return [(k.index_select(0, index), v.index_select(0, index)) for k, v in pairs]


class TransformerEncoder(nn.Module):
    """Positions → dropout → L pre-LN ``nn.TransformerEncoderLayer`` → LayerNorm.

    Args:
        embedding_size: ``E`` of the input embeddings; size: ``d``; layers: ``L``; heads: ``h``;
        ff_size: the feed-forward inner size; dropout: on inputs, attention weights and sub-layer outputs.
    """

    def __init__(
        self, embedding_size: int, size: int, layers: int, heads: int, ff_size: int, dropout: float
    ) -> None:
        super().__init__()
        if size % heads:
            raise ValueError(f"model.hidden_size={size} must be divisible by model.encoder.heads={heads}")
        self.num_layers = layers
        self.input = nn.Linear(embedding_size, size) if embedding_size != size else nn.Identity()
        self.positions = SinusoidalPositions(size)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(size, heads, ff_size, dropout, batch_first=True, norm_first=True)
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(size)

    def forward(self, embedded: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, S, E)`` embeddings, ``(B,)`` lengths → outputs ``(B, S, d)`` (zero at padding), final ``(L, B, d)``."""
        real = torch.arange(embedded.size(1), device=embedded.device) < lengths.to(embedded.device)[:, None]
        x = self.dropout(self.positions(self.input(embedded)))
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=~real)
        outputs = self.norm(x) * real.unsqueeze(-1)  # (B, S, d)
        pooled = outputs.sum(dim=1) / real.sum(dim=1, keepdim=True)  # (B, d): mean over real positions
        return outputs, pooled.unsqueeze(0).expand(self.num_layers, -1, -1)


class DecoderLayer(nn.Module):
    """Pre-LN: ``x += SelfAttn(LN x)`` (causal), ``x += CrossAttn(LN x, memory)``, ``x += FF(LN x)``."""

    def __init__(self, size: int, heads: int, ff_size: int, dropout: float) -> None:
        super().__init__()
        self.self_attention = MultiHeadAttention(size, heads, dropout)
        self.cross_attention = MultiHeadAttention(size, heads, dropout)
        self.feed_forward = nn.Sequential(
            nn.Linear(size, ff_size), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_size, size)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(size) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        past: tuple[Tensor, Tensor] | None,
        cross: tuple[Tensor, Tensor],
        mask: Tensor,
        need_weights: bool,
        per_head: bool = False,
    ) -> tuple[Tensor, tuple[Tensor, Tensor], Tensor | None]:
        """``x`` ``(B, T, d)`` at the positions after ``past`` (cached keys/values, or None for a whole target).

        Returns the new ``x``, the keys/values up to and including these positions, and cross-attention weights
        (with ``need_weights``: averaged over heads ``(B, T, S)``, or per head ``(B, h, T, S)`` with ``per_head``).
        """
        normed = self.norms[0](x)
        keys, values = self.self_attention.project(normed)
        if past is not None:
            keys, values = torch.cat([past[0], keys], dim=2), torch.cat([past[1], values], dim=2)
        # A whole target: position t reads positions ≤ t. One new step: it reads everything cached.
        read, _ = self.self_attention(normed, keys, values, causal=past is None)
        x = x + self.dropout(read)
        read, weights = self.cross_attention(
            self.norms[1](x), *cross, mask=mask, need_weights=need_weights, per_head=per_head
        )
        x = x + self.dropout(read)
        x = x + self.dropout(self.feed_forward(self.norms[2](x)))
        return x, (keys, values), weights


@dataclass
class TransformerMemory:
    """The source as the decoder reads it: outputs ``(B, S, d)``, mask ``(B, S)``, per-layer cross keys/values."""

    outputs: Tensor
    mask: Tensor
    cross: KeyValues

    def index_select(self, index: Tensor) -> TransformerMemory:
        return TransformerMemory(
            self.outputs.index_select(0, index), self.mask.index_select(0, index), _select(self.cross, index)
        )


@dataclass
class TransformerState:
    """Per layer the self-attention keys/values of the tokens decoded so far ``(B, h, t, d/h)``; ``step`` = t."""

    past: KeyValues
    step: int = 0

    def index_select(self, index: Tensor) -> TransformerState:
        return TransformerState(_select(self.past, index), self.step)


class TransformerDecoder(nn.Module):
    """Target embeddings + positions → L :class:`DecoderLayer` → LayerNorm → ``W_s`` (logits).

    Plugs into ``search.py`` like :class:`~seq2seq.models.decoder.RecurrentDecoder`: ``embedding``,
    ``forward_step``, ``logits``, and states and memories with ``index_select``.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        size: int,
        layers: int,
        heads: int,
        ff_size: int,
        dropout: float,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        if size % heads:
            raise ValueError(f"model.hidden_size={size} must be divisible by model.decoder.heads={heads}")
        self.size = size
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=pad_id)
        self.input = nn.Linear(embedding_size, size) if embedding_size != size else nn.Identity()
        self.positions = SinusoidalPositions(size)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(DecoderLayer(size, heads, ff_size, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(size)
        self.generator = nn.Linear(size, vocab_size)  # W_s

    @property
    def attention(self) -> MultiHeadAttention:
        """The last layer's cross-attention: not None, so search and heat maps know this decoder attends."""
        return self.layers[-1].cross_attention

    def prepare_memory(
        self, outputs: Tensor, mask: Tensor, encoder_final: object = None
    ) -> TransformerMemory:
        """Project the encoder outputs into every layer's cross-attention keys and values, once per batch."""
        return TransformerMemory(
            outputs, mask, [layer.cross_attention.project(outputs) for layer in self.layers]
        )

    def init_state(self, encoder_final: Tensor | tuple[Tensor, Tensor]) -> TransformerState:
        """Empty caches (the encoder's final state is not used: the decoder reads the source by attention)."""
        final = encoder_final[0] if isinstance(encoder_final, tuple) else encoder_final  # (L, B, H)
        heads = self.layers[0].self_attention.heads
        empty = final.new_zeros(final.size(1), heads, 0, self.size // heads)
        return TransformerState([(empty, empty) for _ in self.layers])

    def _run(
        self,
        embedded: Tensor,
        state: TransformerState | None,
        memory: TransformerMemory,
        need_weights: bool,
        every_head: bool = False,
    ) -> tuple[Tensor, KeyValues, Tensor | None]:
        """The stack over ``(B, T, E)`` embeddings at positions ``state.step …`` (0 … without a state).

        The weights: with ``need_weights`` the last layer's cross-attention averaged over heads ``(B, T, S)``;
        with ``every_head`` instead every layer's, per head, ``(L, B, h, T, S)``.
        """
        x = self.dropout(self.positions(self.input(embedded), offset=0 if state is None else state.step))
        past, weights, per_layer = [], None, []
        for index, layer in enumerate(self.layers):
            last = index == len(self.layers) - 1
            x, pair, layer_weights = layer(
                x,
                None if state is None else state.past[index],
                memory.cross[index],
                memory.mask,
                (need_weights and last) or every_head,
                per_head=every_head,
            )
            past.append(pair)
            per_layer.append(layer_weights)
            weights = layer_weights if last else weights
        return self.norm(x), past, torch.stack(per_layer) if every_head else weights

    def forward_step(
        self, prev_embedded: Tensor, state: TransformerState, memory: TransformerMemory
    ) -> tuple[Tensor, TransformerState, Tensor]:
        """One token: ``(B, E)`` → output ``(B, d)`` (feed to :meth:`logits`), the state with this step cached,
        cross-attention ``(B, S)``."""
        out, past, weights = self._run(prev_embedded.unsqueeze(1), state, memory, need_weights=True)
        return out.squeeze(1), TransformerState(past, state.step + 1), weights.squeeze(1)

    def unroll(
        self,
        targets_in: Tensor,
        memory: TransformerMemory,
        state: TransformerState | None = None,
        return_attention: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing over a whole target at once: outputs ``(B, T, d)``, attention ``(B, T, S)`` or None."""
        out, _, weights = self._run(self.embedding(targets_in), None, memory, return_attention)
        return out, weights

    def cross_attention_heads(self, targets_in: Tensor, memory: TransformerMemory) -> Tensor:
        """Teacher forcing over ``(B, T)`` decoder inputs: every layer's cross-attention per head,
        ``(L, B, h, T, S)`` (each row a distribution over the source; zero at padding). The same computation
        as :meth:`unroll`; its weights are ``[-1].mean(dim=1)`` of these."""
        _, _, weights = self._run(self.embedding(targets_in), None, memory, False, every_head=True)
        return weights

    def logits(self, outputs: Tensor) -> Tensor:
        """``(..., d)`` → ``(..., V)``."""
        return self.generator(outputs)

    def forward(
        self,
        targets_in: Tensor,
        memory: TransformerMemory,
        state: TransformerState,
        teacher_forcing_ratio: float = 1.0,
        sample_feedback: bool = False,
        return_attention: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Logits ``(B, T, V)``: at once under teacher forcing; with ratio < 1 (scheduled sampling, Bengio et al.
        2015) step by step, feeding the model's own token where the coin says so."""
        if teacher_forcing_ratio >= 1.0:
            out, weights = self.unroll(targets_in, memory, state, return_attention)
            return self.logits(out), weights
        step_logits, all_weights = [], []
        prev = self.embedding(targets_in[:, 0])
        for t in range(targets_in.size(1)):
            out, state, weights = self.forward_step(prev, state, memory)
            step_logits.append(self.logits(out))
            all_weights.append(weights)
            if t + 1 < targets_in.size(1):  # the recurrent decoder's coin and feedback, on this embedding
                prev = RecurrentDecoder._mixed_input(
                    self,
                    step_logits[-1],
                    targets_in[:, t + 1],
                    teacher_forcing_ratio,
                    sample_feedback,
                    generator,
                )
        return torch.stack(step_logits, dim=1), (
            torch.stack(all_weights, dim=1) if return_attention else None
        )
