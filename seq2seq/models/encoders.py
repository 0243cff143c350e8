"""Recurrent encoders: tanh RNN (Elman), GRU (Cho et al. 2014) and LSTM (Hochreiter & Schmidhuber 1997).

The encoder reads the embedded source in one fused, packed cuDNN/oneDNN call and returns

* ``outputs`` — one vector per source position, ``(B, S, H)``: what attention reads;
* ``final`` — the encoder's final state, ``(L, B, H)`` per layer (a tuple ``(h, c)`` for LSTM): the
  fixed-length context vector of Sutskever et al. (2014) / Cho et al. (2014).

``H`` is always ``hidden_size``. A bidirectional encoder runs ``hidden_size // 2`` units per direction and
concatenates them (as OpenNMT does), so the context vector has the same size with or without
bidirectionality and ``model.hidden_size`` is literally the size of the bottleneck.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seq2seq.models import onednn
from seq2seq.models.gru_kernel import gru_layers

RNN_TYPES = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}

RecurrentState = Tensor | tuple[Tensor, Tensor]


def make_rnn(
    rnn_type: str, input_size: int, hidden_size: int, num_layers: int, dropout: float, **kwargs
) -> nn.RNNBase:
    """Build ``nn.RNN`` (tanh), ``nn.GRU`` or ``nn.LSTM`` with ``batch_first=True``."""
    if rnn_type not in RNN_TYPES:
        raise ValueError(
            f"unknown rnn_type {rnn_type!r}: choose one of {sorted(RNN_TYPES)} (model/encoder=...)"
        )
    extra = {"nonlinearity": "tanh"} if rnn_type == "rnn" else {}
    return RNN_TYPES[rnn_type](
        input_size,
        hidden_size,
        num_layers=num_layers,
        dropout=dropout if num_layers > 1 else 0.0,
        batch_first=True,
        **extra,
        **kwargs,
    )


class RecurrentEncoder(nn.Module):
    """Embedding → dropout → (bi)RNN over a packed batch.

    Args:
        rnn_type: ``rnn`` | ``gru`` | ``lstm``.
        embedding_size: size of the input embeddings ``E``.
        hidden_size: size ``H`` of each output vector and of the final state (split over directions).
        num_layers: stacked layers ``L``.
        bidirectional: read the source both ways (Bahdanau et al. 2015, §3.2).
        dropout: dropout on embeddings and between layers.

    Attributes:
        gru_kernel: a GRU on CPU runs through :func:`~seq2seq.models.gru_kernel.gru_layers` (the same maths, one
            autograd function per layer with its backward written out) instead of ``nn.GRU``'s packed call
            (``speed.gru_kernel``).
        onednn_matmul: that kernel's products over all steps through oneDNN (``speed.onednn_matmul``).
        compiled_kernels: that kernel's step loops as compiled operators (``speed.compiled_kernels``, already built).
    """

    gru_kernel: bool = True
    onednn_matmul: bool | int = onednn.preferred()
    compiled_kernels: bool = False

    def __init__(
        self,
        rnn_type: str,
        embedding_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if bidirectional and hidden_size % 2:
            raise ValueError(
                f"model.hidden_size={hidden_size} must be even for a bidirectional encoder "
                "(each direction gets hidden_size // 2 units)"
            )
        self.rnn_type = rnn_type
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        self.dropout = nn.Dropout(dropout)
        self.rnn = make_rnn(
            rnn_type,
            embedding_size,
            hidden_size // self.num_directions,
            num_layers,
            dropout,
            bidirectional=bidirectional,
        )

    def forward(self, embedded: Tensor, lengths: Tensor) -> tuple[Tensor, RecurrentState]:
        """Encode a padded batch.

        Args:
            embedded: ``(B, S, E)`` source embeddings, right-padded.
            lengths: ``(B,)`` true lengths (on any device).

        Returns:
            outputs ``(B, S, H)`` (zeros at padding) and the final state ``(L, B, H)`` (LSTM: ``(h, c)``).
        """
        cpu = embedded.device.type == "cpu"
        if self.gru_kernel and self.rnn_type == "gru" and cpu and not torch.is_autocast_enabled("cpu"):
            outputs, final = gru_layers(
                self.rnn, self.dropout(embedded), lengths, self.onednn_matmul, self.compiled_kernels
            )
        else:
            packed = pack_padded_sequence(
                self.dropout(embedded), lengths.cpu(), batch_first=True, enforce_sorted=False
            )
            packed_out, final = self.rnn(packed)
            outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=embedded.size(1))
        # outputs: (B, S, H)
        if self.rnn_type == "lstm":
            return outputs, (self._merge_directions(final[0]), self._merge_directions(final[1]))
        return outputs, self._merge_directions(final)

    def _merge_directions(self, state: Tensor) -> Tensor:
        """``(L * D, B, H / D)`` → ``(L, B, H)``: concatenate each layer's forward and backward final states."""
        if self.num_directions == 1:
            return state
        layers, batch = self.num_layers, state.size(1)
        state = state.view(layers, 2, batch, -1)  # (L, 2, B, H/2)
        return torch.cat([state[:, 0], state[:, 1]], dim=-1)  # (L, B, H)
