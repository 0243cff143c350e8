"""This project's side of the benchmark: its set-up, its matching to JoeyNMT, and its measured run.

The measuring process runs on its own, driven by ``run.py``:

    .venv/bin/python scripts/benchmark/seq2seq_side.py PLAN.json OUT.json

:func:`run_seq2seq` measures through the project's real code paths: the data module's tokenizers and
``TokenBudgetBatchSampler`` batches feed a plain loop of ``Seq2SeqModule.training_step`` → backward →
gradient clipping → the module's Adam step; then :func:`seq2seq.models.decoding.decode` (greedy, then beam)
decodes the first test sentences in length-sorted evaluation batches (:func:`eval_loader`). Timing,
counting and memory come from ``harness.py`` and ``flops.py``, as on JoeyNMT's side.

This is the only part of the benchmark that imports seq2seq.
"""

from __future__ import annotations

import copy
import json
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict
from pytorch_lightning import Callback
from torch import nn

from flops import FlopProfile, counted_flops, seq2seq_flop_profile
from harness import (
    BatchShape,
    UpdateRecord,
    autocast,
    calibrate_budget,
    check_device,
    cycle,
    mean_target_tokens,
    parameter_count,
    peak_gpu_mib,
    peak_rss_mib,
    pin_threads,
    summarise_training,
    synchronize,
    time_decoding,
    time_updates,
)
from seq2seq.data.batching import PairDataset, TokenBudgetBatchSampler
from seq2seq.data.datamodule import Seq2SeqDataModule, eval_loader
from seq2seq.data.tokenizer import PAD_ID
from seq2seq.evaluation.tracking import build_loggers
from seq2seq.models.decoding import Decoding, decode_stream
from seq2seq.models.search import Hypotheses
from seq2seq.models.seq2seq import EncoderDecoder
from seq2seq.models.unroll import compile_seconds
from seq2seq.training.allocator import keep_freed_memory, release_freed_memory
from seq2seq.training.callbacks import build_callbacks
from seq2seq.training.module import Seq2SeqModule, set_model_speed

CONF = Path(__file__).resolve().parents[2] / "conf"

# ------------------------------------------------------------------------------------------ set-up


def compose_config(overrides: Sequence[str]) -> Any:
    """``conf/train.yaml`` composed with ``overrides``, as ``python -m seq2seq.train`` would."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


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


def base_overrides(
    embedding_size: int, seed: int, decode_batch_tokens: int, work: Path, attention: str = "bahdanau"
) -> list[str]:
    """The reference model: bi-GRU encoder, GRU decoder, ``attention`` (``bahdanau``: queried with the state
    before the RNN step; ``luong_concat``: the same additive score queried after it, as JoeyNMT's
    ``bahdanau``), input feeding, no dropout."""
    return [
        "logger=none",
        "trainer=cpu",
        "model/encoder=gru",
        f"model/attention={attention}",
        "teacher_forcing=always",
        "model.encoder.bidirectional=true",
        "model.encoder.num_layers=1",
        "model.encoder.dropout=0.0",
        "model.decoder.input_feeding=true",
        f"model.embedding_size={embedding_size}",
        f"paths.output_dir={work / 'seq2seq'}",
        f"seed={seed}",
        f"data.batch.eval_max_tokens={decode_batch_tokens}",
    ]


def load_data(cfg: Any) -> Seq2SeqDataModule:
    """``cfg``'s data module, set up: splits read and filtered, SentencePiece models trained or loaded."""
    datamodule = Seq2SeqDataModule(cfg.data, cfg.paths.cache_dir, seed=cfg.seed)
    datamodule.setup("fit")
    return datamodule


# ------------------------------------------------------------------------------------------ matching


def model_params(cfg: Any, hidden_size: int, src_vocab: int, tgt_vocab: int) -> int:
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


def matched_setup(args: Any) -> tuple[list[str], Seq2SeqDataModule, dict[str, Any]]:
    """The benchmark's model and batches for the scripts that time one side (``lever_times``, ``decode_times``).

    ``args``: ``corpus``, ``embedding_size``, ``seed``, ``work``, ``hidden_size`` and ``target_tokens`` (None: the
    benchmark's match, 288 / 970 on the Bible, 304 / 1100 on the toy task), ``extra`` Hydra overrides and
    optionally ``attention`` (``bahdanau`` when absent; ``luong_concat``: the time-to-BLEU model). Applies
    ``speed.keep_freed_memory`` (process-wide). Returns the overrides (``data.batch.max_tokens`` matched to the
    target tokens per update), the data module set up with them, and ``toy``, ``hidden``, ``max_tokens``.
    """
    data, _, _ = data_overrides(Path(args.corpus))
    toy = "data=toy_translation" in data
    hidden = args.hidden_size or (304 if toy else 288)
    attention = getattr(args, "attention", None) or "bahdanau"
    base = base_overrides(args.embedding_size, args.seed, 2000, Path(args.work), attention)
    base += [*data, f"model.hidden_size={hidden}", *args.extra]
    cfg = compose_config(base)
    keep_freed_memory(cfg.speed)  # --extra speed.keep_freed_memory=false for glibc's default
    budget, _ = match_budget(load_data(cfg), args.target_tokens or (1100 if toy else 970), args.seed, 20000)
    base.append(f"data.batch.max_tokens={budget}")
    return base, load_data(compose_config(base)), {"toy": toy, "hidden": hidden, "max_tokens": budget}


