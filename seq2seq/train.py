"""Train, test and summarise one model: ``python -m seq2seq.train [hydra overrides]``.

Wires the pieces named by the config — data module, model, loggers, callbacks, trainer — fits, tests the
best checkpoint, and writes ``results.json``, ``predictions/test.tsv``, ``plots/bleu_by_length.png``
(attention maps go to ``plots/attention/`` at each validation) and the summary. Returns the best
``val/bleu`` so Hydra sweepers (Optuna) can optimise it. A failed job still writes ``results.json`` with
``status: failed``, so a sweep never loses track of it.

Scaling out (README, "Scaling out"): ``trainer=ddp`` / ``trainer=ddp_cpu`` run Lightning's DDP, whose child
processes re-run this script in the same run directory; only rank 0 writes files and logs to W&B.
``ckpt_path=last`` resumes ``<run dir>/checkpoints/last.ckpt`` exactly
(:class:`~seq2seq.callbacks.ExactResume`); SIGTERM, Ctrl+C and SLURM pre-emption stop training between two
steps with that checkpoint saved, and ``results.json`` says ``status: interrupted`` and how to resume.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, read_write
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from seq2seq.callbacks import AttentionMaps, ExactResume, GracefulStop, log_bleu_by_length, wandb_loggers
from seq2seq.data.datamodule import Seq2SeqDataModule
from seq2seq.data.errors import DataError
from seq2seq.loggers import build_loggers, finish_wandb, merge_metrics_history, set_metrics_history_aside
from seq2seq.module import Seq2SeqModule
from seq2seq.plots import plot_bleu_by_length, plot_position_accuracy
from seq2seq.results import CHOICE_GROUPS, build_results, write_json_atomic, write_predictions
from seq2seq.summary import print_summary

log = logging.getLogger("seq2seq.train")

LAST = Path("checkpoints") / "last.ckpt"  # in the run directory
RESUME_MUST_MATCH = ("model", "data", "seed")  # what a resumed run shares with its checkpoint


class TrainingInterrupted(Exception):
    """A signal stopped training with ``checkpoints/last.ckpt`` saved; ``results`` says how to resume.

    ``pass_on()`` gives a SLURM pre-emption signal to submitit's handler (it requeues the job).
    """

    def __init__(self, signum: int, results: dict[str, Any], pass_on: Callable[[], None]) -> None:
        super().__init__(results["error"])
        self.signum = signum
        self.results = results
        self.pass_on = pass_on


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list[Callback]:
    """Best-``val/bleu`` and last checkpoints, exact resume, a graceful stop on signals, optional early
    stopping, the progress bar, attention maps."""
    cb = cfg.callbacks
    callbacks: list[Callback] = [
        ModelCheckpoint(  # first: trainer.checkpoint_callback, whose best model is tested
            dirpath=run_dir / "checkpoints",
            filename="best",
            monitor=cb.checkpoint.monitor,
            mode=cb.checkpoint.mode,
            save_top_k=1,
            auto_insert_metric_name=False,
            save_on_train_epoch_end=False,
            enable_version_counter=False,  # a run resumed in place overwrites its own files
        ),
        # last.ckpt after every validation (Lightning's save_last saves only alongside a new best); at the end
        # of a validation, not of the epoch, since Lightning also ends an epoch when training stops mid-way
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="last",
            save_top_k=1,
            save_on_train_epoch_end=False,
            enable_version_counter=False,
        ),
        ExactResume(run_dir / LAST, seed=cfg.seed),
        GracefulStop(run_dir / LAST),
    ]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(TQDMProgressBar(refresh_rate=cb.progress_bar.refresh_rate))
    if cb.early_stopping is not None:
        # checked after each validation (not at each epoch's end, where a resumed run or one stopped by
        # max_steps mid-epoch has no val/bleu yet); its state is part of the checkpoint written after it
        callbacks.append(EarlyStopping(**{"check_on_train_epoch_end": False, **cb.early_stopping}))
    if cfg.eval.get("attention_examples", 0) > 0:
        callbacks.append(AttentionMaps(cfg.eval.attention_examples, run_dir / "plots" / "attention"))
    return callbacks


def hydra_choices() -> dict[str, str]:
    """The chosen option of each config group that results.json records."""
    choices = HydraConfig.get().runtime.choices
    return {group: str(choices[group]) for group in CHOICE_GROUPS if choices.get(group) is not None}


def is_rank_zero() -> bool:
    """Whether this process is rank 0 (DDP children and SLURM tasks know their rank from the environment)."""
    return rank_zero_only.rank == 0


def check_precision(trainer_cfg: Any) -> None:
    """Refuse mixed or half precision where training would run on the CPU, before anything starts."""
    precision, accelerator = str(trainer_cfg.precision), str(trainer_cfg.accelerator)
    gpu_here = torch.cuda.is_available() or torch.backends.mps.is_available()
    if (accelerator == "cpu" or (accelerator == "auto" and not gpu_here)) and not precision.startswith(
        ("32", "64")
    ):
        where = "" if accelerator == "cpu" else " (no GPU found)"
        raise ValueError(
            f"trainer.precision={precision} needs a GPU, but trainer.accelerator={accelerator} trains on the "
            f"CPU here{where}; use trainer.precision=32-true on the CPU, or trainer=gpu / trainer=ddp on a "
            "machine with a GPU"
        )


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> Path | None:
    """The checkpoint to resume from: a file, or ``last`` = ``<run_dir>/checkpoints/last.ckpt``.

    ``last`` in a run directory without one yet gives None (a warning, training from scratch), so the same
    command serves a first start and a restart. A SLURM job that was requeued (``$SLURM_RESTART_COUNT`` > 0,
    e.g. by submitit after pre-emption) resumes its ``last.ckpt`` even without ``ckpt_path``.
    """
    if ckpt_path in (None, ""):
        restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        if restarts > 0 and (run_dir / LAST).is_file():
            log.info("SLURM job restarted (%d): resuming %s", restarts, run_dir / LAST)
            return run_dir / LAST
        return None
    if ckpt_path == "last":
        path = run_dir / LAST
        if path.is_file():
            return path
        log.warning("ckpt_path=last: %s does not exist yet; training from scratch", path)
        return None
    path = Path(ckpt_path)
    if not path.is_file():
        raise ValueError(
            f"ckpt_path={ckpt_path}: no such checkpoint file (resolved to {path.resolve()}); pass "
            "<run_dir>/checkpoints/last.ckpt, or ckpt_path=last with hydra.run.dir=<run_dir> to resume "
            "in place"
        )
    return path


def check_resumable(path: Path, cfg: DictConfig, module: Seq2SeqModule) -> None:
    """Refuse a checkpoint of another model, data set or seed, or with other tokenizers, naming the keys."""
    # memory-mapped: only the config and tokenizers are read here; Lightning loads the weights once, in fit()
    checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    saved = checkpoint.get("hyper_parameters", {}).get("cfg") if isinstance(checkpoint, dict) else None
    if saved is None or "tokenizers" not in checkpoint or "loops" not in checkpoint:
        raise ValueError(
            f"ckpt_path={path}: not a training checkpoint written by `python -m seq2seq.train` "
            "(checkpoints/last.ckpt or best.ckpt of a run)"
        )
    current = OmegaConf.to_container(cfg, resolve=True)
    differences = [
        f"{key}: checkpoint {old!r}, this run {new!r}"
        for section in RESUME_MUST_MATCH
        for key, old, new in _differences(saved.get(section), current.get(section), section)
    ]
    for side, tokenizer in (("src", module.src_tokenizer), ("tgt", module.tgt_tokenizer)):
        if checkpoint["tokenizers"][side] != tokenizer.model_proto:
            differences.append(f"the {side} tokenizer differs (trained on other data?)")
    if differences:
        more = f"; and {len(differences) - 5} more" if len(differences) > 5 else ""
        raise ValueError(
            f"ckpt_path={path} cannot be resumed with this config: {'; '.join(differences[:5])}{more}. "
            "Repeat the overrides of the run that wrote it (its .hydra/overrides.yaml; an interrupted run's "
            "results.json holds the whole command)"
        )


def _differences(old: Any, new: Any, key: str) -> Iterator[tuple[str, Any, Any]]:
    """``(dotted key, old, new)`` for every leaf where two config trees differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        for name in sorted(set(old) | set(new)):
            yield from _differences(old.get(name), new.get(name), f"{key}.{name}")
    elif old != new:
        yield key, old, new


