"""Benchmark seq2seq against JoeyNMT 2.3.0: same machine, data, SentencePiece models, model size, batches, threads.

    make bench                      # the full benchmark (a few minutes; run it on a quiet machine)
    make bench ARGS="--quick"       # a smoke run: 5 updates, 20 sentences, 1 thread
    python scripts/benchmark.py [--updates 200] [--warmup 20] [--decode-sentences 500] [--threads 2] ...

1. Installs JoeyNMT 2.3.0 into its own virtualenv (``bench/.venv-joeynmt``; not a project dependency).
2. Builds the data: the Bible en→es corpus (``data/bible``, ``make data-bible``) or, when it is not built, the
   toy task. seq2seq's data module trains (or loads) its SentencePiece models; JoeyNMT gets the same text
   segmented with them (``level: word``) and their piece lists as vocabularies.
3. Matches the set-up: JoeyNMT's model (bi-GRU 256 per direction, GRU decoder 256, Bahdanau, input feeding)
   is built first to count its parameters; seq2seq's ``model.hidden_size`` is the size whose parameter count
   is nearest (seq2seq splits it over the two directions). seq2seq's token budget is chosen so its batches
   hold as many real target tokens per update as JoeyNMT's at ``batch_size: --batch-tokens``.
4. Measures seq2seq, then JoeyNMT, each in a process of its own (``seq2seq.benchmarking.run_seq2seq`` and
   ``scripts/joeynmt_bench.py``), never both at once; then the machine's dense matmul FLOP/s.
5. Prints the Markdown table and writes everything to ``bench/results.json``. docs/performance.md has the method.
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
from omegaconf import OmegaConf

from seq2seq.benchmarking import (
    calibrate_budget,
    caveats,
    closest_size,
    compare,
    compose_config,
    format_table,
    mean_target_tokens,
    measure_matmul_flops,
    parameter_count,
    pin_threads,
    run_seq2seq,
)
from seq2seq.data.batching import TokenBudgetBatchSampler
from seq2seq.data.datamodule import Seq2SeqDataModule
from seq2seq.models.seq2seq import EncoderDecoder

ROOT = Path(__file__).resolve().parents[1]
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
    add("--beam-size", type=int, default=5)
    add("--beam-alpha", type=float, default=1.0, help="length penalty ((5+|Y|)/6)^alpha, both systems")
    add("--corpus", default="data/bible", help="Bible corpus folder; the toy task when it is not built")
    add("--seed", type=int, default=1234)
    add("--work", default="bench/work", help="segmented data, configs, logs")
    add("--out", default="bench/results.json")
    add("--joeynmt-venv", default="bench/.venv-joeynmt")
    add("--worker", nargs=2, metavar=("PLAN", "OUT"), help=argparse.SUPPRESS)  # the seq2seq process
    args = parser.parse_args(argv)
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


def data_overrides(corpus: Path) -> tuple[list[str], str, tuple[str, str]]:
    """Hydra overrides for the data, a description, and the language codes of the files JoeyNMT reads."""
    if all(
        (corpus / f"{split}.{lang}").is_file() for split in ("train", "val", "test") for lang in ("en", "es")
    ):
        overrides = ["data=parallel_text", f"data.dir={corpus}", "data.src_lang=en", "data.tgt_lang=es"]
        overrides += ["data.tokenizer.model_type=unigram", "data.tokenizer.vocab_size=8000"]
        return overrides, f"Bible en→es ({corpus}), SentencePiece unigram 8000 per language", ("en", "es")
    note = f"toy_translation: the Bible corpus is not built in {corpus} (make data-bible)"
    print(f"NOTE {note}", flush=True)
    return ["data=toy_translation"], note, ("src", "tgt")


def base_overrides(args: argparse.Namespace, work: Path) -> list[str]:
    """The reference model: bi-GRU encoder, GRU decoder, Bahdanau attention, input feeding, no dropout."""
    return [
        "logger=none",
        "trainer=cpu",
        "model/encoder=gru",
        "model/attention=bahdanau",
        "teacher_forcing=always",
        "model.encoder.bidirectional=true",
        "model.encoder.num_layers=1",
        "model.encoder.dropout=0.0",
        "model.decoder.input_feeding=true",
        f"model.embedding_size={args.embedding_size}",
        f"paths.output_dir={work / 'seq2seq'}",
        f"seed={args.seed}",
        f"data.batch.eval_max_tokens={args.decode_batch_tokens}",
    ]


def write_joeynmt_data(
    datamodule: Seq2SeqDataModule, folder: Path, langs: tuple[str, str], decode: int
) -> None:
    """Train and first ``decode`` test pairs segmented into SentencePiece pieces, and the piece vocabularies."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizers = (datamodule.src_tokenizer, datamodule.tgt_tokenizer)
    for split, pairs in (("train", datamodule.raw["train"]), ("test", datamodule.raw["test"][:decode])):
        for side, (lang, tokenizer) in enumerate(zip(langs, tokenizers, strict=True)):
            pieces = tokenizer.processor.encode([pair[side] for pair in pairs], out_type=str)
            (folder / f"{split}.{lang}").write_text("".join(" ".join(p) + "\n" for p in pieces), "utf-8")
    for lang, tokenizer in zip(langs, tokenizers, strict=True):
        vocab = [tokenizer.processor.id_to_piece(i) for i in range(tokenizer.vocab_size)]
        (folder / f"vocab.{lang}").write_text("\n".join(vocab) + "\n", "utf-8")


