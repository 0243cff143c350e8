"""Model FLOPs of both systems, read from their module shapes, and the machine's dense matmul rate.

Model FLOPs count 2 per multiply–add of the matrix products on real (non-padding) tokens; a training update
costs 3× the forward pass (backward ≈ 2× forward; Kaplan et al. 2020, §2.1). Utilisation is achieved model
FLOP/s over the dense matmul FLOP/s of the same machine and threads (:func:`measure_matmul_flops`). Each
system's :class:`FlopProfile` is checked against torch's ``FlopCounterMode`` (:func:`counted_flops`).

Imports only the standard library and torch: JoeyNMT's virtualenv loads it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness import BatchShape


@dataclass(frozen=True)
class FlopProfile:
    """Forward FLOPs (2 per multiply–add) of an attentional RNN encoder–decoder, by what they scale with."""

    per_src_token: int
    per_tgt_token: int
    per_sentence: int
    per_src_tgt_pair: int

    def forward(self, shape: BatchShape) -> int:
        return (
            self.per_src_token * shape.src_tokens
            + self.per_tgt_token * shape.tgt_tokens
            + self.per_sentence * shape.sentences
            + self.per_src_tgt_pair * shape.src_tgt_pairs
        )

    def training(self, shape: BatchShape) -> int:
        """Forward + backward ≈ 3 × forward."""
        return 3 * self.forward(shape)


# input-to-hidden, hidden-to-hidden, and (LSTM with proj_size) hidden projection matrices
RECURRENT_WEIGHTS = ("weight_ih", "weight_hh", "weight_hr")


def rnn_token_macs(rnn: nn.Module) -> int:
    """Multiply–adds per token of a recurrence, from the shapes of its weight matrices.

    Every ``weight_ih*`` / ``weight_hh*`` matrix (all gates of one layer and direction stacked) multiplies one
    vector per token, so the count is the sum of their sizes. This holds for ``nn.RNN`` / ``nn.GRU`` /
    ``nn.LSTM`` (stacked, bidirectional), for stacks of ``nn.RNNCell`` / ``nn.GRUCell`` / ``nn.LSTMCell``
    (seq2seq's decoder) and for JoeyNMT's modules alike; biases and gate non-linearities are not counted.
    """
    macs = sum(
        p.numel()
        for name, p in rnn.named_parameters()
        if name.rsplit(".", 1)[-1].startswith(RECURRENT_WEIGHTS)
    )
    if macs == 0:
        raise ValueError(f"{type(rnn).__name__} has no weight_ih*/weight_hh* matrices to count")
    return macs


def _macs(layer: nn.Linear | None) -> int:
    return 0 if layer is None else layer.in_features * layer.out_features


def seq2seq_flop_profile(model: nn.Module) -> FlopProfile:
    """The profile of a :class:`seq2seq.models.seq2seq.EncoderDecoder` (any attention, any cell)."""
    decoder = model.decoder
    attention = decoder.attention
    memory = decoder.hidden_size
    keys = getattr(attention, "key_layer", None)
    if attention is None:
        pair = 0
    elif hasattr(attention, "energy_layer"):  # additive: vᵀ tanh(·) per position, then the context
        pair = attention.energy_layer.in_features + memory
    else:  # dot / general: qᵀ k per position, then the context
        pair = (keys.out_features if keys is not None else memory) + memory
    return FlopProfile(
        per_src_token=2 * (rnn_token_macs(model.encoder.rnn) + _macs(keys)),
        per_tgt_token=2
        * (
            rnn_token_macs(decoder.rnn)
            + _macs(getattr(attention, "query_layer", None))
            + _macs(decoder.output_layer)
            + _macs(decoder.generator)
        ),
        per_sentence=2 * _macs(decoder.bridge) * decoder.num_layers,
        per_src_tgt_pair=2 * pair,
    )


def joeynmt_flop_profile(model: nn.Module) -> FlopProfile:
    """The profile of a JoeyNMT 2.3 recurrent model (``RecurrentEncoder`` + ``RecurrentDecoder``)."""
    decoder = model.decoder
    attention = decoder.attention
    memory = model.encoder.output_size
    keys = attention.key_layer
    energy = getattr(attention, "energy_layer", None)  # Bahdanau; Luong scores with qᵀ W k
    pair = (energy.in_features if energy is not None else keys.out_features) + memory
    bridge = getattr(decoder, "bridge_layer", None)
    return FlopProfile(
        per_src_token=2 * (rnn_token_macs(model.encoder.rnn) + _macs(keys)),
        per_tgt_token=2
        * (
            rnn_token_macs(decoder.rnn)
            + _macs(getattr(attention, "query_layer", None))
            + _macs(decoder.att_vector_layer)
            + _macs(decoder.output_layer)
        ),
        per_sentence=2 * _macs(bridge) * decoder.num_layers,
        per_src_tgt_pair=2 * pair,
    )


def counted_flops(run: Callable[[], Any]) -> int:
    """FLOPs torch's ``FlopCounterMode`` counts while ``run()`` executes (to check a :class:`FlopProfile`)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        run()
    return int(counter.get_total_flops())


def measure_matmul_flops(
    size: int = 1024, seconds: float = 2.0, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> float:
    """Dense matmul FLOP/s: best of repeated ``size³`` products (this process's threads; or one GPU).

    On CPU the best of PyTorch's two float32 GEMMs, ``torch.mm`` (MKL) and oneDNN's (what
    ``speed.onednn_matmul`` uses; on AMD CPUs about twice MKL's rate), so that no system's utilisation is
    measured against the slower one.
    """
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    out = torch.empty(size, size, device=device, dtype=dtype)
    products = [lambda: torch.mm(a, b, out=out)]
    onednn = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if device == "cpu" and onednn is not None and torch.backends.mkldnn.is_available():
        products.append(lambda: onednn(a, b, None, "none", [], ""))

    def sync() -> None:
        if device != "cpu":
            torch.cuda.synchronize()

    best = 0.0
    for product in products:
        product()  # warm-up
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or best == 0.0:
            sync()
            start = time.perf_counter()
            for _ in range(4):
                product()
            sync()
            best = max(best, 4 * 2 * size**3 / (time.perf_counter() - start))
    return best


# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, FLOP/s; the MFU denominator on CUDA.
# Matched by substring of torch.cuda.get_device_name(); --gpu-peak-tflops overrides.
GPU_BF16_PEAKS = {
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,  # SXM ("NVIDIA H100 80GB HBM3")
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
}


def gpu_bf16_peak(name: str) -> float | None:
    """The data-sheet dense bf16 peak of the GPU called ``name``, None when unknown (e.g. V100: no bf16)."""
    for key, peak in GPU_BF16_PEAKS.items():
        if key in name:
            return peak
    return None
