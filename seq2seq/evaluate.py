"""Re-score a checkpoint: ``python -m seq2seq.evaluate run_dir=<dir> | ckpt_path=<file> [src=F ref=F]``.

Loads the model, tokenizers and config saved inside the checkpoint (a moved checkpoint still works), scores
its own test (or val) split — regenerated or re-read from its data config — or the given line-aligned
files, with the checkpoint's decoding or another (``decoding=beam``), and writes into a NEW directory
(default ``outputs/evaluate/<date>/<time>``) the fields of a training run's ``results.json`` plus
``evaluated``, ``predictions/test.tsv``, ``plots/bleu_by_length.png`` and ``plots/attention/*.png``. It
refuses to write into a directory that already holds a run, so a training run is never overwritten.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict

from seq2seq.callbacks import NO_ATTENTION, log_bleu_by_length, log_images, pick_examples, save_attention_maps
from seq2seq.data.datamodule import Seq2SeqDataModule, load_raw_pairs
from seq2seq.data.errors import DataError
from seq2seq.data.filters import Preprocess, normalize_pairs
from seq2seq.data.parallel import read_parallel
from seq2seq.loggers import build_loggers, finish_wandb
from seq2seq.module import Seq2SeqModule
from seq2seq.plots import plot_bleu_by_length
from seq2seq.results import build_results, write_json_atomic, write_predictions
from seq2seq.summary import print_evaluation

log = logging.getLogger("seq2seq.evaluate")

Pairs = list[tuple[str, str]]
SPLITS = ("test", "val")


def resolve_checkpoint(run_dir: str | None, ckpt_path: str | None) -> Path:
    """The checkpoint to load: ``ckpt_path``, or ``<run_dir>/checkpoints/best.ckpt`` (else ``last.ckpt``)."""
    if (run_dir is None) == (ckpt_path is None):
        raise ValueError(
            "give exactly one of run_dir=<training run directory> or ckpt_path=<checkpoint file>"
        )
    if ckpt_path is not None:
        return Path(ckpt_path)
    checkpoints = Path(run_dir) / "checkpoints"
    for name in ("best.ckpt", "last.ckpt"):
        if (checkpoints / name).is_file():
            return checkpoints / name
    if not Path(run_dir).is_dir():
        raise ValueError(f"run_dir={run_dir}: no such directory (resolved to {Path(run_dir).resolve()})")
    raise ValueError(
        f"run_dir={run_dir}: no checkpoints/best.ckpt or checkpoints/last.ckpt in it; "
        "did the training run finish its first validation? Pass ckpt_path=<file> to use another checkpoint"
    )


def choices_from_config(cfg: DictConfig) -> dict[str, str]:
    """The options of ``results.json``'s ``choices``, read back from a resolved run config."""
    found = {
        "data": cfg.data.get("name"),
        "model/encoder": cfg.model.encoder.get("rnn_type"),
        "model/attention": cfg.model.attention.get("name"),
        "teacher_forcing": cfg.teacher_forcing.get("schedule"),
        "decoding": cfg.decoding.get("name"),
    }
    return {group: str(choice) for group, choice in found.items() if choice is not None}


def scored_pairs(cfg: DictConfig, model_cfg: DictConfig) -> tuple[Pairs, str]:
    """The pairs to score and a description: the files ``src``/``ref``, or a split of the model's data.

    Unicode normalisation and lower-casing (``data.preprocess``) are applied as in training.
    """
    if (cfg.src is None) != (cfg.ref is None):
        raise ValueError("give both src=<source file> and ref=<reference file>, or neither to score a split")
    if cfg.src is not None:
        pairs, what = read_parallel(cfg.src, cfg.ref), f"{cfg.src} → {cfg.ref}"
    else:
        if cfg.split not in SPLITS:
            raise ValueError(f"split={cfg.split!r}: choose one of {SPLITS}")
        try:
            pairs = load_raw_pairs(model_cfg.data)[cfg.split]
        except DataError as error:
            raise DataError(
                f"{error}\n(the checkpoint's data config data={model_cfg.data.name} names these files; "
                "pass src=<file> ref=<file> to score files elsewhere)"
            ) from None
        what = f"{cfg.split} split of data={model_cfg.data.name}"
    options = Preprocess.from_config(model_cfg.data)
    return normalize_pairs(pairs, options.normalize, options.lowercase), what


