"""Train, test and summarise one model: ``python -m seq2seq.train [hydra overrides]``.

Wires the pieces named by the config — data module, model, loggers, callbacks, trainer — fits, tests the
best checkpoint, and writes ``results.json``, ``predictions/test.tsv``, ``plots/bleu_by_length.png``
(attention maps go to ``plots/attention/`` at each validation) and the summary. Returns the best
``val/bleu`` so Hydra sweepers (Optuna) can optimise it. A failed job still writes ``results.json`` with
``status: failed``, so a sweep never loses track of it.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar

from seq2seq.callbacks import AttentionMaps, log_bleu_by_length, wandb_loggers
from seq2seq.data.datamodule import Seq2SeqDataModule
from seq2seq.data.errors import DataError
from seq2seq.loggers import build_loggers, finish_wandb
from seq2seq.module import Seq2SeqModule
from seq2seq.plots import plot_bleu_by_length, plot_position_accuracy
from seq2seq.results import CHOICE_GROUPS, build_results, write_json_atomic, write_predictions
from seq2seq.summary import print_summary

log = logging.getLogger("seq2seq.train")


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list[Callback]:
    """Best-``val/bleu`` and last checkpoints, optional early stopping, the progress bar, attention maps."""
    cb = cfg.callbacks
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="best",
            monitor=cb.checkpoint.monitor,
            mode=cb.checkpoint.mode,
            save_last=True,
            save_top_k=1,
            auto_insert_metric_name=False,
        ),
    ]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(TQDMProgressBar(refresh_rate=cb.progress_bar.refresh_rate))
    if cb.early_stopping is not None:
        callbacks.append(EarlyStopping(**cb.early_stopping))
    if cfg.eval.get("attention_examples", 0) > 0:
        callbacks.append(AttentionMaps(cfg.eval.attention_examples, run_dir / "plots" / "attention"))
    return callbacks


def hydra_choices() -> dict[str, str]:
    """The chosen option of each config group that results.json records."""
    choices = HydraConfig.get().runtime.choices
    return {group: str(choices[group]) for group in CHOICE_GROUPS if choices.get(group) is not None}


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test; returns the ``results.json`` document (already written)."""
    run_dir = Path(cfg.paths.output_dir)
    choices = hydra_choices()
    pl.seed_everything(cfg.seed, workers=True)
    torch.set_num_threads(cfg.get("threads") or torch.get_num_threads())

    datamodule = Seq2SeqDataModule(
        cfg.data, cfg.paths.cache_dir, seed=cfg.seed, num_workers=cfg.data.num_workers
    )
    datamodule.setup("fit")
    module = Seq2SeqModule(cfg, datamodule.src_tokenizer, datamodule.tgt_tokenizer)
    params = sum(p.numel() for p in module.parameters())
    log.info("model: %s parameters", f"{params:,}")

    loggers = build_loggers(cfg, run_dir, choices)
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=build_callbacks(cfg, run_dir), logger=loggers, default_root_dir=str(run_dir)
    )
    for logger in loggers:
        logger.log_hyperparams({"config": OmegaConf.to_container(cfg, resolve=True), "params": params})

    try:
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        wall = time.perf_counter() - start
        best = trainer.checkpoint_callback.best_model_path or None
        best_val = trainer.checkpoint_callback.best_model_score
        trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
        return finish_run(cfg, trainer, module, loggers, choices, params, wall, best, best_val)
    finally:
        finish_wandb()  # one W&B run per job, closed even on failure, so multirun never leaks runs


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
    except Exception as error:  # record every failure, then decide whether to stop
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
