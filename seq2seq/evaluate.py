"""Re-score a checkpoint: ``seq2seq-evaluate run_dir=<dir> | ckpt_path=<file or dir> [src=F ref=F]``.

Loads the model, tokenizers and config saved inside the checkpoint (a moved checkpoint still works; a run
directory gives its ``best.ckpt``, else ``last.ckpt``), scores its own test (or val) split — regenerated or
re-read from its data config — or the given line-aligned files, with the checkpoint's decoding or another
(``decoding=beam``), and writes into a NEW directory (default ``outputs/evaluate/<date>/<time>``) what a
training run leaves behind, plus ``evaluated`` in ``results.json``. It refuses a directory that already holds
a run, so a training run is never overwritten.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict

from seq2seq.config import CONF_DIR
from seq2seq.config.checks import full_error, validate_evaluate
from seq2seq.data.datamodule import eval_loader, load_split
from seq2seq.data.errors import DataError
from seq2seq.data.parallel import Pairs, read_parallel
from seq2seq.evaluation.artifacts import draw_attention_maps, split_metrics, split_records, write_outputs
from seq2seq.evaluation.console import print_evaluation
from seq2seq.evaluation.head_alignment import has_heads
from seq2seq.evaluation.record import RESULTS, build_results, choices_from_config, run_name, write_json_atomic
from seq2seq.evaluation.tracking import build_loggers, finish_wandb
from seq2seq.inference.checkpoint import TrainedModel, find_checkpoint, load_checkpoint
from seq2seq.inference.signals import Stopped, stop_on_signals
from seq2seq.inference.translator import NO_ATTENTION, NO_HEADS
from seq2seq.training.allocator import keep_freed_memory
from seq2seq.training.module import Seq2SeqModule
from seq2seq.training.quiet import silence

log = logging.getLogger("seq2seq.evaluate")


def scored_pairs(cfg: DictConfig, trained: TrainedModel) -> tuple[Pairs, str]:
    """The pairs to score and a description: the files ``src``/``ref``, or a split of the model's data.

    Unicode normalisation and lower-casing (``data.preprocess``) are applied as in training.
    """
    data_cfg = trained.cfg.data
    if cfg.src is not None:
        pairs = trained.encoder.normalize_pairs(read_parallel(cfg.src, cfg.ref))
        return pairs, f"{cfg.src} → {cfg.ref}"
    try:
        pairs = load_split(data_cfg, cfg.split)
    except DataError as error:
        raise DataError(
            f"{error}\n(the checkpoint's data config data={data_cfg.name} names these files; "
            "pass src=<file> ref=<file> to score files elsewhere)"
        ) from None
    return pairs, f"{cfg.split} split of data={data_cfg.name}"


def evaluation_config(trained: TrainedModel, cfg: DictConfig) -> DictConfig:
    """The checkpoint's run config with this evaluation's decoding, length buckets, bootstrap and batch budget."""
    model_cfg = copy.deepcopy(trained.cfg)
    with open_dict(model_cfg):
        if cfg.get("decoding") is not None:
            model_cfg.decoding = cfg.decoding
        if cfg.length_buckets is not None:
            model_cfg.eval.length_buckets = list(cfg.length_buckets)
        model_cfg.eval.bootstrap = int(cfg.get("bootstrap", 0))
        if cfg.batch_tokens is not None:
            model_cfg.data.batch.eval_max_tokens = int(cfg.batch_tokens)
        # training's compiled operators: decoding never runs them, so none is built (nor a compiler needed)
        if model_cfg.get("speed") is not None:
            model_cfg.speed.compiled_kernels = False
    return model_cfg


def warn_long_sources(sources: list[str], max_words: int | None, what: str) -> None:
    """Log how many sources are longer than the model was trained on (they are scored anyway)."""
    if max_words is None:
        return
    long = [i + 1 for i, source in enumerate(sources) if len(source.split()) > max_words]
    if long:
        log.warning(
            "%s: %d of %d sources are longer than %d words (data.max_words: the model never trained on "
            "such lengths); they are scored anyway, e.g. line(s) %s",
            what,
            len(long),
            len(sources),
            max_words,
            ", ".join(map(str, long[:5])),
        )


def check_output_dir(out_dir: Path) -> None:
    """Refuse a directory that already holds a run or an evaluation: nothing is ever overwritten."""
    for name in (RESULTS, "checkpoints"):
        if (out_dir / name).exists():
            raise ValueError(
                f"{out_dir} already holds a run ({name} exists); evaluate writes into a new directory: "
                "leave hydra.run.dir at its default or choose an empty one"
            )


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Score a checkpoint; returns the ``results.json`` document (already written to ``cfg.output_dir``)."""
    out_dir = Path(cfg.output_dir)
    check_output_dir(out_dir)
    validate_evaluate(cfg)
    keep_freed_memory()  # decoding allocates the same blocks at every step (training/allocator.py)
    silence()  # Lightning's litlogger tip and pytree deprecation (training/quiet.py)
    option = "run_dir" if cfg.run_dir is not None else "ckpt_path"
    ckpt = find_checkpoint(cfg[option], option)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "evaluate.yaml").write_text(OmegaConf.to_yaml(cfg), encoding="utf-8")
    trained = load_checkpoint(ckpt)
    heads = bool(cfg.get("attention_heads", False))
    if heads and not has_heads(trained.model):
        raise ValueError(f"attention_heads=true: {NO_HEADS} ({ckpt})")
    model_cfg = evaluation_config(trained, cfg)
    pairs, what = scored_pairs(cfg, trained)
    max_words = cfg.max_words if cfg.max_words is not None else model_cfg.data.get("max_words")
    warn_long_sources([source for source, _ in pairs], max_words, what)
    choices = choices_from_config(model_cfg)
    log.info("evaluating %s on %s (%d sentences, decoding=%s)", ckpt, what, len(pairs), choices["decoding"])

    module = Seq2SeqModule(model_cfg, trained.src_tokenizer, trained.tgt_tokenizer, model=trained.model)
    loader = eval_loader(
        trained.encoder.encode(pairs),
        model_cfg.data.batch.eval_max_tokens,
        model_cfg.data.get("num_workers", 0),
    )
    logger_cfg = OmegaConf.merge(model_cfg, {"logger": cfg.logger, "tags": list(cfg.tags)})
    if logger_cfg.logger.name == "wandb":
        logger_cfg.logger.job_type = "evaluate"
    loggers = build_loggers(logger_cfg, out_dir, choices, name=f"{run_name(choices, model_cfg)}-evaluate")
    trainer = pl.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        logger=loggers,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(out_dir),
    )
    try:
        start = time.perf_counter()
        trainer.test(module, dataloaders=loader, verbose=False)
        wall = time.perf_counter() - start
        test = module.test_results
        results = build_results(
            status="completed",
            choices=choices,
            config=OmegaConf.to_container(model_cfg, resolve=True),
            params=sum(p.numel() for p in module.parameters()),
            metrics=split_metrics(test),
            **split_records(test),
            evaluated={
                "checkpoint": str(ckpt.resolve()),
                "data": what,
                "sentences": len(test.sources),
                "decoding": choices["decoding"],
                "wall_s": wall,
            },
        )
        write_outputs(out_dir, results, test, loggers)
        if cfg.attention_examples > 0 and not module.has_attention:
            log.info(NO_ATTENTION)
        elif cfg.attention_examples > 0:
            prefix = "test" if cfg.src is not None else cfg.split
            draw_attention_maps(
                module.translator(),
                test.sources,
                cfg.attention_examples,
                out_dir / "plots" / "attention",
                loggers,
                prefix,
                heads=heads,
            )
        print_evaluation(results, str(out_dir))
        return results
    finally:
        finish_wandb()


