"""What each speed lever changes in one training update, counted rather than timed (docs/performance.md).

    .venv/bin/python scripts/benchmark/levers.py [--vocab 8000] [--hidden 288] [--batch 40] [--length 30]

For each decoder (Bahdanau with input feeding, Luong general and the fixed-context model without it) and each
lever setting (step loop; ``speed.fast_unroll``; plus ``speed.loss_chunk``), one forward + backward update of an
``EncoderDecoder`` is run under ``torch.profiler`` and the number of aten operator calls (nested calls
included) and matrix products is printed; each setting's peak resident memory growth over the model's is
measured in a fresh process. Counts do not depend on how loaded the machine is; times would, so none are taken.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = [  # (label, fast_unroll, loss_chunk)
    ("step loop, full logits", False, 0),
    ("fast unroll, full logits", True, 0),
    ("fast unroll, chunked loss", True, 4096),
]
DECODERS = [("bahdanau", True), ("luong_general", False), ("none", False)]


def measure(args: argparse.Namespace, attention: str, feeding: bool, fast: bool, chunk: int) -> dict:
    """One update's operator counts and peak memory growth (run in this process: call it in a fresh one)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from harness import status_mib

    sys.path.insert(0, str(ROOT))
    from seq2seq.models.seq2seq import EncoderDecoder
    from seq2seq.training.chunked_loss import linear_cross_entropy

    torch.set_num_threads(1)
    torch.manual_seed(0)
    v, h, b, t = args.vocab, args.hidden, args.batch, args.length
    model = EncoderDecoder(v, v, args.embedding, h, attention=attention, input_feeding=feeding)
    model.fast_unroll = fast
    src, tgt = torch.randint(4, v, (b, t)), torch.randint(4, v, (b, t))
    lengths = torch.full((b,), t)

    def update() -> None:
        if chunk:
            features, _ = model(src, lengths, tgt, features=True)
            loss = linear_cross_entropy(
                features.reshape(-1, h), model.decoder.generator, tgt.reshape(-1), 0, chunk=chunk
            )
        else:
            logits, _ = model(src, lengths, tgt)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, v), tgt.reshape(-1), ignore_index=0)
        loss.backward()
        model.zero_grad(set_to_none=True)

    base = status_mib("VmRSS")
    update()
    growth = status_mib("VmHWM") - base
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        update()
    counts = {e.key: e.count for e in prof.key_averages()}
    return {
        "aten_calls": sum(n for k, n in counts.items() if k.startswith("aten::")),
        "matmuls": sum(counts.get(k, 0) for k in ("aten::mm", "aten::addmm", "aten::bmm")),
        "peak_growth_mib": growth,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--hidden", type=int, default=288)
    parser.add_argument("--embedding", type=int, default=256)
    parser.add_argument("--batch", type=int, default=40)
    parser.add_argument("--length", type=int, default=30, help="source and target length")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measurement, JSON out
    args = parser.parse_args()
    if args.one:
        attention, feeding, fast, chunk = json.loads(args.one)
        print(json.dumps(measure(args, attention, feeding, fast, chunk)))
        return
    print(f"vocab {args.vocab}, hidden {args.hidden}, batch {args.batch} × {args.length} tokens, 1 thread\n")
    print("| decoder | setting | aten calls | matrix products | peak memory growth (MiB) |")
    print("|---|---|---:|---:|---:|")
    for attention, feeding in DECODERS:
        for label, fast, chunk in SETTINGS:
            one = json.dumps([attention, feeding, fast, chunk])
            out = subprocess.run(
                [sys.executable, __file__, *sys.argv[1:], "--one", one],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            name = f"{attention}{', input feeding' if feeding else ''}"
            print(
                f"| {name} | {label} | {r['aten_calls']:,} | {r['matmuls']:,} | {r['peak_growth_mib']:.0f} |"
            )


if __name__ == "__main__":
    main()
