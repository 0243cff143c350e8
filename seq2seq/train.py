"""Train, test and summarise one model: ``seq2seq-train [hydra overrides]`` (or ``python -m seq2seq.train``).

Validates the config, wires the pieces it names — data module, model, loggers, callbacks, trainer — fits,
tests the best checkpoint and leaves the run's record behind (docs/architecture.md, "What a run leaves
behind"). Returns the best ``val/bleu`` so Hydra sweepers (Optuna) can optimise it. A failed job still
writes ``results.json`` with ``status: failed``, so a sweep never loses track of it.

``trainer=ddp`` / ``ddp_cpu`` run Lightning's DDP, whose child processes re-run this script in the same run
directory; only rank 0 writes files and logs to W&B. ``ckpt_path=last`` resumes
``<run dir>/checkpoints/last.ckpt`` exactly; SIGTERM, Ctrl+C and SLURM pre-emption stop training between two
steps with that checkpoint saved, and ``results.json`` says ``status: interrupted`` and how to resume.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from seq2seq.config import CONF_DIR
from seq2seq.config.checks import full_error, validate_train
from seq2seq.config.sweep import swept_values
from seq2seq.data.datamodule import Seq2SeqDataModule
from seq2seq.evaluation.artifacts import split_metrics, split_records, with_val, write_outputs
from seq2seq.evaluation.console import print_summary
from seq2seq.evaluation.record import (
    CHOICE_GROUPS,
    RESULTS,
    build_results,
    read_sweep_plan,
    run_name,
    sweep_group,
    write_json_atomic,
)
from seq2seq.evaluation.tracking import build_loggers, finish_wandb, log_config, log_summary
from seq2seq.inference.signals import Stopped, stop_on_signals
from seq2seq.training.allocator import keep_freed_memory
from seq2seq.training.callbacks import build_callbacks
from seq2seq.training.checkpoint_io import AtomicCheckpointIO
from seq2seq.training.graceful_stop import GracefulStop
from seq2seq.training.hydra_ddp import hydra_ddp_job, is_rank_zero
from seq2seq.training.module import Seq2SeqModule
from seq2seq.training.quiet import silence
from seq2seq.training.resume import (
    LAST,
    check_resumable,
    merge_metrics_history,
    refuse_finished,
    resolve_ckpt_path,
    resume_command,
    set_metrics_history_aside,
)
from seq2seq.training.run_dir import failure_record_dir

log = logging.getLogger("seq2seq.train")


class TrainingInterrupted(Exception):
    """A signal stopped training with ``checkpoints/last.ckpt`` saved; ``results`` says how to resume.

    ``pass_on()`` gives a SLURM pre-emption signal to submitit's handler (it requeues the job).
    """

    def __init__(self, signum: int, results: dict[str, Any], pass_on: Callable[[], None]) -> None:
        super().__init__(results["error"])
        self.signum = signum
        self.results = results
        self.pass_on = pass_on


def hydra_choices() -> dict[str, str]:
    """The chosen option of each config group that results.json records."""
    choices = HydraConfig.get().runtime.choices
    return {group: str(choices[group]) for group in CHOICE_GROUPS if choices.get(group) is not None}


def hydra_sweep_name() -> str | None:
    """The ``sweep=`` option of this job (``bottleneck``), if any."""
    choice = HydraConfig.get().runtime.choices.get("sweep")
    return str(choice) if choice else None


def wandb_identity(cfg: DictConfig, choices: dict[str, str]) -> tuple[str | None, str]:
    """This job's W&B group (its sweep directory in a multirun, else none) and run name."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None, run_name(choices, cfg)
    plan = read_sweep_plan(hydra_cfg.sweep.dir)
    swept = swept_values(hydra_cfg.overrides.task, plan["swept"])
    return plan["group"] or sweep_group(hydra_cfg.sweep.dir), run_name(choices, cfg, swept)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test; returns the ``results.json`` document (already written).

    Raises:
        ConfigError: a bad option (before anything is read or written).
        TrainingInterrupted: a signal stopped training (``results.json`` says ``status: interrupted``).
    """
    validate_train(cfg)
    silence()  # Lightning's litlogger tip and pytree deprecation (training/quiet.py)
    run_dir = Path(cfg.paths.output_dir)
    choices = hydra_choices()
    pl.seed_everything(cfg.seed, workers=True)
    torch.set_num_threads(cfg.get("threads") or torch.get_num_threads())
    keep_freed_memory(cfg.speed)  # freed blocks reused, not returned to the system at every step

    datamodule = Seq2SeqDataModule(
        cfg.data, cfg.paths.cache_dir, seed=cfg.seed, num_workers=cfg.data.num_workers
    )
    datamodule.setup("fit")
    module = Seq2SeqModule(cfg, datamodule.src_tokenizer, datamodule.tgt_tokenizer)
    params = sum(p.numel() for p in module.parameters())
    log.info("model: %s parameters", f"{params:,}")
    resume = resolve_ckpt_path(cfg.get("ckpt_path"), run_dir)
    if resume is not None:
        check_resumable(resume, cfg, {"src": datamodule.src_tokenizer, "tgt": datamodule.tgt_tokenizer})
        if resume.resolve() == (run_dir / LAST).resolve():
            refuse_finished(run_dir, cfg)
        log.info("resuming from %s", resume)
        # Lightning's warnings that do not apply: ExactResume resumes the batch sampler mid-epoch, and a run
        # resumed in place overwrites its own checkpoints
        warnings.filterwarnings(
            "ignore", message="You're resuming from a checkpoint that ended before the epoch"
        )
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
        if is_rank_zero():
            set_metrics_history_aside(run_dir)

    group, name = wandb_identity(cfg, choices)
    loggers = build_loggers(
        cfg, run_dir, choices, resume=resume is not None, group=group, name=name, sweep=hydra_sweep_name()
    )
    callbacks = build_callbacks(cfg, run_dir)
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers,
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO()],  # a kill mid-save never leaves a truncated checkpoint
    )
    log_config(loggers, OmegaConf.to_container(cfg, resolve=True), choices, params)

    try:
        with hydra_ddp_job():
            start = time.perf_counter()
            try:
                trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
            except SIGTERMException:
                stop = next(c for c in callbacks if isinstance(c, GracefulStop))
                signum, saved = stop.signum or signal.SIGTERM, stop.saved
                wall = time.perf_counter() - start
                phase = "validation" if stop.in_validation else "training"
                raise interrupted(
                    cfg, trainer, choices, params, wall, signum, saved, phase, stop.saved_step
                ) from None
            wall = time.perf_counter() - start
            best = trainer.checkpoint_callback.best_model_path or None
            try:
                with stop_on_signals():  # testing has nothing to save half-way: stop at once
                    trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
            except Stopped as stop:
                last = run_dir / LAST
                raise interrupted(
                    cfg,
                    trainer,
                    choices,
                    params,
                    wall,
                    stop.signum,
                    last if last.is_file() else None,
                    "testing",
                ) from None
            results = build_results(
                status="completed",
                choices=choices,
                config=OmegaConf.to_container(cfg, resolve=True),
                params=params,
                metrics=with_val(
                    split_metrics(module.test_results),
                    module.best_val_results,
                    trainer.checkpoint_callback.best_model_score,
                ),
                **split_records(module.test_results),
                val_bleu_by_length=module.best_val_results.get(
                    "bleu_by_length", []
                ),  # of the best validation
                train={
                    "steps": trainer.global_step,
                    "epochs": trainer.current_epoch,
                    "wall_s": wall,
                    "tokens_per_s": module.train_tokens / max(module.train_seconds, 1e-9),
                },
                checkpoint=best,
            )
            if trainer.is_global_zero:
                write_outputs(run_dir, results, module.test_results, loggers)
                print_summary(results, str(run_dir))
            return results
    finally:
        if is_rank_zero():
            for logger in loggers:
                logger.save()
            merge_metrics_history(run_dir)
        finish_wandb()  # one W&B run per job, closed even on failure, so multirun never leaks runs


def interrupted(
    cfg: DictConfig,
    trainer: pl.Trainer,
    choices: dict[str, str],
    params: int,
    wall: float,
    signum: int,
    saved: Path | None,
    phase: str = "training",
    saved_step: int | None = None,
) -> TrainingInterrupted:
    """Record a run stopped by a signal (rank 0 writes ``results.json``); returns the exception to raise.

    Args:
        saved: the checkpoint the run resumes from, at ``saved_step`` (``train.steps``; default: the current
            step); phase: what the signal stopped (training, validation, testing).
    """
    run_dir = Path(cfg.paths.output_dir)
    command = resume_command(run_dir)
    name = signal.Signals(signum).name
    results = build_results(
        status="interrupted",
        choices=choices,
        config=OmegaConf.to_container(cfg, resolve=True),
        error=f"interrupted by {name} during {phase} at step {trainer.global_step}; resume with: {command}",
        params=params,
        train={
            "steps": trainer.global_step if saved_step is None else saved_step,
            "epochs": trainer.current_epoch,
            "wall_s": wall,
        },
        checkpoint=str(saved) if saved else None,
        resume=command,
    )
    if trainer.is_global_zero:
        write_json_atomic(run_dir / RESULTS, results)
        log_summary(trainer.loggers, {"status": "interrupted", "params": params})
    stop = next((c for c in trainer.callbacks if isinstance(c, GracefulStop)), None)
    return TrainingInterrupted(int(signum), results, stop.pass_on if stop else lambda: None)


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the best validation BLEU (the sweepers' objective)."""
    run_dir = Path(cfg.paths.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        results = train(cfg)
        return results["metrics"]["val/bleu"]
    except TrainingInterrupted as stop:  # a clean stop: the checkpoint is saved, nothing failed
        if is_rank_zero():
            log.warning(
                "training interrupted by %s at step %d; resume with:\n  %s",
                signal.Signals(stop.signum).name,
                stop.results["train"]["steps"],
                stop.results["resume"],
            )
        stop.pass_on()
        sys.exit(128 + stop.signum)  # the shell's code for "ended by this signal"; a sweep stops too
    except Exception as error:  # record every failure, then decide whether to stop
        # beside an earlier run's record in this directory (attempts/<time>/), never over it
        record_dir = failure_record_dir(run_dir)
        if is_rank_zero():
            write_json_atomic(
                record_dir / RESULTS,
                build_results(
                    status="failed",
                    choices=hydra_choices(),
                    config=OmegaConf.to_container(cfg, resolve=False),
                    error=f"{type(error).__name__}: {error}",
                    traceback=traceback.format_exc(),
                ),
            )
        log.error("run failed: %s: %s (recorded in %s)", type(error).__name__, error, record_dir / RESULTS)
        if multirun:
            return float("nan")  # the sweep goes on with the other jobs
        if isinstance(error, ValueError) and not full_error():  # ConfigError, DataError, CheckpointError, ...
            sys.exit(1)  # a clear one-line message above; no stack trace for bad input or options
        raise


if __name__ == "__main__":
    main()
