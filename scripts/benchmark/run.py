"""Benchmark seq2seq against JoeyNMT 2.3.0: same machine, data, SentencePiece models, model size, batches, threads.

    make bench                      # the full benchmark (a few minutes; run it on a quiet machine)
    make bench ARGS="--quick"       # a smoke run: 5 updates, 20 sentences, 1 thread
    .venv/bin/python scripts/benchmark/run.py [--updates 200] [--warmup 20] [--decode-sentences 500] ...

1. Installs JoeyNMT 2.3.0 into its own virtualenv (``bench/.venv-joeynmt``; not a project dependency).
2. Builds the data: the Bible en→es corpus (``data/bible``, ``make data-bible``) or, when it is not built, the
   toy task. seq2seq's data module trains (or loads) its SentencePiece models; JoeyNMT gets the same text
   segmented with them (``level: word``) and their piece lists as vocabularies (``joeynmt_setup.py``).
3. Matches the set-up: JoeyNMT's model (bi-GRU 256 per direction, GRU decoder 256, Bahdanau, input feeding)
   is built first to count its parameters; seq2seq's ``model.hidden_size`` is the size whose parameter count
   is nearest (seq2seq splits it over the two directions). seq2seq's token budget is chosen so its batches
   hold as many real target tokens per update as JoeyNMT's at ``batch_size: --batch-tokens``.
4. Measures seq2seq, then JoeyNMT, each in a process of its own (``seq2seq_side.py`` and ``joeynmt_side.py``,
   timing with ``harness.py``), never both at once; then the machine's dense matmul FLOP/s (``flops.py``).
   With ``--rounds N`` it measures both N times in alternating order (seq2seq then JoeyNMT, then JoeyNMT then
   seq2seq, …) and reports each number's median over the rounds, with each round's ratios.
5. Prints the Markdown table (``report.py``) and writes everything to ``bench/results.json``.
   docs/performance.md has the method.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from flops import gpu_bf16_peak, measure_matmul_flops
from harness import check_device, closest_size, pin_threads
from joeynmt_setup import joeynmt_config, write_joeynmt_data
from report import (
    SYSTEMS,
    caveats,
    combine_rounds,
    compare,
    format_rounds,
    format_table,
    round_orders,
    round_ratios,
)
from seq2seq_side import (
    base_overrides,
    compose_config,
    data_overrides,
    load_data,
    match_budget,
    model_params,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
JOEYNMT_VERSION = "2.3.0"
FULL = {"updates": 200, "warmup": 20, "decode_sentences": 500, "threads": 2}
QUICK = {"updates": 5, "warmup": 2, "decode_sentences": 20, "threads": 1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help=f"smoke run: {QUICK} (explicit options still win)")
    add("--updates", type=int, help=f"timed training updates per system (default {FULL['updates']})")
    add("--warmup", type=int, help=f"untimed updates first (default {FULL['warmup']})")
    add("--decode-sentences", type=int, help=f"test sentences decoded (default {FULL['decode_sentences']})")
    add("--threads", type=int, help=f"CPU cores and torch threads per system (default {FULL['threads']})")
    add("--batch-tokens", type=int, default=2000, help="JoeyNMT's token batch_size (padded); default 2000")
    add("--decode-batch-tokens", type=int, default=2000, help="decoding batch budget, both systems")
    add("--embedding-size", type=int, default=256, help="embeddings, both systems (default 256)")
    add("--hidden-size", type=int, default=256, help="JoeyNMT's hidden size per direction (default 256)")
    add("--seq2seq-hidden-size", type=int, help="seq2seq's model.hidden_size (default: matched parameters)")
    add(
        "--attention",
        choices=["bahdanau", "luong_concat"],
        help="seq2seq's attention (JoeyNMT's is its bahdanau, which queries after the RNN step as seq2seq's "
        "luong_concat); default luong_concat with --end-to-end (the same architecture), bahdanau otherwise",
    )
    add("--beam-size", type=int, default=5)
    add("--beam-alpha", type=float, default=1.0, help="length penalty ((5+|Y|)/6)^alpha, both systems")
    add("--corpus", default="data/bible", help="Bible corpus folder; the toy task when it is not built")
    add("--seed", type=int, default=1234)
    add(
        "--rounds",
        type=int,
        default=1,
        help="measure both systems this many times, alternating which goes first; report medians (default 1)",
    )
    add("--work", default="bench/work", help="segmented data, configs, logs")
    add("--out", default="bench/results.json")
    add("--joeynmt-venv", default="bench/.venv-joeynmt")
    add("--device", default="cpu", help="cpu (default) or cuda: both systems on the first GPU")
    add("--precision", choices=["32", "bf16"], help="seq2seq's autocast; default bf16 on cuda, 32 on cpu")
    add("--joeynmt-fp16", action="store_true", help="JoeyNMT's own fp16 (autocast + GradScaler), cuda only")
    add("--gpu-peak-tflops", type=float, help="the GPU's dense bf16 peak for MFU (default: from its name)")
    add("--no-lightning", action="store_true", help="skip the Lightning Trainer row")
    add(
        "--seq2seq-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra override for seq2seq (repeatable), e.g. speed.fast_unroll=false for a before/after",
    )
    add("--end-to-end", action="store_true", help="time to BLEU through both CLIs (end_to_end.py)")
    add("--budget-minutes", type=float, default=30.0, help="--end-to-end: wall-clock budget per system")
    add("--validate-every", type=int, default=500, help="--end-to-end: updates between validations, both")
    args = parser.parse_args(argv)
    if args.attention is None:
        args.attention = "luong_concat" if args.end_to_end else "bahdanau"
    if args.precision is None:
        args.precision = "bf16" if args.device == "cuda" else "32"
    if args.precision != "32" and args.device != "cuda":
        parser.error(f"--precision {args.precision} needs --device cuda (CPU autocast is not benchmarked)")
    if args.joeynmt_fp16 and args.device != "cuda":
        parser.error("--joeynmt-fp16 needs --device cuda")
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


# ------------------------------------------------------------------------------------------ set-up


def ensure_joeynmt(venv: Path) -> Path:
    """The virtualenv's python, installing JoeyNMT 2.3.0 (with this project's torch version) when missing."""
    python = venv / "bin" / "python"
    probe = "import importlib.metadata as m, joeynmt.training; print(m.version('joeynmt'))"
    if python.exists():
        found = subprocess.run([python, "-c", probe], capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip() == JOEYNMT_VERSION:
            return python
    print(f"installing JoeyNMT {JOEYNMT_VERSION} into {venv} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    pip = [python, "-m", "pip", "install", "--quiet"]
    # torch first, pinned to ours, so pip takes the same (CPU) build rather than resolving one itself
    subprocess.run([*pip, f"torch=={torch.__version__.split('+')[0]}"], check=True)
    subprocess.run([*pip, f"joeynmt=={JOEYNMT_VERSION}", "importlib-metadata"], check=True)
    return python


def match_seq2seq(
    args: argparse.Namespace, cfg: Any, datamodule: Any, joey: dict[str, Any]
) -> dict[str, Any]:
    """seq2seq's hidden size (nearest parameter count) and token budget (same real target tokens per update)."""
    vocab = (datamodule.src_tokenizer.vocab_size, datamodule.tgt_tokenizer.vocab_size)
    hidden = args.seq2seq_hidden_size
    if hidden is None:
        hidden, params = closest_size(
            joey["params"], lambda h: model_params(cfg, h, *vocab), range(64, 1025, 16)
        )
    else:
        params = model_params(cfg, hidden, *vocab)
    budget, mean = match_budget(datamodule, joey["tgt_tokens_per_update"], args.seed, 4 * args.batch_tokens)
    print(
        f"matched: seq2seq hidden {hidden} ({params:,} vs JoeyNMT {joey['params']:,} parameters), "
        f"max_tokens {budget} ({mean:.0f} vs {joey['tgt_tokens_per_update']:.0f} target tokens/update)",
        flush=True,
    )
    return {
        "joeynmt_params": joey["params"],
        "seq2seq_hidden_size": hidden,
        "seq2seq_params": params,
        "joeynmt_tgt_tokens_per_update": joey["tgt_tokens_per_update"],
        "seq2seq_max_tokens": budget,
        "seq2seq_tgt_tokens_per_update": mean,
        "joeynmt_epoch_padding_efficiency": joey["padding_efficiency"],
    }


