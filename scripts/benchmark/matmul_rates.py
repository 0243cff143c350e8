"""MKL's and oneDNN's float32 rates for the products of this project's benchmark model (``speed.onednn_matmul``).

    .venv/bin/python scripts/benchmark/matmul_rates.py [--threads 2] [--rounds 3]

Each product ``(M × K) · (K × N)`` is timed as PyTorch computes it by default (``torch.mm``, MKL's ``sgemm`` on
x86) and as :mod:`seq2seq.models.onednn` computes it (oneDNN), the best of ``--rounds`` timings of a few calls
each, alternating the two. Shapes: the Bible model's (hidden 288, vocabulary 8000, about 40 sentences and
1,050 target tokens per update): a decoding step's output layer at 8 and 40 sentences, a training step's GRU
gates, the chunked loss's logits, input gradient and weight gradient, and a step weight's gradient over all steps.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from seq2seq.models import onednn  # noqa: E402

SHAPES = [  # (what, M, K, N, how): how = "xw" for x Wᵀ, "gw" for ∂L/∂y W, "tn" for ∂L/∂yᵀ x
    ("decoding: output layer, 8 sentences", 8, 288, 8000, "xw"),
    ("decoding: output layer, 40 sentences", 40, 288, 8000, "xw"),
    ("training step: GRU gates W [h̃; c]", 40, 864, 864, "xw"),
    ("training step: ∂L/∂x of those gates", 40, 864, 864, "gw"),
    ("loss: logits of 1,050 tokens", 1050, 288, 8000, "xw"),
    ("loss: ∂L/∂x", 1050, 8000, 288, "gw"),
    ("loss: ∂L/∂W (inner: 1,050 tokens)", 8000, 1050, 288, "tn"),
    ("step weight: ∂L/∂W over all steps", 864, 1050, 864, "tn"),
]


def best_seconds(run, rounds: int, calls: int = 10) -> float:
    run()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            run()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"{args.threads} threads; GFLOP/s, best of {args.rounds}\n")
    print("| product | M × K × N | MKL (torch.mm) | oneDNN | oneDNN / MKL |")
    print("|---|---|---:|---:|---:|")
    for what, m, k, n, how in SHAPES:
        if how == "xw":  # x (M, K), W (N, K)
            x, w = torch.randn(m, k), torch.randn(n, k)
            runs = (partial(torch.mm, x, w.t()), partial(onednn.linear, x, w))
        elif how == "gw":  # ∂L/∂y (M, K), W (K, N)
            g, w = torch.randn(m, k), torch.randn(k, n)
            runs = (partial(torch.mm, g, w), partial(onednn.mm, g, w))
        else:  # a (K, M), b (K, N): aᵀ b
            a, b = torch.randn(k, m), torch.randn(k, n)
            runs = (partial(torch.mm, a.t(), b), partial(onednn.mm_tn, a, b))
        rates = [2 * m * k * n / best_seconds(run, args.rounds) / 1e9 for run in runs]
        print(f"| {what} | {m} × {k} × {n} | {rates[0]:.0f} | {rates[1]:.0f} | {rates[1] / rates[0]:.2f}× |")


if __name__ == "__main__":
    main()
