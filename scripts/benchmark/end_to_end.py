"""Time to BLEU, head to head: both systems trained through their own command lines for one wall-clock budget.

    make bench ARGS="--end-to-end --budget-minutes 30"

* **seq2seq**: ``python -m seq2seq.train`` with the benchmark's matched model and token budget — by default
  ``model/attention=luong_concat``, the architecture of JoeyNMT's ``bahdanau`` (the additive score queried with
  the state after the RNN step; ``--attention bahdanau`` queries before it, as Bahdanau et al. 2015) —
  ``trainer.max_time`` = the budget, validating every ``--validate-every`` updates (``val/elapsed_s`` and
  ``val/bleu`` in its ``metrics.csv``), then testing its best checkpoint (``results.json``).
* **JoeyNMT**: ``python -m joeynmt train`` on the same pieces with ``validation_freq`` = the same number of
  updates, stopped when the budget is spent (counted from its first epoch, as Lightning's ``max_time`` counts from
  the fit); each validation writes ``<steps>.hyps`` (its time: the file's modification time since then); then ``python -m joeynmt test`` decodes the test split with its
  best checkpoint.

Both decode greedily. JoeyNMT's outputs are pieces; they are joined with seq2seq's SentencePiece model and
scored with the same sacrebleu code as seq2seq's (:mod:`seq2seq.evaluation.scoring`), against the same raw
references, so dev BLEU, test BLEU and BLEU by length mean the same on both sides. Writes
``bench/end_to_end.json`` and ``bench/end_to_end.png`` (dev BLEU against wall-clock minutes) and prints the table.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import pin_threads
from seq2seq.evaluation.scoring import bleu_by_length, corpus_scores

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def joeynmt_e2e_config(
    config: dict[str, Any], folder: Path, langs: tuple[str, str], every: int
) -> dict[str, Any]:
    """The benchmark's JoeyNMT config with a dev set, validation every ``every`` updates, greedy decoding."""
    config = json.loads(json.dumps(config))
    config["data"]["dev"] = str(folder / "dev")
    config["training"].update(
        {"validation_freq": every, "logging_freq": every, "early_stopping_metric": "bleu", "epochs": 100000}
    )
    config["testing"]["beam_size"] = 1
    config["model_dir"] = str(Path(config["model_dir"]).parent / "model-e2e")
    config["training"]["overwrite"] = True
    return config


def seq2seq_overrides(
    overrides: list[str],
    budget_s: float,
    every: int,
    run_dir: Path,
    device: str = "cpu",
    precision: str = "32",
) -> list[str]:
    """``seq2seq-train`` overrides: the budget as ``trainer.max_time``, validation every ``every`` updates."""
    minutes, seconds = divmod(int(math.ceil(budget_s)), 60)
    hours, minutes = divmod(minutes, 60)
    gpu = ["trainer=gpu", f"trainer.precision={'bf16-mixed' if precision == 'bf16' else '32-true'}"]
    return [
        *[o for o in overrides if not o.startswith(("paths.output_dir=", "logger=", "trainer="))],
        *(gpu if device == "cuda" else ["trainer=cpu"]),
        "logger=csv",
        "decoding=greedy",
        f"trainer.max_time=00:{hours:02d}:{minutes:02d}:{seconds:02d}",
        "trainer.max_epochs=-1",
        f"trainer.val_check_interval={every}",
        "trainer.check_val_every_n_epoch=null",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "eval.attention_examples=0",
        "callbacks.early_stopping=null",
        f"hydra.run.dir={run_dir}",
    ]


def seq2seq_curve(run_dir: Path) -> list[tuple[float, float]]:
    """``(seconds since fit started, dev BLEU)`` at each validation, from the run's ``metrics.csv``."""
    points = []
    for path in sorted(run_dir.rglob("metrics.csv")):
        with path.open(encoding="utf-8") as rows:
            for row in csv.DictReader(rows):
                if row.get("val/elapsed_s") and row.get("val/bleu"):
                    points.append((float(row["val/elapsed_s"]), float(row["val/bleu"])))
    return sorted(points)


def joined(lines: list[str], processor: Any) -> list[str]:
    """JoeyNMT's outputs (space-separated pieces) as text: SentencePiece's own decoding of the pieces."""
    return [processor.decode_pieces(line.split()) for line in lines]


def joeynmt_curve(
    model_dir: Path, started: float, refs: list[str], processor: Any
) -> list[tuple[float, float]]:
    """``(seconds since JoeyNMT started, dev BLEU)`` for each ``<steps>.hyps`` file it wrote, rescored."""
    points = []
    for path in model_dir.glob("*.hyps"):
        if not path.stem.isdigit():
            continue
        hyps = joined(path.read_text("utf-8").splitlines(), processor)
        if len(hyps) == len(refs):
            points.append((path.stat().st_mtime - started, corpus_scores(hyps, refs)["bleu"]))
    return sorted(points)


