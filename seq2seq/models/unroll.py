"""Fast teacher-forced unrolls of :class:`~seq2seq.models.decoder.RecurrentDecoder`: its step loop's maths, tested equal.

Under teacher forcing every decoder input ``y_{t-1}`` is known in advance, so what does not depend on the
previous step need not wait for it:

* **fused** — when no step reads the previous step's output except through the recurrent state (``attention=none``
  and Luong attention, both without input feeding), the recurrence is one fused RNN call per layer over the whole
  target (the oneDNN / cuDNN kernel ``nn.GRU`` uses, through ``torch._VF`` with the decoder's own cell weights);
  attention, ``h̃ = tanh(W_c [h; c])`` and the output layer then run once over all ``T`` steps.
* **hoisted** — otherwise (Bahdanau's query is the previous state; input feeding reads the previous ``h̃``) the
  loop stays, but the embedding columns of the first layer's input projection (``W_ie y_{t-1} + b_i`` for all
  ``t``: one ``(T·B, E) × (E, G)`` product) and the padding mask are computed once; with one layer the
  recurrent projection ``W_hh s_{i-1}`` and Bahdanau's query projection ``W s_{i-1}`` are one product; the cell
  maths is written out on the gates (PyTorch's GRU / LSTM / tanh-RNN equations, ``torch.nn`` docs) so nothing is
  copied into a concatenated input. With ``speed.step_weights`` the per-step products read their weights
  through :class:`~seq2seq.models.step_weights.StepWeight`: each weight's gradient is one product over all steps;
  with ``speed.step_attention`` an additive read (Bahdanau's, or Luong's ``concat`` queried with the step's new
  state) goes through :class:`~seq2seq.models.step_attention.StepAttention`.

With ``speed.compile`` the hoisted step goes through ``torch.compile`` (inductor on CPU; on CUDA inductor's
kernels): fewer, fused kernels per step. Scheduled sampling (ratio < 1) feeds the model's own tokens and keeps
the decoder's step loop.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import _VF, Tensor

from seq2seq.models import attention_kernel, onednn
from seq2seq.models.attention import AdditiveScore, masked_read
from seq2seq.models.decoder import DecoderState, Memory, RecurrentDecoder, StackedCell, cell_from_gates
from seq2seq.models.encoders import RecurrentState
from seq2seq.models.fused_step import FusedStep
from seq2seq.models.fused_step import loop as compiled_loop
from seq2seq.models.step_attention import StepAttention
from seq2seq.models.step_weights import StepWeight

_FUSED = {"rnn": _VF.rnn_tanh, "gru": _VF.gru, "lstm": _VF.lstm}


def can_fuse(decoder: RecurrentDecoder) -> bool:
    """True when no step's input depends on the previous step's output (only on the recurrent state)."""
    bahdanau = decoder.attention is not None and decoder.attention.query_is_previous_state
    return not decoder.input_feeding and not bahdanau


def teacher_forced(
    decoder: RecurrentDecoder,
    targets_in: Tensor,
    memory: Memory,
    state: DecoderState,
    return_attention: bool = False,
    compile: bool = False,
    step_weights: bool = True,
    step_attention: bool = True,
    use_onednn: bool | int = True,
    fused_step: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Attentional vectors ``h̃`` ``(B, T, H)`` for decoder inputs ``(B, T)`` (BOS first), and attention ``(B, T, S)``.

    Equal (within float rounding) to :meth:`RecurrentDecoder.forward` with ratio 1 before its output layer.
    ``compile``: the hoisted loop's step through ``torch.compile`` (:func:`compiled_step`). ``step_weights``: the
    hoisted loop's weight gradients each as one product over all steps (:class:`StepWeight`; not with ``compile``
    or under autocast). ``step_attention``: Bahdanau's read in that loop through :class:`StepAttention` (same
    conditions, and ``tanh_as_sigmoid``). ``use_onednn``: the step weights' products through oneDNN on CPU.
    ``fused_step``: with both of those, a one-layer GRU's Bahdanau step as one autograd function (:class:`FusedStep`).
    """
    if can_fuse(decoder):
        return fused_unroll(decoder, targets_in, memory, state, return_attention)
    return hoisted_unroll(
        decoder,
        targets_in,
        memory,
        state,
        return_attention,
        compile,
        step_weights,
        step_attention,
        use_onednn,
        fused_step,
    )


