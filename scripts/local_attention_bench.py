"""Local attention, windowed against full-matrix: forward + backward time of its two reads.

For each source length ``S`` (``T = S`` target steps): the windowed read (``read_window``, the ``2D + 1``
gathered positions of each step: O(T·D)) against the full masked matrix (``read_full``: O(T·S)), both from the
same queries, encoder outputs and predicted positions, on the CPU. Prints a Markdown table (median of
``--repeats`` timed runs after one warm-up run). ``forward_all`` reads the window for ``concat`` only
(``local_attention.py:WINDOWED_SCORES``).

    python scripts/local_attention_bench.py --threads 1
    python scripts/local_attention_bench.py --lengths 50 200 --score concat
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from seq2seq.models.local_attention import LocalAttention


def time_read(
    attention: LocalAttention, read: str, batch: int, length: int, hidden: int, repeats: int
) -> float:
    """Median seconds of one forward + backward of ``read`` (``read_window`` | ``read_full``)."""
    torch.manual_seed(0)
    queries = torch.randn(batch, length, hidden, requires_grad=True)
    memory = torch.randn(batch, length, hidden, requires_grad=True)
    mask = torch.ones(batch, length, dtype=torch.bool)
    seconds = []
    for _ in range(repeats + 1):  # the first run warms up
        start = time.perf_counter()
        centre = attention.aligned_position(queries, mask.sum(-1))
        context, weights = getattr(attention, read)(
            queries, attention.project_keys(memory), memory, mask, centre
        )
        (context.sum() + weights.sum()).backward()
        seconds.append(time.perf_counter() - start)
        queries.grad = memory.grad = None
        attention.zero_grad()
    return statistics.median(seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 200, 400], help="S (and T = S)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--window", type=int, default=10, help="D")
    parser.add_argument("--score", default="general", choices=["dot", "general", "concat"])
    parser.add_argument("--mode", default="p", choices=["p", "m"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    attention = LocalAttention(args.hidden, args.hidden, args.hidden, args.score, args.mode, args.window)
    print(
        f"B={args.batch} H={args.hidden} D={args.window} score={args.score} mode={args.mode} "
        f"threads={args.threads} torch={torch.__version__}, forward + backward, median of {args.repeats}\n"
    )
    print("| S = T | full matrix (ms) | window (ms) | speed-up |")
    print("|---:|---:|---:|---:|")
    for length in args.lengths:
        full, window = (
            time_read(attention, read, args.batch, length, args.hidden, args.repeats)
            for read in ("read_full", "read_window")
        )
        print(f"| {length} | {full * 1e3:.1f} | {window * 1e3:.1f} | {full / window:.2f}× |")


if __name__ == "__main__":
    main()
