"""Each speed lever's before and after, timed: the benchmark's training update with and without it.

    .venv/bin/python scripts/benchmark/lever_times.py [--corpus data/bible] [--rounds 2] [--updates 60] \\
        [--setting "LABEL: OVERRIDE ..."]...

The model, data and loop are the benchmark's (``seq2seq_side.py``: bi-GRU encoder, GRU decoder with Bahdanau
attention and input feeding, the data module's token-budget batches, ``training_step`` → backward → clipping →
Adam; the Bible set-up, or the toy task when ``--corpus`` holds no Bible), with the hidden size and batch budget
the benchmark matched to JoeyNMT (``--hidden-size``, ``--target-tokens``). Each setting is a set of Hydra
overrides (by default: all levers on, then each lever of issue 17 off in turn, then all of them off); settings
run in turn, ``--rounds`` times over, each in a fresh process, so a slow spell of the machine shows as a spread
between rounds rather than as a lever. Prints one table row per setting: median seconds per update and target
tokens per second in each round. Times depend on the machine: run it on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_SETTINGS = [
    "all levers on:",
    "without step weights: speed.step_weights=false",
    "without fused Adam: speed.fused_optimizer=false",
    "without chunked loss: speed.loss_chunk=0",
    "without fast unroll: speed.fast_unroll=false",
    "all off: speed.fast_unroll=false speed.loss_chunk=0 speed.fused_optimizer=false",
]


def measure(args: argparse.Namespace, overrides: list[str]) -> dict:
    """One setting's timed updates in this process (call it in a fresh one)."""
    sys.path.insert(0, str(HERE))
    import torch

    import seq2seq_side as side
    from harness import cycle, pin_threads, time_updates
    from seq2seq.training.module import Seq2SeqModule

    pin_threads(args.threads)
    corpus = Path(args.corpus)
    data, _, _ = side.data_overrides(corpus)
    toy = "data=toy_translation" in data
    hidden = args.hidden_size or (304 if toy else 288)
    base = side.base_overrides(args.embedding_size, args.seed, 2000, Path(args.work))
    base += [*data, f"model.hidden_size={hidden}", *args.extra]
    datamodule = side.load_data(side.compose_config(base))
    target = args.target_tokens or (1100 if toy else 970)
    budget, _ = side.match_budget(datamodule, target, args.seed, 20000)
    cfg = side.compose_config(base + [f"data.batch.max_tokens={budget}", *overrides])
    datamodule = side.load_data(cfg)
    torch.manual_seed(cfg.seed)
    module = Seq2SeqModule(cfg, datamodule.src_tokenizer, datamodule.tgt_tokenizer)
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer

    def update(batch):
        module.training_step(batch, 0).backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.trainer.gradient_clip_val)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def epoch(number):
        loader = datamodule.train_dataloader()
        loader.batch_sampler.set_epoch(number)
        return loader

    module.train()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        records = time_updates(cycle(epoch), update, side.shape_of, args.warmup, args.updates)
    seconds = sum(r.seconds for r in records)
    return {
        "median_s": statistics.median(r.seconds for r in records),
        "tgt_tokens_per_s": sum(r.shape.tgt_tokens for r in records) / seconds,
        "hidden": hidden,
        "max_tokens": budget,
        "toy": toy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--corpus", default="data/bible", help="Bible corpus folder; the toy task when it is not built")
    add(
        "--setting",
        action="append",
        help='"LABEL: OVERRIDE ..." (repeatable; default: each lever off in turn)',
    )
    add("--rounds", type=int, default=2)
    add("--updates", type=int, default=60)
    add("--warmup", type=int, default=10)
    add("--threads", type=int, default=2)
    add("--hidden-size", type=int, help="default: the benchmark's match, 288 (Bible) or 304 (toy)")
    add("--target-tokens", type=int, help="real target tokens per update; default 970 (Bible) or 1100 (toy)")
    add("--embedding-size", type=int, default=256, help="as the benchmark's (default 256)")
    add("--extra", action="append", default=[], help="a Hydra override for every setting (repeatable)")
    add("--seed", type=int, default=1234)
    add("--work", default="bench/work/levers")
    add("--one", help=argparse.SUPPRESS)  # internal: one setting's overrides as JSON, result as JSON
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args, json.loads(args.one))))
        return
    settings = [_label_and_overrides(text) for text in (args.setting or DEFAULT_SETTINGS)]
    results: dict[str, list[dict]] = {label: [] for label, _ in settings}
    for round_ in range(args.rounds):
        for label, overrides in settings:
            out = subprocess.run(
                [sys.executable, __file__, *_without_settings(sys.argv[1:]), "--one", json.dumps(overrides)],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                raise SystemExit(f"setting {label!r} failed:\n{out.stderr[-2000:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            results[label].append(result)
            print(f"round {round_ + 1}: {label}: {result['median_s']:.3f} s/update", flush=True)
    first = next(iter(results.values()))[0]
    print(
        f"\n{'toy task' if first['toy'] else 'Bible'}: hidden {first['hidden']}, max_tokens {first['max_tokens']}, "
        f"{args.threads} threads, {args.updates} timed updates after {args.warmup}, {args.rounds} rounds\n"
    )
    print("| setting | median s/update (each round) | target tokens/s (each round) |")
    print("|---|---:|---:|")
    for label, rows in results.items():
        medians = " / ".join(f"{r['median_s']:.3f}" for r in rows)
        rates = " / ".join(f"{r['tgt_tokens_per_s']:,.0f}" for r in rows)
        print(f"| {label} | {medians} | {rates} |")


def _label_and_overrides(text: str) -> tuple[str, list[str]]:
    """``LABEL: OVERRIDE ...`` → the label and the Hydra overrides."""
    label, sep, rest = text.partition(":")
    if not sep:
        raise SystemExit(f"--setting {text!r}: expected 'LABEL: OVERRIDE ...' (a colon after the label)")
    return label.strip(), rest.split()


def _without_settings(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--setting":
            skip = True
        elif not arg.startswith("--setting="):
            out.append(arg)
    return out


if __name__ == "__main__":
    main()