def fused_recurrence(rnn: StackedCell, inputs: Tensor, hidden: RecurrentState) -> Tensor:
    """The cell stack over a whole sequence: inputs ``(B, T, I)``, initial hidden ``(L, B, H)`` → top outputs ``(B, T, H)``.

    One fused call per layer with the cells' own weights (``nn.GRUCell`` and ``nn.GRU`` share the gate layout),
    dropout between layers as in :class:`StackedCell`.
    """
    rnn_type = "lstm" if rnn.is_lstm else ("gru" if isinstance(rnn.cells[0], torch.nn.GRUCell) else "rnn")
    outputs = inputs
    for layer, cell in enumerate(rnn.cells):
        if layer > 0:
            outputs = rnn.dropout(outputs)
        weights = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
        if rnn.is_lstm:
            initial = (hidden[0][layer : layer + 1], hidden[1][layer : layer + 1])
        else:
            initial = hidden[layer : layer + 1]
        # (input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
        outputs = _FUSED[rnn_type](outputs, initial, weights, True, 1, 0.0, False, False, True)[0]
    return outputs


def fused_unroll(
    decoder: RecurrentDecoder, targets_in: Tensor, memory: Memory, state: DecoderState, return_attention: bool
) -> tuple[Tensor, Tensor | None]:
    """The recurrence in one fused call per layer, then attention and ``W_c`` over all steps."""
    embedded = decoder.embedding(targets_in)  # (B, T, E)
    steps = embedded.size(1)
    if decoder.context_every_step:
        fixed = memory.context.unsqueeze(1).expand(-1, steps, -1)  # (B, T, H)
        embedded = torch.cat([embedded, fixed], dim=-1)
    rnn_out = fused_recurrence(decoder.rnn, embedded, state.hidden)  # (B, T, H)
    weights = None
    if decoder.attention is not None:
        context, weights = decoder.attention.forward_all(rnn_out, memory.keys, memory.outputs, memory.mask)
        features = torch.cat([rnn_out, context], dim=-1)
    elif decoder.context_every_step:
        features = torch.cat([rnn_out, fixed], dim=-1)
    else:
        features = rnn_out
    attentional = torch.tanh(decoder.output_layer(features))  # (B, T, H)
    return attentional, (weights if return_attention else None)


