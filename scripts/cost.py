"""The cost of attention, measured: time and peak memory per sentence against source length (``make cost``).

For each model of the progression (none, bahdanau, luong_general, luong_local, Transformer; parameter counts
within 10 %, as ``conf/variant/``) and each source length ``T_x`` (synthetic ids, target length
``T_y = ratio · T_x``): one training step (forward, backward, Adam) and greedy decoding of exactly ``T_y``
tokens. Every point runs in a fresh process, so its peak memory is its own: the CUDA allocator's peak on a GPU,
the growth of the resident set (``ru_maxrss``) over the process after building the model on the CPU.
A least-squares line through ``log(time)`` against ``log(T_x)`` gives the exponent of each model and phase
(O(T_x · T_y) with ``T_y ∝ T_x`` is exponent 2 for the attention itself; the recurrences are linear).

    make cost                                   # lengths 10-400, CPU (and the GPU when there is one)
    make cost ARGS="--quick"                    # lengths 10, 20, 40, one repeat: checks the script, not the machine
    python scripts/cost.py --lengths 10 50 --models bahdanau transformer --out /tmp/cost

Writes ``cost.json``, ``cost.md`` (the table and the exponents) and ``cost.png`` (log-log) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("none", "bahdanau", "luong_general", "luong_local", "transformer")
PHASES = ("train_step", "greedy")
LENGTHS = (10, 20, 40, 80, 160, 300, 400)
QUICK_LENGTHS = (10, 20, 40)
VOCAB = 200


def build(name: str):
    """The model ``name`` at the progression's matched size (hidden 128)."""
    from seq2seq.models.seq2seq import EncoderDecoder

    if name == "transformer":
        return EncoderDecoder(
            VOCAB, VOCAB, 128, 128, encoder_type="transformer", decoder_type="transformer",
            encoder_layers=1, decoder_layers=1, encoder_ff_size=288, decoder_ff_size=288,
        )  # fmt: skip
    options = {"score": "concat"} if name == "luong_local" else None
    return EncoderDecoder(VOCAB, VOCAB, 128, 128, attention=name, attention_options=options)


