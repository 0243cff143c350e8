"""JoeyNMT 2.3.0's side of the benchmark. Runs inside JoeyNMT's own virtualenv, driven by run.py:

    bench/.venv-joeynmt/bin/python scripts/benchmark/joeynmt_side.py inspect PLAN.json OUT.json
    bench/.venv-joeynmt/bin/python scripts/benchmark/joeynmt_side.py run PLAN.json OUT.json
    bench/.venv-joeynmt/bin/python scripts/benchmark/joeynmt_side.py curve PLAN.json OUT.json [key.path=value ...]

``PLAN.json`` holds the JoeyNMT config (``config``) that ``run.py`` wrote (``joeynmt_setup.py``), and the
measurement settings. ``inspect`` builds the model and walks one epoch of JoeyNMT's training batch sampler (no
training): its parameter count and real target tokens per update, so seq2seq's model and batches can be
matched to it. ``run`` measures, through JoeyNMT's own code: its data loader and ``Batch``,
``TrainManager._train_step`` (forward, loss, backward) followed by the rest of one update of
``TrainManager.train_and_validate`` (gradient clipping, optimiser step, zero_grad); then
``joeynmt.search.search`` (greedy and beam) over its test iterator, as ``joeynmt.prediction.predict``
calls it. ``curve`` records the training loss of the plan's first ``updates`` updates (untimed), with
optional config overrides (``model.embed_initializer=xavier_uniform``: JoeyNMT's own default). Timing,
counting and memory come from ``harness.py`` and ``flops.py`` (they need only torch; Python puts this
script's folder on ``sys.path``), so both systems are measured the same way.
"""

from __future__ import annotations

import copy
import json
import logging
import statistics
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from joeynmt.batch import Batch
from joeynmt.config import parse_global_args, set_validation_args
from joeynmt.prediction import prepare
from joeynmt.search import search
from joeynmt.training import TrainManager

from flops import counted_flops, joeynmt_flop_profile
from harness import (
    BatchShape,
    cycle,
    length_before_eos,
    padding_efficiency,
    parameter_count,
    peak_gpu_mib,
    peak_rss_mib,
    pin_threads,
    summarise_training,
    time_decoding,
    time_updates,
)


def quiet_joeynmt() -> None:
    """JoeyNMT gives every module an INFO stream handler; keep its warnings only."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("joeynmt"):
            logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)


def load(plan: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """Parse the config and build the model and data exactly as ``joeynmt train`` does."""
    args = parse_global_args(copy.deepcopy(plan["config"]), rank=0, mode="train")
    args.model_dir.mkdir(parents=True, exist_ok=True)
    model, train_data, _, test_data = prepare(args, rank=0, mode="train")
    quiet_joeynmt()
    return args, model, train_data, test_data


def train_iterator(args: Any, model: Any, data: Any, epoch: int) -> Any:
    """The training iterator of epoch ``epoch`` (1-based), seeded as ``train_and_validate`` seeds it."""
    loader = data.make_iter(
        batch_size=args.train.batch_size,
        batch_type=args.train.batch_type,
        seed=args.seed,
        shuffle=args.train.shuffle,
        num_workers=0,
        device=args.device,
        eos_index=model.eos_index,
        pad_index=model.pad_index,
    )
    data.seed = args.seed + epoch
    loader.batch_sampler.set_seed(args.seed + epoch)
    return loader


def inspect(plan: dict[str, Any]) -> dict[str, Any]:
    """Parameter count, vocabularies and one epoch of batch sizes (indices only; nothing is trained)."""
    args, model, train_data, _ = load(plan)
    shapes = []
    for indices in train_iterator(args, model, train_data, epoch=1).batch_sampler:
        pairs = [train_data[i] for i in indices]  # (index, source tokens, target tokens)
        shapes.append(
            BatchShape.from_lengths([len(s) + 1 for _, s, _ in pairs], [len(t) + 1 for *_, t in pairs])
        )
    return {
        "params": parameter_count(model),
        "src_vocab": len(model.src_vocab),
        "tgt_vocab": len(model.trg_vocab),
        "batches": len(shapes),
        "tgt_tokens_per_update": sum(s.tgt_tokens for s in shapes) / len(shapes),
        "padding_efficiency": padding_efficiency(shapes),
    }


def shape_of(batch: Batch) -> BatchShape:
    """Source lengths count JoeyNMT's EOS; targets are the labels ``y_1 … y_n EOS`` (``batch.trg``)."""
    return BatchShape.from_lengths(batch.src_length.tolist(), batch.trg_mask.sum(dim=(1, 2)).tolist())


def flop_check(model: Any, profile: Any) -> dict[str, int]:
    """Counted vs predicted forward FLOPs on an unpadded batch: 2 sources of 5 (with EOS), 2 targets of 5."""
    bos, eos, pad = model.bos_index, model.eos_index, model.pad_index
    src = torch.tensor([[5, 6, 7, 8, eos]] * 2)
    trg = torch.tensor([[bos, 5, 6, 7, 8, eos]] * 2)
    device = next(model.parameters()).device
    batch = Batch(src, torch.tensor([5, 5]), None, trg, None, torch.arange(2), device, pad, eos)
    counted = counted_flops(lambda: model(return_type="loss", **vars(batch)))
    return {"counted": counted, "predicted": profile.forward(BatchShape.from_lengths([5, 5], [5, 5]))}