def record_end(out_dir: Path, cfg: DictConfig, status: str, error: str, **extra: Any) -> None:
    """``results.json`` of an evaluation that did not complete (never in a training run's directory)."""
    config = OmegaConf.to_container(cfg, resolve=False)
    write_json_atomic(
        out_dir / RESULTS, build_results(status=status, choices={}, config=config, error=error, **extra)
    )


@hydra.main(config_path=CONF_DIR, config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: bad input (checkpoint, files, options) ends with one clear line and status 1."""
    out_dir = Path(cfg.output_dir)
    try:
        with stop_on_signals():  # nothing to save half-way: SIGTERM / Ctrl+C stop at once
            evaluate(cfg)
    except Stopped as stop:
        if (out_dir / "evaluate.yaml").is_file() and not (out_dir / RESULTS).exists():
            record_end(out_dir, cfg, "interrupted", f"{stop}; run the same command again to evaluate")
        log.warning("evaluation %s; nothing else was written", stop)
        sys.exit(stop.exit_code)
    except Exception as error:
        if not (out_dir / "checkpoints").exists() and not (out_dir / RESULTS).exists():
            record_end(
                out_dir, cfg, "failed", f"{type(error).__name__}: {error}", traceback=traceback.format_exc()
            )
        log.error("evaluation failed: %s: %s", type(error).__name__, error)
        if isinstance(error, ValueError) and not full_error():  # a user's mistake: the message says it all
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