# ------------------------------------------------------------------------------------------ measurement


def run_seq2seq(plan: dict[str, Any]) -> dict[str, Any]:
    """Measure this project through its real code paths (run in a process of its own).

    Args:
        plan: ``overrides`` (Hydra), ``threads``, ``warmup``, ``updates``, ``decode_sentences``,
            ``beam_size``, ``beam_alpha``, ``max_length_ratio``, ``max_length_constant``; optional
            ``device`` (``cpu`` | ``cuda``), ``precision`` (``32`` | ``bf16``: autocast) and ``lightning``
            (also time the same updates through Lightning's ``Trainer``; default true).
    """
    cpus = pin_threads(plan["threads"])
    device = check_device(plan.get("device", "cpu"))
    precision = str(plan.get("precision", "32"))
    cfg = compose_config(plan["overrides"])
    keep_freed_memory(cfg.speed)  # as seq2seq-train does
    torch.manual_seed(cfg.seed)
    datamodule = load_data(cfg)
    module = Seq2SeqModule(cfg, datamodule.src_tokenizer, datamodule.tgt_tokenizer).to(device)
    model = module.model
    profile = seq2seq_flop_profile(model)

    def timed_harness(module: Seq2SeqModule) -> list[UpdateRecord]:
        """The harness loop's timed updates of ``module`` on the data module's batches (each run the same)."""
        with warnings.catch_warnings():  # training_step's self.log() has no Trainer to log to here
            warnings.filterwarnings("ignore", message=".*self.log.*")
            update = training_update(module, cfg, device, precision)
            return time_updates(
                training_batches(datamodule), update, shape_of, plan["warmup"], plan["updates"]
            )

    records = timed_harness(module)

    module.eval()
    test = PairDataset(datamodule.datasets["test"].examples[: plan["decode_sentences"]])
    budget = {
        "max_length_ratio": plan["max_length_ratio"],
        "max_length_constant": plan["max_length_constant"],
    }
    budget["refill"] = bool(cfg.decoding.get("refill", True))  # decoding.refill: continuous batching
    searches = {
        "greedy": Decoding("greedy", **budget),
        "beam": Decoding("beam", beam_size=plan["beam_size"], length_penalty=plan["beam_alpha"], **budget),
    }

    def searched(decoding: Decoding) -> Iterator[tuple[Any, Hypotheses]]:
        # the longest sentences first: with decoding.refill the shorter ones fill the rows around them
        batches = (
            batch.to(device) for batch in reversed(list(eval_loader(test, cfg.data.batch.eval_max_tokens)))
        )
        with autocast(device, precision):
            yield from decode_stream(model, batches, decoding)

    def lengths(searched_batch: tuple[Any, Hypotheses]) -> list[int]:
        return [len(tokens) for tokens in searched_batch[1].tokens]

    decoded = {kind: time_decoding(searched(decoding), lengths) for kind, decoding in searches.items()}
    params, counted = parameter_count(model), flop_check(model, profile)
    peak_rss = peak_rss_mib()  # training and decoding: the work JoeyNMT's process does
    lightning = harness_again = None
    if plan.get("lightning", True):
        # one model (and its Adam state) alive at a time, its freed blocks handed back: each phase's peak memory
        # is its own, as in a fresh seq2seq-train process
        del module, model
        release_freed_memory()
        lightning = summarise_training(lightning_records(cfg, datamodule, plan, device, precision), profile)
        release_freed_memory()
        # the harness once more, right after, on a fresh model of the same seed and the same batches: the
        # Lightning row is compared with both harness runs around it, so that the machine drifting over the
        # minutes in between does not pass for the loop's cost
        torch.manual_seed(cfg.seed)
        again = Seq2SeqModule(cfg, datamodule.src_tokenizer, datamodule.tgt_tokenizer).to(device)
        harness_again = summarise_training(timed_harness(again), profile)
    return {
        **decoded,
        "lightning": lightning,
        "train_after_lightning": harness_again,
        "device": str(device),
        "precision": precision,
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
        "peak_gpu_mib": peak_gpu_mib(),
        "compile_s": compile_seconds(),  # speed.compile: the first compiled step's wall time (in the warm-up)
        "reference_mean_length": sum(len(e.tgt) for e in test.examples) / len(test),
        "params": params,
        "train": summarise_training(records, profile),
        "flop_profile": asdict(profile),
        "flop_check": counted,
        "peak_rss_mib": peak_rss,
        # the process's peak, the Lightning phases included; at least the earlier reading: the kernel updates
        # VmHWM lazily, so memory handed back with malloc_trim (madvise) can lower what it reports later
        "peak_rss_mib_with_lightning": max(peak_rss, peak_rss_mib()),
        "cpus": cpus,
        "threads": torch.get_num_threads(),
        "setup": {
            "embedding_size": cfg.model.embedding_size,
            "hidden_size": cfg.model.hidden_size,
            "max_tokens": cfg.data.batch.max_tokens,
            "eval_max_tokens": cfg.data.batch.eval_max_tokens,
            "src_vocab": datamodule.src_tokenizer.vocab_size,
            "tgt_vocab": datamodule.tgt_tokenizer.vocab_size,
        },
    }