def configure_module(module: Seq2SeqModule, cfg: DictConfig) -> None:
    """Apply this evaluation's decoding, length buckets and batch budget to the loaded model's config."""
    with open_dict(module.cfg):
        if cfg.get("decoding") is not None:
            module.cfg.decoding = cfg.decoding
        if cfg.length_buckets is not None:
            module.cfg.eval.length_buckets = list(cfg.length_buckets)
        if cfg.batch_tokens is not None:
            module.cfg.data.batch.eval_max_tokens = int(cfg.batch_tokens)


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
    for name in ("results.json", "checkpoints"):
        if (out_dir / name).exists():
            raise ValueError(
                f"{out_dir} already holds a run ({name} exists); evaluate writes into a new directory: "
                "leave hydra.run.dir at its default or choose an empty one"
            )


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Score a checkpoint; returns the ``results.json`` document (already written to ``cfg.output_dir``)."""
    out_dir = Path(cfg.output_dir)
    check_output_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "evaluate.yaml").write_text(OmegaConf.to_yaml(cfg), encoding="utf-8")
    ckpt = resolve_checkpoint(cfg.run_dir, cfg.ckpt_path)
    module = Seq2SeqModule.load_portable(ckpt)
    configure_module(module, cfg)
    model_cfg = module.cfg
    pairs, what = scored_pairs(cfg, model_cfg)
    sources = [source for source, _ in pairs]
    max_words = cfg.max_words if cfg.max_words is not None else model_cfg.data.get("max_words")
    warn_long_sources(sources, max_words, what)
    choices = choices_from_config(model_cfg)
    log.info("evaluating %s on %s (%d sentences, decoding=%s)", ckpt, what, len(pairs), choices["decoding"])

    datamodule = Seq2SeqDataModule(model_cfg.data, out_dir, num_workers=model_cfg.data.get("num_workers", 0))
    datamodule.src_tokenizer, datamodule.tgt_tokenizer = module.src_tokenizer, module.tgt_tokenizer
    datamodule.raw = {"test": pairs}
    datamodule.datasets = {"test": datamodule.encode(pairs)}  # setup() sees them and does nothing more

    logger_cfg = OmegaConf.merge(model_cfg, {"logger": cfg.logger, "tags": list(cfg.tags)})
    if logger_cfg.logger.name == "wandb":
        logger_cfg.logger.job_type = "evaluate"
    loggers = build_loggers(logger_cfg, out_dir, choices)
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
        trainer.test(module, datamodule=datamodule, verbose=False)
        wall = time.perf_counter() - start
        return finish_evaluation(cfg, module, trainer, loggers, ckpt, what, choices, wall)
    finally:
        finish_wandb()


def finish_evaluation(
    cfg: DictConfig,
    module: Seq2SeqModule,
    trainer: pl.Trainer,
    loggers: list,
    ckpt: Path,
    what: str,
    choices: dict[str, str],
    wall: float,
) -> dict[str, Any]:
    """Write results.json, predictions and plots, log to W&B, print the tables."""
    out_dir = Path(cfg.output_dir)
    test = module.test_results
    metrics = {f"test/{name}": value for name, value in test["scores"].items()}
    metrics["test/loss"] = float(trainer.callback_metrics["test/loss"])
    if test["attention_entropy"] is not None:
        metrics["test/attention_entropy"] = test["attention_entropy"]
    results = build_results(
        status="completed",
        choices=choices,
        config=OmegaConf.to_container(module.cfg, resolve=True),
        params=sum(p.numel() for p in module.parameters()),
        metrics=metrics,
        bleu_by_length=test["bleu_by_length"],
        evaluated={
            "checkpoint": str(ckpt.resolve()),
            "data": what,
            "sentences": len(test["sources"]),
            "decoding": choices["decoding"],
            "wall_s": wall,
        },
    )
    write_predictions(
        out_dir / "predictions" / "test.tsv", test["sources"], test["references"], test["hypotheses"]
    )
    write_json_atomic(out_dir / "results.json", results)
    plot = plot_bleu_by_length({"test": results["bleu_by_length"]}, out_dir / "plots" / "bleu_by_length.png")
    log_bleu_by_length(loggers, "test/bleu_by_length", results["bleu_by_length"], plot)
    prefix = "test" if cfg.src is not None else cfg.split
    attention_dir = out_dir / "plots" / "attention"
    draw_attention(module, test["sources"], int(cfg.attention_examples), attention_dir, loggers, prefix)
    print_evaluation(results, str(out_dir))
    return results


def draw_attention(
    module: Seq2SeqModule, sources: list[str], count: int, out_dir: Path, loggers: list, prefix: str = "test"
) -> list[Path]:
    """Attention maps of ``count`` sentences spread over source lengths, as ``<prefix>_<index>.png``."""
    if count <= 0:
        return []
    if not module.has_attention:
        log.info(NO_ATTENTION)
        return []
    picks = pick_examples(sources, count)
    translations = module.translate([sources[i] for i in picks], return_attention=True)
    names = [f"{prefix}_{i:05d}" for i in picks]
    paths = save_attention_maps(translations, names, out_dir)
    captions = [
        f"{n}: {t.source} → {t.text}"
        for n, t in zip(names, translations, strict=True)
        if t.attention is not None
    ]
    log_images(loggers, f"{prefix}/attention", paths, captions)
    return paths


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: bad input (checkpoint, files, options) ends with one clear line and status 1."""
    out_dir = Path(cfg.output_dir)
    try:
        evaluate(cfg)
    except Exception as error:
        if not (out_dir / "checkpoints").exists() and not (out_dir / "results.json").exists():
            write_json_atomic(
                out_dir / "results.json",
                build_results(
                    status="failed",
                    choices={},
                    config=OmegaConf.to_container(cfg, resolve=False),
                    error=f"{type(error).__name__}: {error}",
                    traceback=traceback.format_exc(),
                ),
            )
        log.error("evaluation failed: %s: %s", type(error).__name__, error)
        if isinstance(error, ValueError):  # CheckpointError, DataError and bad options are ValueErrors
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