def hoisted_unroll(
    decoder: RecurrentDecoder,
    targets_in: Tensor,
    memory: Memory,
    state: DecoderState,
    return_attention: bool,
    compile: bool = False,
    step_weights: bool = True,
    step_attention: bool = True,
    use_onednn: bool | int = True,
    fused_step: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """The step loop with the input-independent work done once (module docstring)."""
    rnn, attention = decoder.rnn, decoder.attention
    first = rnn.cells[0]
    embedded = decoder.embedding(targets_in.t())  # (T, B, E): one contiguous (B, E) slice per step
    size_e = embedded.size(-1)
    # (T, B, G); the embedding's columns of W_ih packed, so that oneDNN can take the product (onednn.py)
    w_embedded = first.weight_ih[:, :size_e].contiguous() if use_onednn else first.weight_ih[:, :size_e]
    pre = onednn.linear(embedded, w_embedded, first.bias_ih, use_onednn)
    # (2H or H, G): input feeding and/or context columns, packed (oneDNN's fast kernels need packed operands)
    w_rest = first.weight_ih[:, size_e:].contiguous().t()
    bahdanau = attention is not None and attention.query_is_previous_state
    # One layer: s_{i-1} feeds both W_hh and Bahdanau's W; one product for both.
    if bahdanau and len(rnn.cells) == 1 and isinstance(attention, AdditiveScore):
        w_h = torch.cat([first.weight_hh, attention.query_layer.weight]).t()  # (H, G + A)
        b_h = torch.cat([first.bias_hh, first.bias_hh.new_zeros(attention.query_layer.out_features)])
    else:
        w_h, b_h = first.weight_hh.t(), first.bias_hh
    w_out, b_out = decoder.output_layer.weight.t(), decoder.output_layer.bias  # W_c as (2H or H, H)
    deferred = torch.is_grad_enabled() and not compile and not torch.is_autocast_enabled(pre.device.type)
    one_gru = decoder.rnn_type == "gru" and len(rnn.cells) == 1
    additive = isinstance(attention, AdditiveScore) and attention.tanh_as_sigmoid
    fusable = (
        fused_step and one_gru and bahdanau and additive and deferred and step_weights and step_attention
    )
    invalid = ~memory.mask  # (B, S)
    if fusable and attention_kernel.active(
        attention.compiled_kernels, memory.keys, attention.energy_layer.weight
    ):
        # the whole loop as one autograd function of compiled operators (fused_step.py)
        outs, weights = compiled_loop(
            pre,
            state.hidden[0],
            state.attentional if decoder.input_feeding else None,
            b_h,
            b_out,
            w_h,
            w_rest,
            w_out,
            memory.keys,
            memory.outputs,
            attention.energy_layer.weight,
            invalid,
            use_onednn,
        )
        return outs.transpose(0, 1), weights.transpose(0, 1) if return_attention else None
    if step_weights and deferred:
        # each weight's gradient as one product over all steps (step_weights.py), not T thin ones
        w_rest, w_h, w_out = (StepWeight(w, use_onednn) for w in (w_rest, w_h, w_out))
    hs = list(state.hidden[0] if rnn.is_lstm else state.hidden)  # per layer (B, H)
    cs = list(state.hidden[1]) if rnn.is_lstm else [None] * len(hs)
    reads = None
    if step_attention and deferred and additive:
        reads = StepAttention(
            memory.keys,
            memory.outputs,
            invalid,
            attention.energy_layer.weight,
            attention.recompute_gates,
            attention.compiled_kernels,
        )
    attentional = state.attentional
    if fusable:  # (with step weights and the step attention read made above)
        return _fused_loop(
            FusedStep(w_h, w_rest, w_out, reads, b_h, b_out, use_onednn),
            pre,
            hs[0],
            attentional if decoder.input_feeding else None,
            return_attention,
        )
    step = compiled_step() if compile else hoisted_step
    attentionals, all_weights = [], []
    # unbind, not pre[t]: one backward node stacking the steps' gradients, where each index's backward would
    # allocate a zero (T, B, G) tensor and add it into the others
    for t, pre_t in enumerate(pre.unbind(0)):
        attentional, weights = step(
            decoder,
            pre_t,
            w_rest,
            w_h,
            b_h,
            w_out,
            b_out,
            hs,
            cs,
            attentional,
            memory,
            invalid,
            state.step + t,
            reads,
        )
        attentionals.append(attentional)
        if return_attention and weights is not None:
            all_weights.append(weights)
    weights = torch.stack(all_weights, dim=1) if all_weights else None
    return torch.stack(attentionals, dim=1), weights


def _fused_loop(
    plan: FusedStep, pre: Tensor, hidden: Tensor, attentional: Tensor | None, return_attention: bool
) -> tuple[Tensor, Tensor | None]:
    """The hoisted loop with each step one autograd function (:mod:`seq2seq.models.fused_step`)."""
    attentionals, all_weights = [], []
    for pre_t in pre.unbind(0):
        hidden, out, weights = plan.step(pre_t, hidden, attentional)
        attentional = out if attentional is not None else None
        attentionals.append(out)
        if return_attention:
            all_weights.append(weights)
    weights = torch.stack(all_weights, dim=1) if all_weights else None
    return torch.stack(attentionals, dim=1), weights


def hoisted_step(
    decoder: RecurrentDecoder,
    pre: Tensor,
    w_rest: Tensor | StepWeight,
    w_h: Tensor | StepWeight,
    b_h: Tensor,
    w_out: Tensor | StepWeight,
    b_out: Tensor,
    hs: list[Tensor],
    cs: list[Tensor | None],
    attentional: Tensor,
    memory: Memory,
    invalid: Tensor,
    step: int,
    reads: StepAttention | None = None,
) -> tuple[Tensor, Tensor | None]:
    """One step of :func:`hoisted_unroll`: updates ``hs`` / ``cs`` (per layer) in place, returns ``h̃`` and weights.

    ``pre`` ``(B, G)`` is the embedding part of the first layer's input gates; ``w_h`` / ``b_h`` the first layer's
    recurrent projection, with Bahdanau's query projection appended when they share their input; ``w_out`` /
    ``b_out`` the output layer ``W_c``. The weights are tensors ``(in, out)`` or :class:`StepWeight` s. ``reads``:
    the additive attention's memory (Bahdanau's or Luong's ``concat``) as a :class:`StepAttention`, or None.
    """
    rnn, attention = decoder.rnn, decoder.attention
    bahdanau = attention is not None and attention.query_is_previous_state
    rest, weights, context = [], None, None
    if decoder.input_feeding:
        rest.append(attentional)
    projected = _product(hs[0], w_h, b_h)  # (B, G) or (B, G + A)
    gates = rnn.cells[0].weight_hh.size(0)
    gates_h, query = projected.split([gates, projected.size(1) - gates], dim=1)  # query: (B, A) or (B, 0)
    if bahdanau and reads is not None:
        context, weights = reads.read(query if query.size(1) > 0 else attention.query_layer(hs[-1]))
    elif bahdanau:
        if query.size(1) > 0:
            scores = attention.score_projected(query, memory.keys)
        else:
            scores = attention.score(hs[-1], memory.keys)
        context, weights = masked_read(scores, invalid, memory.outputs)
    elif decoder.context_every_step:
        context = memory.context
    if context is not None:
        rest.append(context)
    gates_x = _product(rest[0] if len(rest) == 1 else torch.cat(rest, dim=-1), w_rest, pre)
    hs[0], cs[0] = cell_from_gates(decoder.rnn_type, gates_x, gates_h, hs[0], cs[0])
    out = hs[0]
    for layer in range(1, len(hs)):
        cell = rnn.cells[layer]
        if rnn.is_lstm:
            hs[layer], cs[layer] = cell(rnn.dropout(out), (hs[layer], cs[layer]))
        else:
            hs[layer] = cell(rnn.dropout(out), hs[layer])
        out = hs[layer]
    if attention is not None and not bahdanau:
        if reads is not None:  # Luong concat: the query is the step's new state
            context, weights = reads.read(attention.query_layer(out))
        else:
            context, weights = attention(out, memory.keys, memory.outputs, memory.mask, step=step)
    features = out if context is None else torch.cat([out, context], dim=-1)
    return torch.tanh(_product(features, w_out, b_out)), weights  # (B, H)


def _product(x: Tensor, weight: Tensor | StepWeight, add: Tensor) -> Tensor:
    """``add + x @ weight``, through the step weight when there is one."""
    return weight.mm(x, add) if isinstance(weight, StepWeight) else torch.addmm(add, x, weight)


_COMPILED: dict[str, Any] = {}


def compiled_step() -> Any:
    """:func:`hoisted_step` through ``torch.compile`` (compiled at its first call, shapes dynamic); one per process.

    The first call's wall time, compilation included, is kept in :data:`COMPILE_SECONDS` for the caller to report.
    """
    if "step" not in _COMPILED:
        compiled = torch.compile(hoisted_step, dynamic=True)

        def timed(*args: Any) -> Any:
            if "seconds" in _COMPILED:
                return compiled(*args)
            start = time.perf_counter()
            out = compiled(*args)
            _COMPILED["seconds"] = time.perf_counter() - start
            return out

        _COMPILED["step"] = timed
    return _COMPILED["step"]


def compile_seconds() -> float | None:
    """Wall time of the compiled step's first call (tracing and compilation included), None before it."""
    return _COMPILED.get("seconds")