@contextmanager
def hydra_ddp_job() -> Iterator[None]:
    """Make Lightning's DDP child processes rebuild exactly this job of a multirun, in its directory.

    Lightning starts ranks 1… as ``python -m seq2seq.train <sys.argv> hydra.run.dir=<hydra.run.dir>``
    (``_hydra_subprocess_cmd``). In a multirun ``sys.argv`` holds the whole sweep and ``hydra.run.dir`` is
    not the job's directory, so each child would start a sweep of its own. While this job runs, the
    children see its overrides in RUN mode and its directory; afterwards the process group and the
    launcher's environment are cleared, so the next job starts its own processes.
    """
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        yield
        return
    argv, environ = sys.argv, dict(os.environ)
    sys.argv = [argv[0], *hydra_cfg.overrides.task, "hydra.mode=RUN"]
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = argv
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for name in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE"):
            if name in environ:
                os.environ[name] = environ[name]
            else:
                os.environ.pop(name, None)


def resume_command(run_dir: Path) -> str:
    """The command line that resumes this run in place from its ``checkpoints/last.ckpt``."""
    hydra_cfg = HydraConfig.get()
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith(("ckpt_path=", "hydra.run.dir="))]
    mode = ["hydra.mode=RUN"] if hydra_cfg.mode == RunMode.MULTIRUN else []
    return shlex.join(
        ["python", "-m", "seq2seq.train", *overrides, *mode, f"hydra.run.dir={run_dir}", "ckpt_path=last"]
    )


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test; returns the ``results.json`` document (already written).

    Raises:
        TrainingInterrupted: a signal stopped training (``results.json`` says ``status: interrupted``).
    """
    run_dir = Path(cfg.paths.output_dir)
    choices = hydra_choices()
    check_precision(cfg.trainer)
    pl.seed_everything(cfg.seed, workers=True)
    torch.set_num_threads(cfg.get("threads") or torch.get_num_threads())

    datamodule = Seq2SeqDataModule(
        cfg.data, cfg.paths.cache_dir, seed=cfg.seed, num_workers=cfg.data.num_workers
    )
    datamodule.setup("fit")
    module = Seq2SeqModule(cfg, datamodule.src_tokenizer, datamodule.tgt_tokenizer)
    params = sum(p.numel() for p in module.parameters())
    log.info("model: %s parameters", f"{params:,}")
    resume = resolve_ckpt_path(cfg.get("ckpt_path"), run_dir)
    if resume is not None:
        check_resumable(resume, cfg, module)
        log.info("resuming from %s", resume)
        # Lightning's warnings that do not apply: ExactResume resumes the batch sampler mid-epoch, and a run
        # resumed in place overwrites its own checkpoints
        warnings.filterwarnings(
            "ignore", message="You're resuming from a checkpoint that ended before the epoch"
        )
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
        if is_rank_zero():
            set_metrics_history_aside(run_dir)

    loggers = build_loggers(cfg, run_dir, choices, resume=resume is not None)
    callbacks = build_callbacks(cfg, run_dir)
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers, default_root_dir=str(run_dir)
    )
    for logger in loggers:
        logger.log_hyperparams({"config": OmegaConf.to_container(cfg, resolve=True), "params": params})

    try:
        with hydra_ddp_job():
            start = time.perf_counter()
            try:
                trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
            except SIGTERMException:
                stop = next(c for c in callbacks if isinstance(c, GracefulStop))
                raise interrupted(cfg, trainer, choices, params, time.perf_counter() - start, stop) from None
            wall = time.perf_counter() - start
            best = trainer.checkpoint_callback.best_model_path or None
            best_val = trainer.checkpoint_callback.best_model_score
            trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
            return finish_run(cfg, trainer, module, loggers, choices, params, wall, best, best_val)
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
    stop: GracefulStop,
) -> TrainingInterrupted:
    """Record a run stopped by a signal (rank 0 writes ``results.json``); returns the exception to raise."""
    run_dir = Path(cfg.paths.output_dir)
    signum = stop.signum or signal.SIGTERM
    command = resume_command(run_dir)
    results = build_results(
        status="interrupted",
        choices=choices,
        config=OmegaConf.to_container(cfg, resolve=True),
        error=f"interrupted by {signal_name(signum)} at step {trainer.global_step}; resume with: {command}",
        params=params,
        train={"steps": trainer.global_step, "epochs": trainer.current_epoch, "wall_s": wall},
        checkpoint=str(stop.saved) if stop.saved else None,
        resume=command,
    )
    if trainer.is_global_zero:
        write_json_atomic(run_dir / "results.json", results)
        for logger in wandb_loggers(trainer.loggers):
            logger.experiment.summary.update({"status": "interrupted", "params": params})
    return TrainingInterrupted(int(signum), results, stop.pass_on)


def finish_run(
    cfg: DictConfig,
    trainer: pl.Trainer,
    module: Seq2SeqModule,
    loggers: list,
    choices: dict[str, str],
    params: int,
    wall: float,
    best: str | None,
    best_val: torch.Tensor | None,
) -> dict[str, Any]:
    """Collect the test results; on rank 0 write predictions, results.json, plots; log; print the summary."""
    run_dir = Path(cfg.paths.output_dir)

    test, val = module.test_results, module.best_val_results
    metrics = {f"test/{k}": v for k, v in test["scores"].items()}
    metrics["test/loss"] = float(trainer.callback_metrics["test/loss"])
    metrics["val/bleu"] = float(best_val) if best_val is not None else float("nan")
    if test["attention_entropy"] is not None:
        metrics["test/attention_entropy"] = test["attention_entropy"]
    if val.get("attention_entropy") is not None:
        metrics["val/attention_entropy"] = val["attention_entropy"]
    results = build_results(
        status="completed",
        choices=choices,
        config=OmegaConf.to_container(cfg, resolve=True),
        params=params,
        metrics=metrics,
        bleu_by_length=test["bleu_by_length"],
        val_bleu_by_length=val.get("bleu_by_length", []),  # of the validation with the best val/bleu
        position_accuracy=test["position_accuracy"],  # free-running (the decoding config), per output token
        teacher_forced_position_accuracy=test["teacher_forced_position_accuracy"],
        train={
            "steps": trainer.global_step,
            "epochs": trainer.current_epoch,
            "wall_s": wall,
            "tokens_per_s": module.train_tokens / max(module.train_seconds, 1e-9),
        },
        checkpoint=best,
    )
    if trainer.is_global_zero:
        write_predictions(
            run_dir / "predictions" / "test.tsv", test["sources"], test["references"], test["hypotheses"]
        )
        write_json_atomic(run_dir / "results.json", results)
        plot = save_length_plot(results, run_dir / "plots" / "bleu_by_length.png")
        plot_position_accuracy(
            {
                "free-running": results["position_accuracy"],
                "teacher-forced": results["teacher_forced_position_accuracy"],
            },
            run_dir / "plots" / "position_accuracy.png",
        )
        final = {k: v for k, v in metrics.items() if v is not None and math.isfinite(v)}
        for logger in loggers:
            logger.log_metrics(final)
        for logger in wandb_loggers(loggers):  # the final test metrics are the run's summary on the dashboard
            logger.experiment.summary.update({**final, "params": params, "status": "completed"})
        log_bleu_by_length(loggers, "test/bleu_by_length", results["bleu_by_length"], plot)
        log_bleu_by_length(loggers, "val/bleu_by_length", results["val_bleu_by_length"])
        print_summary(results, str(run_dir))
    return results


def save_length_plot(results: dict[str, Any], path: Path) -> Path:
    """``plots/bleu_by_length.png``: test BLEU by source length, and the best validation's when recorded."""
    series = {"test": results["bleu_by_length"]}
    if results.get("val_bleu_by_length"):
        series["val (best)"] = results["val_bleu_by_length"]
    return plot_bleu_by_length(series, path)


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
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
                signal_name(stop.signum),
                stop.results["train"]["steps"],
                stop.results["resume"],
            )
        stop.pass_on()
        sys.exit(128 + stop.signum)  # the shell's code for "ended by this signal"; a sweep stops too
    except Exception as error:  # record every failure, then decide whether to stop
        if is_rank_zero():
            write_json_atomic(
                run_dir / "results.json",
                build_results(
                    status="failed",
                    choices=hydra_choices(),
                    config=OmegaConf.to_container(cfg, resolve=False),
                    error=f"{type(error).__name__}: {error}",
                    traceback=traceback.format_exc(),
                ),
            )
        log.error(
            "run failed: %s: %s (recorded in %s)", type(error).__name__, error, run_dir / "results.json"
        )
        if multirun:
            return float("nan")  # the sweep goes on with the other jobs
        if isinstance(error, DataError | ValueError):
            sys.exit(1)  # a clear one-line message above; no stack trace for bad input or options
        raise


if __name__ == "__main__":
    main()