def run_joeynmt(python: Path, config: dict[str, Any], work: Path, budget_s: float) -> float:
    """Train for ``budget_s`` seconds from its first epoch (as ``trainer.max_time`` counts from seq2seq's fit),
    then stop it (SIGINT, then SIGKILL) and test its best checkpoint.

    Returns the wall-clock time (``time.time()``) its training loop started: when its ``train.log`` says
    ``EPOCH 1`` (data loading and model building come before, on both sides).
    """
    import yaml

    path = work / "joeynmt-e2e.yaml"
    path.write_text(yaml.safe_dump(config), "utf-8")
    (work / "logs").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WANDB_MODE": "disabled"}
    train_log = Path(config["model_dir"]) / "train.log"
    with (work / "logs" / "joeynmt-e2e.log").open("w", encoding="utf-8") as log:
        process = subprocess.Popen(
            [python, "-m", "joeynmt", "train", path, "--skip-test"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
        started = time.time()
        while process.poll() is None and not _says(train_log, "EPOCH 1"):
            time.sleep(0.5)
            started = time.time()
        try:
            process.wait(timeout=max(0.0, started + budget_s - time.time()))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        output = Path(config["model_dir"]) / "final"
        subprocess.run(
            [python, "-m", "joeynmt", "test", path, "--output-path", output],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
            check=False,
        )
    return started


def _says(log: Path, text: str) -> bool:
    return log.is_file() and text in log.read_text("utf-8", errors="replace")


def time_to(curve: list[tuple[float, float]], bleu: float) -> float | None:
    """Seconds until the curve first reaches ``bleu``; None if it never does."""
    return next((t for t, b in curve if b >= bleu), None)


def summarise(
    curves: dict[str, list[tuple[float, float]]], tests: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Best dev BLEU, time to it and to JoeyNMT's best, final test BLEU and BLEU by length, the targets."""
    joey_best = max((b for _, b in curves["joeynmt"]), default=None)
    out: dict[str, Any] = {"curves": curves, "systems": {}}
    for name, curve in curves.items():
        best = max((b for _, b in curve), default=None)
        out["systems"][name] = {
            "best_dev_bleu": best,
            "time_to_best_s": None if best is None else time_to(curve, best),
            "time_to_joeynmt_best_s": None if joey_best is None else time_to(curve, joey_best),
            "validations": len(curve),
            **tests.get(name, {}),
        }
    ours, joey = out["systems"]["seq2seq"], out["systems"]["joeynmt"]
    ratio = (
        None
        if ours["time_to_joeynmt_best_s"] is None or not joey["time_to_best_s"]
        else ours["time_to_joeynmt_best_s"] / joey["time_to_best_s"]
    )
    out["targets"] = {
        "time_to_joeynmt_best_ratio": ratio,  # target ≤ 0.5
        "time_met": None if ratio is None else ratio <= 0.5,
        "final_bleu_met": None
        if ours.get("test_bleu") is None or joey.get("test_bleu") is None
        else ours["test_bleu"] >= joey["test_bleu"],
    }
    return out


def format_e2e(summary: dict[str, Any]) -> str:
    """The head-to-head table: dev BLEU and times, final test BLEU and BLEU by source length."""

    def num(value: Any, digits: int = 1) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    systems = summary["systems"]
    attention = summary.get("seq2seq_attention")
    ours = "seq2seq" if attention is None else f"seq2seq (`{attention}`)"
    lines = [f"| | {ours} | JoeyNMT 2.3.0 (`bahdanau`) |", "|---|---:|---:|"]
    rows = [
        ("validations", lambda s: str(s["validations"])),
        ("best dev BLEU", lambda s: num(s["best_dev_bleu"])),
        ("minutes to its best dev BLEU", lambda s: num(_minutes(s["time_to_best_s"]))),
        ("minutes to JoeyNMT's best dev BLEU", lambda s: num(_minutes(s["time_to_joeynmt_best_s"]))),
        ("final test BLEU (best checkpoint, greedy)", lambda s: num(s.get("test_bleu"))),
    ]
    for label, get in rows:
        lines.append(f"| {label} | {get(systems['seq2seq'])} | {get(systems['joeynmt'])} |")
    buckets = [row["bucket"] for row in systems["seq2seq"].get("test_bleu_by_length") or []]
    for i, bucket in enumerate(buckets):
        cells = [
            num((systems[n].get("test_bleu_by_length") or [{}] * len(buckets))[i].get("bleu"))
            for n in systems
        ]
        lines.append(f"| test BLEU, sources of {bucket} words | {cells[0]} | {cells[1]} |")
    targets = summary["targets"]
    lines.append(
        f"\nseq2seq's time to JoeyNMT's best dev BLEU / JoeyNMT's: {num(targets['time_to_joeynmt_best_ratio'], 2)} "
        f"(target ≤ 0.5: {_yes(targets['time_met'])}); final test BLEU not worse: {_yes(targets['final_bleu_met'])}"
    )
    return "\n".join(lines)


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 60


def _yes(met: bool | None) -> str:
    return "not measured" if met is None else ("✓" if met else "✗")


def plot(curves: dict[str, list[tuple[float, float]]], path: Path, budget_s: float) -> None:
    """Dev BLEU against wall-clock minutes, both systems in one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, label in (("seq2seq", "seq2seq"), ("joeynmt", "JoeyNMT 2.3.0")):
        points = curves[name]
        ax.plot([t / 60 for t, _ in points], [b for _, b in points], marker="o", markersize=3, label=label)
    last = max((t for points in curves.values() for t, _ in points), default=0.0)
    ax.set_xlim(0, max(budget_s, last) / 60 * 1.02)  # a validation may end after the budget
    ax.set_ylim(bottom=0)
    ax.set_xlabel("wall-clock minutes since training started")
    ax.set_ylabel("dev BLEU (greedy)")
    ax.set_title("Time to BLEU: same data, matched models, same budget")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_end_to_end(args: Any, argv: list[str]) -> dict[str, Any]:
    """Train both systems for ``args.budget_minutes`` each (one after the other), plot and tabulate."""
    from run import matched_setup

    budget_s = 60 * args.budget_minutes
    pin_threads(args.threads)  # both trainings inherit the CPUs; OMP_NUM_THREADS sets their torch threads
    os.environ.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    setup = matched_setup(args)  # data, JoeyNMT's inspected model, the matched seq2seq overrides
    work, datamodule = Path(args.work), setup["datamodule"]
    val, test = datamodule.raw["val"], datamodule.raw["test"]
    processor = datamodule.tgt_tokenizer.processor
    folder = work / "joeynmt" / "data"
    write_split(datamodule, folder, "dev", val, setup["langs"])
    write_split(datamodule, folder, "test", test, setup["langs"])

    run_dir = work / "seq2seq-e2e"
    overrides = seq2seq_overrides(
        setup["overrides"], budget_s, args.validate_every, run_dir, args.device, args.precision
    )
    print(f"seq2seq: training for {args.budget_minutes:g} min ...", flush=True)
    with (work / "logs" / "seq2seq-e2e.log").open("w", encoding="utf-8") as log:
        env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, "-m", "seq2seq.train", *overrides], cwd=ROOT, env=env, stdout=log,
                       stderr=log, check=True)  # fmt: skip
    results = json.loads((run_dir / "results.json").read_text("utf-8"))
    tests = {
        "seq2seq": {
            "test_bleu": results["metrics"].get("test/bleu"),
            "test_bleu_by_length": results.get("bleu_by_length"),
        }
    }
    config = joeynmt_e2e_config(setup["joeynmt_config"], folder, setup["langs"], args.validate_every)
    print(f"JoeyNMT: training for {args.budget_minutes:g} min ...", flush=True)
    started = run_joeynmt(setup["joeynmt_python"], config, work, budget_s)
    model_dir = Path(config["model_dir"])
    curves = {
        "seq2seq": seq2seq_curve(run_dir),
        "joeynmt": joeynmt_curve(model_dir, started, [tgt for _, tgt in val], processor),
    }
    test_out = next(iter(sorted(model_dir.glob("final*test*"))), None)
    if test_out is not None:
        hyps = joined(test_out.read_text("utf-8").splitlines(), processor)
        refs, srcs = [tgt for _, tgt in test], [src for src, _ in test]
        tests["joeynmt"] = {
            "test_bleu": corpus_scores(hyps, refs)["bleu"],
            "test_bleu_by_length": bleu_by_length(
                srcs, hyps, refs, list(results["config"]["eval"]["length_buckets"])
            ),
        }
    summary = {
        "command": " ".join(["python", "scripts/benchmark/run.py", *argv]),
        "budget_minutes": args.budget_minutes,
        "validate_every": args.validate_every,
        "seq2seq_attention": args.attention,
        "seed": args.seed,  # seq2seq's; JoeyNMT's model is initialised unseeded
        "data": setup["data_note"],
        **summarise(curves, tests),
    }
    out = Path(args.out).with_name("end_to_end.json")  # its folder: made by run.py's main
    out.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", "utf-8")
    plot(curves, out.with_suffix(".png"), budget_s)
    print(format_e2e(summary))
    print(f"\nwrote {out} and {out.with_suffix('.png')}")
    return summary


def write_split(datamodule: Any, folder: Path, split: str, pairs: list[Any], langs: tuple[str, str]) -> None:
    """A split for JoeyNMT, segmented into seq2seq's pieces (as ``joeynmt_setup.write_joeynmt_data``)."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizers = (datamodule.src_tokenizer, datamodule.tgt_tokenizer)
    for side, (lang, tokenizer) in enumerate(zip(langs, tokenizers, strict=True)):
        pieces = tokenizer.processor.encode([pair[side] for pair in pairs], out_type=str)
        (folder / f"{split}.{lang}").write_text("".join(" ".join(p) + "\n" for p in pieces), "utf-8")
