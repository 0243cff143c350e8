"""The names the model config groups choose between, and the attention each name builds.

``model/attention`` names: ``none``, the global mechanisms of ``attention.py``, ``luong_local``
(``local_attention.py``) and ``multihead`` — the Transformer decoder's own cross-attention (``transformer.py``),
which only that decoder has. ``model.encoder.type`` and ``model.decoder.type``: ``rnn`` or ``transformer``. The config checks derive their option lists from these constants, so a mechanism
registered here is a valid choice everywhere.
"""

from __future__ import annotations

from seq2seq.models.attention import ATTENTIONS, Attention
from seq2seq.models.attention import build_attention as build_global_attention
from seq2seq.models.local_attention import LocalAttention

LOCAL = "luong_local"
MULTIHEAD = "multihead"
ATTENTION_NAMES: tuple[str, ...] = ("none", *ATTENTIONS, LOCAL, MULTIHEAD)
ARCHITECTURES: tuple[str, ...] = ("rnn", "transformer")


def build_attention(
    name: str,
    query_size: int,
    memory_size: int,
    attention_size: int,
    score: str | None = None,
    mode: str | None = None,
    window: int | None = None,
    reverse: bool | None = None,
) -> Attention | None:
    """``none`` → None; ``luong_local`` → :class:`LocalAttention` (options None: its defaults); else global."""
    if name == LOCAL:
        return LocalAttention(
            query_size,
            memory_size,
            attention_size,
            score or "general",
            mode or "p",
            window or 10,
            bool(reverse),
        )
    if name == MULTIHEAD:
        raise ValueError(
            "multihead attention is the Transformer decoder's own: use it with model/decoder=transformer"
        )
    if name not in ATTENTION_NAMES:
        raise ValueError(f"unknown attention {name!r}: choose one of {ATTENTION_NAMES}")
    return build_global_attention(name, query_size, memory_size, attention_size)