def _peak_bytes(device: str) -> int:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def child(name: str, phase: str, length: int, batch: int, ratio: float, repeats: int, device: str) -> dict:
    """One point, in this process: seconds per sentence (best of ``repeats``) and peak memory growth in bytes."""
    import torch

    from seq2seq.models.search import greedy_search

    torch.manual_seed(0)
    model = build(name).to(device)
    optimizer = torch.optim.Adam(model.parameters())
    target = max(1, round(ratio * length))
    src = torch.randint(4, VOCAB, (batch, length), device=device)
    lengths = torch.full((batch,), length, device=device)
    tgt = torch.randint(4, VOCAB, (batch, target + 1), device=device)
    tgt[:, 0] = 2

    def train_step() -> None:
        model.train()
        logits, _ = model(src, lengths, tgt[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tgt[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def greedy() -> None:
        model.eval()
        budget = torch.full((batch,), target)
        greedy_search(model, src, lengths, budget, 2, 3, min_length=target)  # exactly `target` steps

    run = train_step if phase == "train_step" else greedy
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = 0 if device == "cuda" else _peak_bytes(device)
    times = []
    for _ in range(repeats + 1):  # the first call warms up
        start = time.perf_counter()
        run()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {
        "model": name,
        "phase": phase,
        "device": device,
        "src_len": length,
        "tgt_len": target,
        "batch": batch,
        "s_per_sentence": min(times[1:] if repeats else times) / batch,
        "peak_mib": (_peak_bytes(device) - before) / 2**20,
        "params": sum(p.numel() for p in model.parameters()),
    }


def fit_exponent(points: list[dict], key: str = "s_per_sentence") -> float | None:
    """Slope of ``log(key)`` against ``log(src_len)`` (least squares); None with fewer than two lengths."""
    xs = [math.log(p["src_len"]) for p in points if p[key] > 0]
    ys = [math.log(p[key]) for p in points if p[key] > 0]
    if len(xs) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else None


def report(points: list[dict], out: Path) -> str:
    """``cost.md``: per device and phase, seconds and MiB per length and model, and the fitted exponents."""
    lines = []
    for device in sorted({p["device"] for p in points}):
        for phase in PHASES:
            rows = [p for p in points if p["device"] == device and p["phase"] == phase]
            if not rows:
                continue
            models = [m for m in MODELS if any(p["model"] == m for p in rows)]
            lines += [f"### {phase} on {device} (ms per sentence / peak MiB)", ""]
            lines.append("| source words | " + " | ".join(models) + " |")
            lines.append("|---:|" + "---:|" * len(models))
            for length in sorted({p["src_len"] for p in rows}):
                cells = []
                for m in models:
                    hit = [p for p in rows if p["model"] == m and p["src_len"] == length]
                    cells.append(
                        f"{1000 * hit[0]['s_per_sentence']:.2f} / {hit[0]['peak_mib']:.0f}" if hit else "—"
                    )
                lines.append(f"| {length} | " + " | ".join(cells) + " |")
            exponents = []
            for m in models:
                slope = fit_exponent([p for p in rows if p["model"] == m])
                exponents.append("—" if slope is None else f"{slope:.2f}")
            lines += ["| time exponent | " + " | ".join(exponents) + " |", ""]
    text = "\n".join(lines)
    (out / "cost.md").write_text(text + "\n", encoding="utf-8")
    return text


def plot(points: list[dict], out: Path) -> None:
    """``cost.png``: seconds per sentence against source length, log-log, one panel per device and phase."""
    from matplotlib.figure import Figure

    panels = [(d, ph) for d in sorted({p["device"] for p in points}) for ph in PHASES]
    figure = Figure(figsize=(5 * len(panels), 4))
    for index, (device, phase) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        for model in MODELS:
            rows = sorted((p for p in points if (p["device"], p["phase"], p["model"]) == (device, phase, model)),
                          key=lambda p: p["src_len"])  # fmt: skip
            if rows:
                slope = fit_exponent(rows)
                label = model if slope is None else f"{model} (slope {slope:.2f})"
                axes.loglog(
                    [p["src_len"] for p in rows], [p["s_per_sentence"] for p in rows], "o-", label=label
                )
        axes.set(title=f"{phase}, {device}", xlabel="source words", ylabel="seconds per sentence")
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "cost.png", dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="lengths 10, 20, 40 and one repeat")
    parser.add_argument("--lengths", type=int, nargs="+", default=None)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES)
    parser.add_argument("--batch", type=int, default=8, help="sentences per measured call")
    parser.add_argument("--ratio", type=float, default=1.0, help="target words per source word")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--devices", nargs="+", default=None, help="cpu and/or cuda (default: cpu, and cuda if present)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "cost")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "PHASE", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    if args.child:
        name, phase, length = args.child
        device = (args.devices or ["cpu"])[0]
        print(json.dumps(child(name, phase, int(length), args.batch, args.ratio, repeats, device)))
        return 0
    import torch

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    lengths = args.lengths or (QUICK_LENGTHS if args.quick else LENGTHS)
    args.out.mkdir(parents=True, exist_ok=True)
    points = []
    for device in devices:
        for phase in args.phases:
            for model in args.models:
                for length in lengths:
                    command = [
                        sys.executable, __file__, "--child", model, phase, str(length), "--batch", str(args.batch),
                        "--ratio", str(args.ratio), "--repeats", str(repeats), "--devices", device,
                    ]  # fmt: skip
                    if args.quick:
                        command.append("--quick")
                    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
                    if done.returncode != 0:
                        print(
                            f"{model} {phase} {length} on {device} failed:\n{done.stderr[-2000:]}",
                            file=sys.stderr,
                        )
                        return 1
                    points.append(json.loads(done.stdout.strip().splitlines()[-1]))
                    print(json.dumps(points[-1]), flush=True)
    (args.out / "cost.json").write_text(json.dumps(points, indent=1) + "\n", encoding="utf-8")
    print(report(points, args.out))
    plot(points, args.out)
    print(f"wrote {args.out}/cost.json, cost.md, cost.png")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