def joeynmt_config(
    args: argparse.Namespace, cfg: Any, folder: Path, langs: tuple[str, str]
) -> dict[str, Any]:
    """JoeyNMT's config for the same model, optimiser, clipping and data (see the issue's notes on 2.3.0)."""
    recurrent = {"type": "recurrent", "rnn_type": "gru", "num_layers": 1, "dropout": 0.0}
    embeddings = {"embedding_dim": args.embedding_size, "scale": False, "dropout": 0.0}
    clip = cfg.trainer.get("gradient_clip_val")
    return {
        "name": "bench",
        "model_dir": str(Path(args.work) / "joeynmt" / "model"),
        "use_cuda": False,
        "fp16": False,
        "random_seed": args.seed,  # JoeyNMT applies it after building the model
        "data": {
            "train": str(folder / "train"),
            "test": str(folder / "test"),
            "dataset_type": "plain",
            # its sentencepiece tokenizer calls SetVocabulary (missing in sentencepiece 0.2.3): pre-segment
            "src": {"lang": langs[0], "level": "word", "voc_file": str(folder / f"vocab.{langs[0]}")},
            "trg": {"lang": langs[1], "level": "word", "voc_file": str(folder / f"vocab.{langs[1]}")},
        },
        "training": {
            "optimizer": "adam",
            "learning_rate": float(cfg.optim.lr),
            "weight_decay": float(cfg.optim.weight_decay),
            "scheduling": "exponential",  # plateau passes an argument torch 2.13 rejects; gamma 1 = constant
            "decrease_factor": 1.0,
            "clip_grad_norm": None if clip is None else float(clip),
            "label_smoothing": float(cfg.optim.label_smoothing),
            "normalization": "tokens",  # mean over target tokens, as seq2seq's loss
            "batch_size": args.batch_tokens,
            "batch_type": "token",
            "shuffle": True,
            "epochs": 1000,
            "logging_freq": 1000,
            "validation_freq": 1000,
            "keep_best_ckpts": 1,
            "early_stopping_metric": "ppl",
        },
        "testing": {
            "batch_size": args.decode_batch_tokens,
            "batch_type": "token",
            "beam_size": args.beam_size,
            "beam_alpha": args.beam_alpha,
            "max_output_length": -1,  # 1.5 × the longest source (with EOS) of the batch
            "eval_metrics": ["bleu"],
        },
        "model": {
            "initializer": "xavier_uniform",
            "encoder": {
                **recurrent,
                "hidden_size": args.hidden_size,
                "bidirectional": True,
                "embeddings": embeddings,
            },
            "decoder": {
                **recurrent,
                "hidden_size": args.hidden_size,
                "attention": "bahdanau",
                "input_feeding": True,
                "init_hidden": "bridge",
                "hidden_dropout": 0.0,
                "embeddings": embeddings,
            },
        },
    }


def seq2seq_params(cfg: Any, hidden_size: int, src_vocab: int, tgt_vocab: int) -> int:
    """Parameters of seq2seq's model with this ``model.hidden_size`` (built on the meta device: no memory)."""
    model_cfg = OmegaConf.merge(cfg.model, {"hidden_size": hidden_size})
    with torch.device("meta"):
        return parameter_count(EncoderDecoder.from_config(model_cfg, src_vocab, tgt_vocab))


def match_budget(datamodule: Seq2SeqDataModule, target: float, seed: int, ceiling: int) -> tuple[int, float]:
    """seq2seq's ``data.batch.max_tokens`` whose batches average ``target`` real target tokens (one epoch)."""
    dataset = datamodule.datasets["train"]
    lengths = dataset.lengths()
    tgt = [len(example.tgt) + 1 for example in dataset.examples]

    def mean_for(budget: int) -> float:
        return mean_target_tokens(TokenBudgetBatchSampler(lengths, budget, shuffle=True, seed=seed), tgt)

    return calibrate_budget(mean_for, target, low=max(lengths), high=max(ceiling, max(lengths)))