def run_worker(
    command: list[Any], plan: dict[str, Any], name: str, work: Path, threads: int
) -> dict[str, Any]:
    """Run one measuring process with ``plan``; return its JSON result (its log is ``<work>/logs/<name>.log``)."""
    (work / "logs").mkdir(parents=True, exist_ok=True)
    plan_path, out_path, log_path = (
        work / f"{name}.plan.json",
        work / f"{name}.out.json",
        work / "logs" / f"{name}.log",
    )
    plan_path.write_text(json.dumps(plan, indent=2), "utf-8")
    out_path.unlink(missing_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "WANDB_MODE": "disabled",
    }
    start = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as log:
        done = subprocess.run(
            [*command, plan_path, out_path], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    if done.returncode != 0 or not out_path.exists():
        tail = "".join(log_path.read_text("utf-8", errors="replace").splitlines(keepends=True)[-25:])
        raise SystemExit(f"{name} failed (exit {done.returncode}); last lines of {log_path}:\n{tail}")
    print(f"  {name}: {time.perf_counter() - start:.0f} s", flush=True)
    return json.loads(out_path.read_text("utf-8"))


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    return {
        "cpu": models[0] if models else platform.processor() or "unknown",
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


# ------------------------------------------------------------------------------------------ main


def matched_setup(args: argparse.Namespace) -> dict[str, Any]:
    """JoeyNMT installed, the data and tokenizers, JoeyNMT's data and config, the matched seq2seq overrides."""
    work = Path(args.work)
    joey_python = ensure_joeynmt(Path(args.joeynmt_venv))
    overrides, data_note, langs = data_overrides(Path(args.corpus))
    base = base_overrides(args.embedding_size, args.seed, args.decode_batch_tokens, work, args.attention)
    overrides = base + overrides
    cfg = compose_config(overrides)

    print("data and tokenizers ...", flush=True)
    datamodule = load_data(cfg)
    folder = work / "joeynmt" / "data"
    write_joeynmt_data(datamodule, folder, langs, args.decode_sentences)
    common = {
        "threads": args.threads,
        "warmup": args.warmup,
        "updates": args.updates,
        "beam_size": args.beam_size,
    }
    joey_config = joeynmt_config(args, cfg, folder, langs)
    joey_command = [joey_python, HERE / "joeynmt_side.py"]
    joey_info = run_worker(
        [*joey_command, "inspect"], {**common, "config": joey_config}, "joeynmt-inspect", work, args.threads
    )
    matching = match_seq2seq(args, cfg, datamodule, joey_info)
    hidden, budget = matching["seq2seq_hidden_size"], matching["seq2seq_max_tokens"]
    return {
        "datamodule": datamodule,
        "langs": langs,
        "data_note": data_note,
        "common": common,
        "matching": matching,
        "overrides": [
            *overrides,
            f"model.hidden_size={hidden}",
            f"data.batch.max_tokens={budget}",
            *args.seq2seq_override,
        ],
        "joeynmt_config": joey_config,
        "joeynmt_python": joey_python,
        "joeynmt_command": joey_command,
    }


def benchmark(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    device = check_device(args.device)  # before anything is installed or built
    host = machine()  # before this process pins itself for the matmul measurement
    work = Path(args.work)
    setup = matched_setup(args)
    datamodule, matching, common = setup["datamodule"], setup["matching"], setup["common"]
    joey_plan = {**common, "config": setup["joeynmt_config"]}
    joey_command = setup["joeynmt_command"]
    our_plan = {
        **common,
        "overrides": setup["overrides"],
        "decode_sentences": args.decode_sentences,
        "beam_alpha": args.beam_alpha,
        "max_length_ratio": 1.5,  # ceil(1.5 · (|x| + 1)): JoeyNMT's 1.5 × source length with its EOS
        "max_length_constant": 1.5,
        "device": args.device,
        "precision": args.precision,
        "lightning": not args.no_lightning,
    }
    workers = {
        "seq2seq": ([sys.executable, HERE / "seq2seq_side.py"], our_plan),
        "joeynmt": ([*joey_command, "run"], joey_plan),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SYSTEMS}
    orders = round_orders(args.rounds)
    for number, order in enumerate(orders, 1):
        print(f"measuring ({', then '.join(order)}; round {number} of {len(orders)}) ...", flush=True)
        for name in order:
            command, plan = workers[name]
            label = name if number == 1 else f"{name}-round{number}"  # its plan, result and log files
            runs[name].append(run_worker(command, plan, label, work, args.threads))
    systems = {name: combine_rounds(runs[name]) for name in SYSTEMS}
    rounds = [
        {"order": list(order), "ratios": ratios}
        for order, ratios in zip(orders, round_ratios(runs), strict=True)
    ]
    pin_threads(args.threads)
    if device.type == "cuda":  # the GPU's measured bf16 matmul rate, and its data-sheet peak for MFU
        peak = measure_matmul_flops(8192, device="cuda", dtype=torch.bfloat16)
        host["gpu"] = torch.cuda.get_device_name()
        gpu_peak = args.gpu_peak_tflops * 1e12 if args.gpu_peak_tflops else gpu_bf16_peak(host["gpu"])
    else:
        peak, gpu_peak = measure_matmul_flops(), None
    for system in systems.values():
        system["train"]["flop_utilisation"] = system["train"]["model_flops_per_s"] / peak
    return {
        "schema": 1,
        "command": " ".join(["python", "scripts/benchmark/run.py", *argv]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": time.perf_counter() - started,
        "quick": args.quick,
        "machine": host,
        "data": setup["data_note"],
        "settings": {
            "threads": args.threads,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "updates": args.updates,
            "decode_sentences": args.decode_sentences,
            "train_pairs": len(datamodule.raw["train"]),
            "joeynmt_batch_tokens": args.batch_tokens,
            "decode_batch_tokens": args.decode_batch_tokens,
            "embedding_size": args.embedding_size,
            "joeynmt_hidden_size": args.hidden_size,
            "device": args.device,
            "seq2seq_precision": args.precision,
            "joeynmt_precision": "fp16" if args.joeynmt_fp16 else "32",
            "seq2seq_overrides": args.seq2seq_override,
        },
        "beam_size": args.beam_size,
        "beam_alpha": args.beam_alpha,
        "matching": matching,
        "matmul_flops_per_s": peak,
        "gpu_bf16_peak_flops": gpu_peak,
        "systems": systems,
        "rounds": rounds if len(rounds) > 1 else [],
        "comparison": compare(systems),
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)  # before any mode runs, not after its training
    if args.end_to_end:
        from end_to_end import run_end_to_end  # the time-to-BLEU mode (docs/performance.md)

        check_device(args.device)
        run_end_to_end(args, argv)
        return
    results = benchmark(args, argv)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", "utf-8")
    settings = results["settings"]
    print(
        f"\n{results['data']}; {settings['threads']} thread(s), {settings['updates']} timed updates after "
        f"{settings['warmup']}, {settings['decode_sentences']} test sentences; {results['machine']['cpu']}\n"
    )
    print(format_table(results))
    if results["rounds"]:
        print(
            f"\nEach system measured {len(results['rounds'])} times, alternating; the table has the medians."
        )
        print(f"Per round, seq2seq / JoeyNMT:\n\n{format_rounds(results)}")
    for note in caveats(results):
        print(f"WARNING {note}")
    print(f"\nwrote {out} ({results['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