def training_update(
    module: Seq2SeqModule, cfg: Any, device: torch.device, precision: str = "32"
) -> Callable[[Any], None]:
    """One update of the harness loop, the module put in training mode: ``training_step`` (under autocast) →
    backward → clipping at ``trainer.gradient_clip_val`` → the module's own optimiser step."""
    optimizers = module.configure_optimizers()
    optimizer = optimizers["optimizer"] if isinstance(optimizers, dict) else optimizers
    clip = cfg.trainer.get("gradient_clip_val")
    module.train()

    def update(batch: Any) -> None:
        with autocast(device, precision):
            loss = module.training_step(batch.to(device), 0)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return update


def training_batches(datamodule: Seq2SeqDataModule) -> Callable[[], Any]:
    """``next_batch`` over the training loader's epochs 0, 1, … (each epoch its own shuffle)."""

    def epoch(number: int) -> Any:
        loader = datamodule.train_dataloader()
        loader.batch_sampler.set_epoch(number)
        return loader

    return cycle(epoch)


def shape_of(batch: Any) -> BatchShape:
    return BatchShape.from_lengths(batch.src_lengths.tolist(), (batch.tgt_out != PAD_ID).sum(1).tolist())


class UpdateClock(Callback):
    """Times each update inside ``Trainer.fit``: from one training batch's end to the next one's (so fetching,
    collation, Lightning's own work, logging and callbacks are all in it), the first from its batch's start."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.shapes: list[BatchShape] = []

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        if not self.stamps:
            synchronize()
            self.stamps.append(time.perf_counter())

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        synchronize()
        self.stamps.append(time.perf_counter())
        self.shapes.append(shape_of(batch))

    def records(self, warmup: int) -> list[UpdateRecord]:
        seconds = [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]
        return [UpdateRecord(s, t) for s, t in zip(self.shapes, seconds, strict=True)][warmup:]


def lightning_records(
    cfg: Any, datamodule: Seq2SeqDataModule, plan: dict[str, Any], device: torch.device, precision: str
) -> list[UpdateRecord]:
    """The same updates through the real training loop: ``seq2seq-train``'s trainer config, callbacks and
    loggers, a fresh model of the same seed, the data module's batches; validation off (the harness has none)."""
    torch.manual_seed(cfg.seed)
    module = Seq2SeqModule(cfg, datamodule.src_tokenizer, datamodule.tgt_tokenizer)
    run_dir = Path(cfg.paths.output_dir) / "lightning"
    clock = UpdateClock()
    trainer_cfg = OmegaConf.merge(
        OmegaConf.to_container(cfg.trainer),
        {
            "accelerator": "gpu" if device.type == "cuda" else "cpu",
            "precision": {"32": "32-true", "bf16": "bf16-mixed"}[precision],
            "max_steps": plan["warmup"] + plan["updates"],
            "max_epochs": -1,
            "limit_val_batches": 0,
            "num_sanity_val_steps": 0,
        },
    )
    with open_dict(cfg):
        cfg.trainer = trainer_cfg
    trainer = hydra.utils.instantiate(
        trainer_cfg,
        callbacks=[*build_callbacks(cfg, run_dir), clock],
        logger=build_loggers(cfg, run_dir, {}),
        default_root_dir=str(run_dir),
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(val_dataloader|limit_val_batches|num_workers).*")
        trainer.fit(module, datamodule=datamodule)
    return clock.records(plan["warmup"])


def flop_check(model: nn.Module, profile: FlopProfile) -> dict[str, int]:
    """Counted (``FlopCounterMode``) vs predicted forward FLOPs on an unpadded 2 × 5 → 2 × 4 batch.

    Counted on a copy with ``speed.onednn_matmul`` off: oneDNN's products pad their rows (models/onednn.py), and
    the count would include the padding's FLOPs.
    """
    model = copy.deepcopy(model)
    set_model_speed(model, {"onednn_matmul": False})
    device = next(model.parameters()).device
    src = torch.full((2, 5), 5, dtype=torch.long, device=device)
    tgt = torch.full((2, 4), 5, dtype=torch.long, device=device)
    counted = counted_flops(lambda: model(src, torch.tensor([5, 5]), tgt))
    return {"counted": counted, "predicted": profile.forward(BatchShape.from_lengths([5, 5], [4, 4]))}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        raise SystemExit(f"usage: {Path(__file__).name} PLAN.json OUT.json")
    plan_path, out_path = argv
    result = run_seq2seq(json.loads(Path(plan_path).read_text(encoding="utf-8")))
    Path(out_path).write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