def match_seq2seq(
    args: argparse.Namespace, cfg: Any, datamodule: Seq2SeqDataModule, joey: dict[str, Any]
) -> dict[str, Any]:
    """seq2seq's hidden size (nearest parameter count) and token budget (same real target tokens per update)."""
    vocab = (datamodule.src_tokenizer.vocab_size, datamodule.tgt_tokenizer.vocab_size)
    hidden = args.seq2seq_hidden_size
    if hidden is None:
        hidden, params = closest_size(
            joey["params"], lambda h: seq2seq_params(cfg, h, *vocab), range(64, 1025, 16)
        )
    else:
        params = seq2seq_params(cfg, hidden, *vocab)
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


def benchmark(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    host = machine()  # before this process pins itself for the matmul measurement
    work = Path(args.work)
    joey_python = ensure_joeynmt(Path(args.joeynmt_venv))
    overrides, data_note, langs = data_overrides(Path(args.corpus))
    overrides = base_overrides(args, work) + overrides
    cfg = compose_config(overrides)

    print("data and tokenizers ...", flush=True)
    datamodule = Seq2SeqDataModule(cfg.data, cfg.paths.cache_dir, seed=cfg.seed)
    datamodule.setup("fit")
    folder = work / "joeynmt" / "data"
    write_joeynmt_data(datamodule, folder, langs, args.decode_sentences)
    common = {
        "threads": args.threads,
        "warmup": args.warmup,
        "updates": args.updates,
        "beam_size": args.beam_size,
    }
    joey_plan = {**common, "config": joeynmt_config(args, cfg, folder, langs)}
    joey_command = [joey_python, ROOT / "scripts" / "joeynmt_bench.py"]
    joey_info = run_worker([*joey_command, "inspect"], joey_plan, "joeynmt-inspect", work, args.threads)

    matching = match_seq2seq(args, cfg, datamodule, joey_info)
    hidden, budget = matching["seq2seq_hidden_size"], matching["seq2seq_max_tokens"]

    our_plan = {
        **common,
        "overrides": [*overrides, f"model.hidden_size={hidden}", f"data.batch.max_tokens={budget}"],
        "decode_sentences": args.decode_sentences,
        "beam_alpha": args.beam_alpha,
        "max_length_ratio": 1.5,  # ceil(1.5 · (|x| + 1)): JoeyNMT's 1.5 × source length with its EOS
        "max_length_constant": 1.5,
    }
    print("measuring (seq2seq, then JoeyNMT) ...", flush=True)
    systems = {
        "seq2seq": run_worker(
            [sys.executable, Path(__file__).resolve(), "--worker"], our_plan, "seq2seq", work, args.threads
        ),
        "joeynmt": run_worker([*joey_command, "run"], joey_plan, "joeynmt", work, args.threads),
    }
    pin_threads(args.threads)
    peak = measure_matmul_flops()
    for system in systems.values():
        system["train"]["flop_utilisation"] = system["train"]["model_flops_per_s"] / peak
    return {
        "schema": 1,
        "command": " ".join(["python", "scripts/benchmark.py", *argv]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": time.perf_counter() - started,
        "quick": args.quick,
        "machine": host,
        "data": data_note,
        "settings": {
            "threads": args.threads,
            "warmup": args.warmup,
            "updates": args.updates,
            "decode_sentences": args.decode_sentences,
            "train_pairs": len(datamodule.raw["train"]),
            "joeynmt_batch_tokens": args.batch_tokens,
            "decode_batch_tokens": args.decode_batch_tokens,
            "embedding_size": args.embedding_size,
            "joeynmt_hidden_size": args.hidden_size,
        },
        "beam_size": args.beam_size,
        "beam_alpha": args.beam_alpha,
        "matching": matching,
        "matmul_flops_per_s": peak,
        "systems": systems,
        "comparison": compare(systems),
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        plan_path, out_path = args.worker
        result = run_seq2seq(json.loads(Path(plan_path).read_text("utf-8")))
        Path(out_path).write_text(json.dumps(result, indent=2), "utf-8")
        return
    results = benchmark(args, argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", "utf-8")
    settings = results["settings"]
    print(
        f"\n{results['data']}; {settings['threads']} thread(s), {settings['updates']} timed updates after "
        f"{settings['warmup']}, {settings['decode_sentences']} test sentences; {results['machine']['cpu']}\n"
    )
    print(format_table(results))
    for note in caveats(results):
        print(f"WARNING {note}")
    print(f"\nwrote {out} ({results['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
