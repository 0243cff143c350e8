"""The recurrent decoder: one step (``forward_step``) and the teacher-forced unroll that reuses it.

One step, for each attention placement (``E`` embeddings, ``H`` hidden, ``S`` source length):

* **Bahdanau** (2015): ``c_i = attend(s_{i-1})``; ``s_i = RNN([y_{i-1}; c_i], s_{i-1})``;
  ``h̃_i = tanh(W_c [s_i; c_i])``.
* **Luong** (2015): ``h_t = RNN(y_{t-1}, h_{t-1})``; ``c_t = attend(h_t)``; ``h̃_t = tanh(W_c [c_t; h_t])``.
* **none** — the fixed-context model: the decoder state starts from the encoder's final state
  (Sutskever et al. 2014, ``context=init``) and, with ``context=every_step``, that same vector ``c``
  is also fed to every step and to the output layer (Cho et al. 2014): ``s_i = RNN([y_{i-1}; c], s_{i-1})``,
  ``h̃_i = tanh(W_c [s_i; c])``. Nothing else of the source reaches the decoder.

With ``input_feeding`` (Luong et al. 2015, §3.3) the previous attentional vector ``h̃_{i-1}`` is
concatenated to the RNN input. The output distribution is ``softmax(W_s h̃_i)``.

Search (greedy, beam) lives in ``search.py`` and calls :meth:`RecurrentDecoder.forward_step`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seq2seq.models import onednn
from seq2seq.models.attention import Attention
from seq2seq.models.encoders import RecurrentState

CONTEXT_MODES = ("init", "every_step")
CELLS = {"rnn": nn.RNNCell, "gru": nn.GRUCell, "lstm": nn.LSTMCell}


def cell_from_gates(rnn_type: str, gates_x: Tensor, gates_h: Tensor, hidden: Tensor, cell: Tensor | None):
    """One cell update from its input gates ``W_ih x + b_ih`` and recurrent gates ``W_hh h + b_hh`` ``(B, G)``.

    Returns the new ``h`` and (LSTM) ``c``; the equations of ``nn.GRUCell`` / ``nn.LSTMCell`` / ``nn.RNNCell``.
    """
    if rnn_type == "gru":
        # split, not slices: one backward node that concatenates the parts' gradients, where each slice's
        # backward would allocate a zero tensor of the whole and add into it
        size = hidden.size(-1)
        rz_x, n_x = gates_x.split([2 * size, size], dim=1)
        rz_h, n_h = gates_h.split([2 * size, size], dim=1)
        r, z = torch.sigmoid(rz_x + rz_h).chunk(2, dim=1)
        n = torch.tanh(n_x + r * n_h)
        return n + z * (hidden - n), None  # (1 - z) n + z h; dtypes may differ under autocast
    if rnn_type == "lstm":
        i, f, g, o = (gates_x + gates_h).chunk(4, dim=1)
        c = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    return torch.tanh(gates_x + gates_h), None


class StackedCell(nn.Module):
    """``num_layers`` RNN cells stepped one token at a time: the decoder's recurrence.

    The same maths (and the same parameter initialisation) as a one-step call of a stacked ``nn.RNN`` /
    ``nn.GRU`` / ``nn.LSTM`` (tested), without the ``(B, 1, ·)`` sequence dimension. Its speed on CPU is
    within a few percent of the fused call (docs/performance.md). Without autograd (decoding) its products go
    through oneDNN on CPU unless ``onednn_matmul`` is off (:mod:`seq2seq.models.onednn`; ``speed.onednn_matmul``).
    """

    onednn_matmul: bool | int = onednn.preferred()

    def __init__(
        self, rnn_type: str, input_size: int, hidden_size: int, num_layers: int, dropout: float
    ) -> None:
        super().__init__()
        if rnn_type not in CELLS:
            raise ValueError(
                f"unknown rnn_type {rnn_type!r}: choose one of {sorted(CELLS)} (model/encoder=...)"
            )
        self.rnn_type, self.is_lstm = rnn_type, rnn_type == "lstm"
        self.cells = nn.ModuleList(
            CELLS[rnn_type](input_size if layer == 0 else hidden_size, hidden_size)
            for layer in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout)  # between layers, as in nn.RNNBase

    def forward(self, inputs: Tensor, hidden: RecurrentState) -> tuple[Tensor, RecurrentState]:
        """One step: inputs ``(B, I)``, hidden ``(L, B, H)`` (LSTM: ``(h, c)``) → top output ``(B, H)``, new hidden."""
        outputs, cells = [], []
        fast = not torch.is_grad_enabled()
        for layer, cell in enumerate(self.cells):
            if layer > 0:
                inputs = self.dropout(inputs)
            h, c = (hidden[0][layer], hidden[1][layer]) if self.is_lstm else (hidden[layer], None)
            if fast and onednn.active(self.onednn_matmul, inputs, h, cell.weight_ih, cell.weight_hh):
                gates_x = onednn.linear(inputs, cell.weight_ih, cell.bias_ih)
                gates_h = onednn.linear(h, cell.weight_hh, cell.bias_hh)
                inputs, c = cell_from_gates(self.rnn_type, gates_x, gates_h, h, c)
            elif self.is_lstm:
                inputs, c = cell(inputs, (h, c))
            else:
                inputs = cell(inputs, h)
            if self.is_lstm:
                cells.append(c)
            outputs.append(inputs)
        h = outputs[0].unsqueeze(0) if len(outputs) == 1 else torch.stack(outputs)  # (L, B, H)
        return inputs, ((h, torch.stack(cells)) if self.is_lstm else h)


@dataclass
class Memory:
    """What the decoder may read of the source, prepared once per batch.

    Attributes:
        outputs: ``(B, S, H)`` encoder outputs (attention values); unused by the fixed-context model.
        keys: ``(B, S, K)`` projected keys, or None without attention.
        mask: ``(B, S)`` True at real source tokens.
        context: ``(B, H)`` the fixed context vector (top layer of the encoder's final state).
    """

    outputs: Tensor
    keys: Tensor | None
    mask: Tensor
    context: Tensor

    def index_select(self, index: Tensor) -> Memory:
        """Reorder/expand along the batch dimension (beam search)."""
        return Memory(
            self.outputs.index_select(0, index),
            None if self.keys is None else self.keys.index_select(0, index),
            self.mask.index_select(0, index),
            self.context.index_select(0, index),
        )


@dataclass
class DecoderState:
    """Recurrent state ``(L, B, H)`` (LSTM: ``(h, c)``), the last attentional vector ``h̃`` ``(B, H)`` and the
    number of steps taken (local attention's monotonic position)."""

    hidden: RecurrentState
    attentional: Tensor
    step: int = 0

    def index_select(self, index: Tensor) -> DecoderState:
        hidden = (
            tuple(h.index_select(1, index) for h in self.hidden)
            if isinstance(self.hidden, tuple)
            else self.hidden.index_select(1, index)
        )
        return DecoderState(hidden, self.attentional.index_select(0, index), self.step)


def top_layer(hidden: RecurrentState) -> Tensor:
    """The last layer's hidden state ``(B, H)`` (for LSTM, of ``h``)."""
    return (hidden[0] if isinstance(hidden, tuple) else hidden)[-1]


class RecurrentDecoder(nn.Module):
    """Embedding, bridge from the encoder's final state, RNN step with optional attention, output layer.

    ``onednn_matmul``: its output layers' products through oneDNN on CPU (:mod:`seq2seq.models.onednn`).
    """

    onednn_matmul: bool | int = onednn.preferred()

    def __init__(
        self,
        rnn_type: str,
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        num_layers: int,
        dropout: float,
        attention: Attention | None,
        input_feeding: bool = True,
        context: str = "every_step",
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        if context not in CONTEXT_MODES:
            raise ValueError(f"model.context={context!r}: choose one of {CONTEXT_MODES}")
        self.rnn_type = rnn_type
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.attention = attention
        self.input_feeding = input_feeding
        self.context_every_step = attention is None and context == "every_step"
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=pad_id)
        self.bridge = nn.Linear(hidden_size, hidden_size)  # encoder final state -> initial decoder state
        # Which vectors of size H enter the RNN step besides the embedding, and the output layer besides s_i.
        reads_context = attention is not None or self.context_every_step
        rnn_input = embedding_size + hidden_size * (int(input_feeding) + int(self._context_before_rnn))
        self.rnn = StackedCell(rnn_type, rnn_input, hidden_size, num_layers, dropout)
        self.output_layer = nn.Linear(hidden_size * (1 + int(reads_context)), hidden_size)  # W_c
        self.dropout = nn.Dropout(dropout)
        self.generator = nn.Linear(hidden_size, vocab_size)  # W_s

    @property
    def _context_before_rnn(self) -> bool:
        """Bahdanau attention and the Cho-style fixed context enter the RNN input."""
        return self.context_every_step or (
            self.attention is not None and self.attention.query_is_previous_state
        )

    def init_state(self, encoder_final: RecurrentState) -> DecoderState:
        """``s_0 = tanh(W_b h_enc)`` per layer; ``h̃_0 = 0``."""
        if isinstance(encoder_final, tuple):
            if self.rnn_type == "lstm":
                hidden = tuple(torch.tanh(self.bridge(state)) for state in encoder_final)
            else:
                hidden = torch.tanh(self.bridge(encoder_final[0]))
        else:
            hidden = torch.tanh(self.bridge(encoder_final))
            if self.rnn_type == "lstm":
                hidden = (hidden, torch.zeros_like(hidden))
        batch = top_layer(hidden).size(0)
        return DecoderState(hidden, top_layer(hidden).new_zeros(batch, self.hidden_size))

    def prepare_memory(self, outputs: Tensor, mask: Tensor, encoder_final: RecurrentState) -> Memory:
        """Precompute attention keys once per batch; take the fixed context from the final state."""
        keys = None if self.attention is None else self.attention.project_keys(outputs)
        return Memory(outputs, keys, mask, top_layer(encoder_final))

    def forward_step(
        self, prev_embedded: Tensor, state: DecoderState, memory: Memory
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One decoder step.

        Args:
            prev_embedded: ``(B, E)`` embedding of the previous output token.
            state: the state after the previous step.
            memory: the prepared source.

        Returns:
            ``h̃`` ``(B, H)`` (feed to :attr:`generator` for logits), the new state, attention weights ``(B, S)`` or None.
        """
        inputs = [prev_embedded]
        if self.input_feeding:
            inputs.append(state.attentional)
        weights = None
        context = None
        if self.attention is not None and self.attention.query_is_previous_state:
            context, weights = self.attention(
                top_layer(state.hidden), memory.keys, memory.outputs, memory.mask, step=state.step
            )
        elif self.context_every_step:
            context = memory.context
        if context is not None:
            inputs.append(context)
        rnn_out, hidden = self.rnn(torch.cat(inputs, dim=-1), state.hidden)  # (B, H)
        if self.attention is not None and not self.attention.query_is_previous_state:
            context, weights = self.attention(
                rnn_out, memory.keys, memory.outputs, memory.mask, step=state.step
            )
        features = rnn_out if context is None else torch.cat([rnn_out, context], dim=-1)
        attentional = torch.tanh(self._linear(self.output_layer, features))  # (B, H)
        return attentional, DecoderState(hidden, attentional, state.step + 1), weights

    def logits(self, attentional: Tensor) -> Tensor:
        """``(..., H)`` → ``(..., V)``."""
        return self._linear(self.generator, self.dropout(attentional))

    def _linear(self, layer: nn.Linear, x: Tensor) -> Tensor:
        return onednn.linear(x, layer.weight, layer.bias, self.onednn_matmul)

    def forward(
        self,
        targets_in: Tensor,
        memory: Memory,
        state: DecoderState,
        teacher_forcing_ratio: float = 1.0,
        sample_feedback: bool = False,
        return_attention: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Unroll over a target prefix (BOS y_1 … y_{T-1}).

        With ``teacher_forcing_ratio`` < 1, each step of each sentence feeds the ground-truth token with that
        probability and otherwise the model's own previous prediction (argmax, or a sample when
        ``sample_feedback``) — scheduled sampling, Bengio et al. (2015). The first input is always BOS.

        Args:
            targets_in: ``(B, T)`` decoder inputs, starting with BOS.

        Returns:
            logits ``(B, T, V)`` and, if asked, attention weights ``(B, T, S)`` (None without attention).
        """
        if teacher_forcing_ratio >= 1.0:
            attentional, weights = self.unroll(targets_in, memory, state, return_attention)
            return self.logits(attentional), weights
        steps = targets_in.size(1)
        embedded = self.embedding(targets_in)  # (B, T, E)
        all_weights, step_logits = [], []
        prev = embedded[:, 0]
        for t in range(steps):
            attentional, state, weights = self.forward_step(prev, state, memory)
            if return_attention and weights is not None:
                all_weights.append(weights)
            logits = self.logits(attentional)  # (B, V)
            step_logits.append(logits)
            if t + 1 < steps:
                prev = self._mixed_input(
                    logits, targets_in[:, t + 1], teacher_forcing_ratio, sample_feedback, generator
                )
        weights = torch.stack(all_weights, dim=1) if all_weights else None  # (B, T, S)
        return torch.stack(step_logits, dim=1), weights

    def unroll(
        self, targets_in: Tensor, memory: Memory, state: DecoderState, return_attention: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced step loop: attentional vectors ``h̃`` ``(B, T, H)`` and attention ``(B, T, S)`` or None.

        The reference for the fast unrolls of ``unroll.py``, which compute the same.
        """
        embedded = self.embedding(targets_in)  # (B, T, E)
        attentionals, all_weights = [], []
        for t in range(embedded.size(1)):
            attentional, state, weights = self.forward_step(embedded[:, t], state, memory)
            attentionals.append(attentional)
            if return_attention and weights is not None:
                all_weights.append(weights)
        weights = torch.stack(all_weights, dim=1) if all_weights else None  # (B, T, S)
        return torch.stack(attentionals, dim=1), weights

    def _mixed_input(
        self,
        logits: Tensor,
        gold: Tensor,
        ratio: float,
        sample: bool,
        generator: torch.Generator | None,
    ) -> Tensor:
        """Embed, per sentence, the gold token with probability ``ratio`` and the model's own otherwise."""
        with torch.no_grad():
            if sample:
                probs = torch.softmax(logits.float(), dim=-1)
                own = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            else:
                own = logits.max(dim=-1).indices  # the argmax; torch's CPU max is ~3× faster than argmax
            coin = torch.rand(gold.shape, device=gold.device, generator=generator)
            chosen = torch.where(coin < ratio, gold, own)  # (B,)
        return self.embedding(chosen)
