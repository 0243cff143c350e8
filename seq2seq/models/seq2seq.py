"""The encoder–decoder: source embeddings → an encoder → a decoder.

Encoders: :class:`RecurrentEncoder` or :class:`TransformerEncoder`; decoders: :class:`RecurrentDecoder` (any
attention) or :class:`TransformerDecoder`. Every pairing works: the decoder reads the encoder's outputs and
(recurrent decoder) its final state.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from seq2seq.models import onednn
from seq2seq.models.choices import ARCHITECTURES, build_attention
from seq2seq.models.decoder import DecoderState, Memory, RecurrentDecoder
from seq2seq.models.encoders import RecurrentEncoder
from seq2seq.models.transformer import TransformerDecoder, TransformerEncoder
from seq2seq.models.unroll import teacher_forced


class EncoderDecoder(nn.Module):
    """An encoder–decoder: recurrent or Transformer on each side, the recurrent decoder with or without attention.

    Args:
        src_vocab_size, tgt_vocab_size: vocabulary sizes.
        embedding_size, hidden_size: shared by encoder and decoder (``model.embedding_size``, ``model.hidden_size``).
        rnn_type: ``rnn`` | ``gru`` | ``lstm`` for both encoder and decoder.
        attention: ``none`` | ``bahdanau`` | ``luong_dot`` | ``luong_general`` | ``luong_concat`` | ``luong_local``.
        attention_options: ``luong_local`` only: ``score``, ``mode``, ``window`` and ``reverse`` (``local_attention.py``;
            a config saved without ``reverse`` builds ``reverse=False``, as before the option existed).
        context: for ``attention=none``: ``init`` (Sutskever 2014) or ``every_step`` (Cho 2014).
        encoder_type, decoder_type: ``rnn`` | ``transformer`` (``model.encoder.type``, ``model.decoder.type``);
            the Transformer's ``*_heads`` and ``*_ff_size`` apply only to it, its ``d`` is ``hidden_size``.
            A Transformer decoder has its own multi-head cross-attention and ignores ``attention``.
        pad_id, bos_id, eos_id: the special target ids (padding is masked; search starts at BOS, ends at EOS).

    Attributes:
        fast_unroll: teacher forcing (ratio 1) through :mod:`seq2seq.models.unroll` (fused or hoisted, tested
            equal to the decoder's step loop); False runs the step loop (``speed.fast_unroll``). A Transformer
            decoder always trains on the whole target at once.
        compile_step: the fast unroll's per-step function through ``torch.compile`` (``speed.compile``).
        step_weights: the hoisted loop's per-step weights as :class:`~seq2seq.models.step_weights.StepWeight` s,
            each gradient one product over all steps (``speed.step_weights``).
        step_attention: the hoisted loop's Bahdanau read as :class:`~seq2seq.models.step_attention.StepAttention`,
            one backward node per step, the memory's gradients gathered once (``speed.step_attention``).
        fused_step: with both, a one-layer GRU's Bahdanau step as one autograd function
            (:mod:`seq2seq.models.fused_step`; ``speed.fused_step``).
        onednn_matmul: the hoisted loop's per-step products through oneDNN on CPU (:mod:`seq2seq.models.onednn`;
            ``speed.onednn_matmul``).
    """

    fast_unroll: bool = True
    compile_step: bool = False
    step_weights: bool = True
    step_attention: bool = True
    fused_step: bool = True
    onednn_matmul: bool | int = onednn.preferred()

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        embedding_size: int = 128,
        hidden_size: int = 256,
        rnn_type: str = "gru",
        encoder_layers: int = 1,
        bidirectional: bool = True,
        encoder_dropout: float = 0.0,
        decoder_layers: int = 1,
        decoder_dropout: float = 0.0,
        attention: str = "bahdanau",
        attention_size: int | None = None,
        attention_options: dict | None = None,
        input_feeding: bool = True,
        context: str = "every_step",
        pad_id: int = 0,
        bos_id: int = 2,
        eos_id: int = 3,
        encoder_type: str = "rnn",
        decoder_type: str = "rnn",
        encoder_heads: int = 4,
        encoder_ff_size: int = 512,
        decoder_heads: int = 4,
        decoder_ff_size: int = 512,
    ) -> None:
        super().__init__()
        for side, kind in (("encoder", encoder_type), ("decoder", decoder_type)):
            if kind not in ARCHITECTURES:
                raise ValueError(f"model.{side}.type={kind!r}: choose one of {ARCHITECTURES}")
        if decoder_type == "rnn" and decoder_layers != encoder_layers:
            raise ValueError(
                f"decoder layers ({decoder_layers}) must equal encoder layers ({encoder_layers}): "
                "the decoder starts from the encoder's final state of each layer"
            )
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.src_embedding = nn.Embedding(src_vocab_size, embedding_size, padding_idx=pad_id)
        if encoder_type == "transformer":
            self.encoder = TransformerEncoder(
                embedding_size, hidden_size, encoder_layers, encoder_heads, encoder_ff_size, encoder_dropout
            )
        else:
            self.encoder = RecurrentEncoder(
                rnn_type, embedding_size, hidden_size, encoder_layers, bidirectional, encoder_dropout
            )
        if decoder_type == "transformer":
            self.decoder = TransformerDecoder(
                tgt_vocab_size,
                embedding_size,
                hidden_size,
                decoder_layers,
                decoder_heads,
                decoder_ff_size,
                decoder_dropout,
                pad_id,
            )
            return
        self.decoder = RecurrentDecoder(
            rnn_type,
            tgt_vocab_size,
            embedding_size,
            hidden_size,
            decoder_layers,
            decoder_dropout,
            build_attention(
                attention,
                hidden_size,
                hidden_size,
                attention_size or hidden_size,
                **(attention_options or {}),
            ),
            input_feeding=input_feeding,
            context=context,
            pad_id=pad_id,
        )

    @classmethod
    def from_config(
        cls,
        model_cfg: Any,
        src_vocab_size: int,
        tgt_vocab_size: int,
        pad_id: int = 0,
        bos_id: int = 2,
        eos_id: int = 3,
    ) -> EncoderDecoder:
        """Build from the ``model`` config node (``conf/model/*``)."""
        enc, dec = model_cfg.encoder, model_cfg.decoder
        return cls(
            src_vocab_size,
            tgt_vocab_size,
            embedding_size=model_cfg.embedding_size,
            hidden_size=model_cfg.hidden_size,
            rnn_type=enc.rnn_type,
            encoder_layers=enc.num_layers,
            bidirectional=enc.bidirectional,
            encoder_dropout=enc.dropout,
            decoder_layers=dec.num_layers,
            decoder_dropout=dec.dropout,
            attention=model_cfg.attention.name,
            attention_size=model_cfg.attention.get("size"),
            attention_options={
                key: model_cfg.attention.get(key) for key in ("score", "mode", "window", "reverse")
            },
            input_feeding=dec.input_feeding,
            context=model_cfg.context,
            pad_id=pad_id,
            bos_id=bos_id,
            eos_id=eos_id,
            encoder_type=enc.get("type", "rnn"),
            decoder_type=dec.get("type", "rnn"),
            encoder_heads=enc.get("heads", 4),
            encoder_ff_size=enc.get("ff_size", 512),
            decoder_heads=dec.get("heads", 4),
            decoder_ff_size=dec.get("ff_size", 512),
        )

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[Memory, DecoderState]:
        """``(B, S)`` ids → the decoder's memory and initial state."""
        outputs, final = self.encoder(self.src_embedding(src), src_lengths)  # (B, S, H)
        mask = src != self.pad_id  # (B, S)
        return self.decoder.prepare_memory(outputs, mask, final), self.decoder.init_state(final)

    def forward(
        self,
        src: Tensor,
        src_lengths: Tensor,
        targets_in: Tensor,
        teacher_forcing_ratio: float = 1.0,
        sample_feedback: bool = False,
        return_attention: bool = False,
        features: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Logits ``(B, T, V)`` for decoder inputs ``(B, T)`` (BOS-prefixed targets), and optionally attention.

        With ``features`` (teacher forcing only) the attentional vectors ``h̃`` ``(B, T, H)`` instead of logits,
        for a loss that applies the output layer itself (``training/chunked_loss.py``).
        """
        memory, state = self.encode(src, src_lengths)
        if teacher_forcing_ratio >= 1.0 and (self.fast_unroll or features):
            if self.fast_unroll and isinstance(self.decoder, RecurrentDecoder):
                out, weights = teacher_forced(
                    self.decoder,
                    targets_in,
                    memory,
                    state,
                    return_attention,
                    self.compile_step,
                    self.step_weights,
                    self.step_attention,
                    self.onednn_matmul,
                    self.fused_step,
                )
            else:
                out, weights = self.decoder.unroll(targets_in, memory, state, return_attention)
            return (out if features else self.decoder.logits(out)), weights
        if features:
            raise ValueError("features=True needs pure teacher forcing (teacher_forcing_ratio=1)")
        return self.decoder(
            targets_in,
            memory,
            state,
            teacher_forcing_ratio=teacher_forcing_ratio,
            sample_feedback=sample_feedback,
            return_attention=return_attention,
        )