def train_manager(args: Any, model: Any) -> TrainManager:
    """JoeyNMT's ``TrainManager`` (optimiser, clipping, scheduler) as ``joeynmt train`` builds it."""
    return TrainManager(
        rank=0,
        model=model,
        model_dir=args.model_dir,
        device=args.device,
        n_gpu=args.n_gpu,
        num_workers=0,
        autocast=args.autocast,
        seed=args.seed,
        train_args=args.train,
        dev_args=set_validation_args(args.test),
    )


def updater(trainer: TrainManager, model: Any) -> Callable[[Batch], float]:
    """One update of ``TrainManager.train_and_validate`` (batch_multiplier 1); returns the batch's loss."""

    def update(batch: Batch) -> float:
        loss, _ = trainer._train_step(batch)
        if trainer.clip_grad_fun is not None:
            trainer.clip_grad_fun(parameters=model.parameters())
        if trainer.scaler is None:  # fp16 on CUDA: JoeyNMT's GradScaler, as in train_and_validate
            trainer.optimizer.step()
        else:
            trainer.scaler.step(trainer.optimizer)
            trainer.scaler.update()
        if trainer.scheduler_step_at == "step":
            trainer.scheduler.step(trainer.stats.steps)
        model.zero_grad()
        trainer.stats.steps += 1
        return loss

    return update


def curve(plan: dict[str, Any]) -> dict[str, Any]:
    """The training loss of ``plan["updates"]`` updates from the start (nothing timed): mean per 50."""
    pin_threads(plan["threads"])
    args, model, train_data, _ = load(plan)
    update = updater(train_manager(args, model), model)
    next_batch = cycle(lambda epoch: train_iterator(args, model, train_data, epoch + 1))
    model.train()
    losses = [update(next_batch()) for _ in range(plan["updates"])]
    return {
        "model": plan["config"]["model"],
        "loss_per_50_updates": [statistics.fmean(losses[i : i + 50]) for i in range(0, len(losses), 50)],
    }


def override(config: dict[str, Any], setting: str) -> None:
    """Apply ``dotted.key=value`` (value read as JSON where it parses, else as text) to JoeyNMT's config."""
    key, _, text = setting.partition("=")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    *parents, last = key.split(".")
    for name in parents:
        config = config.setdefault(name, {})
    config[last] = value


def run(plan: dict[str, Any]) -> dict[str, Any]:
    cpus = pin_threads(plan["threads"])
    args, model, train_data, test_data = load(plan)
    trainer = train_manager(args, model)
    profile = joeynmt_flop_profile(model)

    update = updater(trainer, model)
    next_batch = cycle(lambda epoch: train_iterator(args, model, train_data, epoch + 1))
    model.train()
    records = time_updates(next_batch, update, shape_of, plan["warmup"], plan["updates"])

    model.eval()

    def decode(beam_size: int) -> dict[str, float]:
        def one_batch(batch: Batch) -> list[int]:
            batch.sort_by_src_length()  # as predict() does
            output, _, _ = search(
                model=model,
                batch=batch,
                max_output_length=args.test.max_output_length,
                beam_size=beam_size,
                beam_alpha=args.test.beam_alpha,
                n_best=1,
                return_attention=False,
                return_prob="none",
                generate_unk=args.test.generate_unk,
                repetition_penalty=-1,
                no_repeat_ngram_size=-1,
                autocast=args.autocast,
            )
            return [length_before_eos(row, model.eos_index, model.pad_index) for row in output.tolist()]

        loader = test_data.make_iter(
            batch_size=args.test.batch_size,
            batch_type=args.test.batch_type,
            shuffle=False,
            seed=args.seed,
            num_workers=0,
            device=args.device,
            eos_index=model.eos_index,
            pad_index=model.pad_index,
        )
        return time_decoding(loader, one_batch)

    greedy = decode(1)
    beam = decode(plan["beam_size"])
    return {
        "params": parameter_count(model),
        "train": summarise_training(records, profile),
        "greedy": greedy,
        "beam": beam,
        "flop_profile": asdict(profile),
        "flop_check": flop_check(model, profile),
        "peak_rss_mib": peak_rss_mib(),
        "peak_gpu_mib": peak_gpu_mib(),
        "device": str(args.device),
        "precision": "fp16" if (args.autocast or {}).get("enabled") else "32",
        "cpus": cpus,
        "threads": torch.get_num_threads(),
        "setup": {
            "batch_size": args.train.batch_size,
            "batch_type": args.train.batch_type,
            "test_batch_size": args.test.batch_size,
            "src_vocab": len(model.src_vocab),
            "tgt_vocab": len(model.trg_vocab),
            "max_output_length": "1.5 × longest source in the batch (JoeyNMT's -1)",
        },
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"inspect": inspect, "run": run, "curve": curve}
    if len(argv) < 3 or argv[0] not in commands:
        raise SystemExit(
            f"usage: {Path(__file__).name} {{inspect,run,curve}} PLAN.json OUT.json [key.path=value ...]"
        )
    command, plan_path, out_path, *settings = argv
    plan = json.loads(Path(plan_path).read_text(encoding="utf-8"))
    for setting in settings:
        override(plan["config"], setting)
    result = commands[command](plan)
    Path(out_path).write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
