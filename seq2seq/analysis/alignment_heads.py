"""Alignment quality per decoder layer and head of a trained Transformer: which heads align words?

A run's ``results.json`` scores the Transformer decoder's last-layer cross-attention averaged over heads
(``evaluation/alignment.py``). Heads of one layer can specialise — some attend to the aligned source word,
others to neighbours, punctuation or the sentence end (Voita et al. 2019, "Analyzing multi-head
self-attention") — and lower layers may align better or worse than the last. Here every layer's
cross-attention is taken per head under teacher forcing (``TransformerDecoder.cross_attention_heads``,
``(L, B, h, T, S)``) and each head, and each layer's head average, is scored against the toy task's gold word
alignment with the same accuracy / AER / gold mass as ``results.json`` (overall and by source-length bucket).

Layers and heads are numbered from 1; ``head: null`` is a layer's average over its heads (the last layer's
average is what ``results.json`` reports). Training itself scores its test split per head
(``results.json``'s ``alignment_heads``, ``evaluation/head_alignment.py``); this analysis does it for any
checkpoint, on any number of test sentences, and writes the table and heat map beside it.

Run: ``python -m seq2seq.analysis.alignment_heads run_dir=<training run dir> [out_dir=<dir>] [max_sentences=N]``
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from seq2seq.analysis.options import positive_int, run_or_exit
from seq2seq.config import CONF_DIR
from seq2seq.data.atomic import write_atomic
from seq2seq.data.datamodule import eval_loader, load_split
from seq2seq.evaluation.alignment import AlignmentCounts, gold_sentences
from seq2seq.evaluation.console import make_console
from seq2seq.evaluation.head_alignment import (
    SCORES,
    Key,
    accuracy_grid,
    attention_heads,
    has_heads,
    head_counts,
    rank_heads,
    score_heads,
)
from seq2seq.evaluation.plots import plot_alignment_heads
from seq2seq.evaluation.record import choices_from_config, run_label, write_json_atomic
from seq2seq.inference.checkpoint import TrainedModel, find_checkpoint, load_checkpoint

CONFIG = "conf/alignment_heads.yaml"
SCHEMA = 1
USAGE = "usage: python -m seq2seq.analysis.alignment_heads run_dir=<training run dir> [out_dir=<dir>]"


def check_run(trained: TrainedModel) -> None:
    """Toy data (gold alignments) and a Transformer decoder, or a ValueError that says what the run is."""
    data = trained.cfg.data
    if data.get("task") != "toy_translation":
        raise ValueError(
            f"{trained.path}: trained on data={data.get('name')}, which has no gold word alignments; "
            "the per-head alignment analysis needs a run on data=toy_translation"
        )
    if not has_heads(trained.model):
        decoder = trained.cfg.model.get("decoder", {}).get("type", "rnn")
        raise ValueError(
            f"{trained.path}: model/decoder={decoder} has no attention heads; the per-head alignment analysis "
            "needs a run with model/decoder=transformer (an RNN's alignment is test/alignment_accuracy in results.json)"
        )


def measure(
    trained: TrainedModel, max_sentences: int | None, max_tokens: int, device: str
) -> tuple[list[dict[str, Any]], int]:
    """Score every head of the run's test split (its first ``max_sentences``): the entries and sentences read."""
    check_run(trained)
    pairs = load_split(trained.cfg.data, "test")[:max_sentences]
    model = trained.model.to(device)
    sources: list[str] = []
    counts: dict[Key, list[AlignmentCounts | None]] = {}
    for batch in eval_loader(trained.encoder.encode(pairs), max_tokens):
        sentences = gold_sentences(batch, trained.cfg.data, trained.src_tokenizer, trained.tgt_tokenizer)
        heads = attention_heads(
            model, batch.src.to(device), batch.src_lengths.to(device), batch.tgt_in.to(device)
        )
        for key, judged in head_counts(heads, sentences).items():
            counts.setdefault(key, []).extend(judged)
        sources += batch.sources
    return score_heads(sources, counts, list(trained.cfg.eval.length_buckets)), len(pairs)


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def table_rows(entries: Sequence[dict[str, Any]]) -> list[list[str]]:
    """``layer``, ``head`` (``mean`` for the average) and the three scores, formatted, one row per entry."""
    return [
        [
            str(e["layer"]),
            "mean" if e["head"] is None else str(e["head"]),
            *(_cell(e[name]) for name in SCORES),
        ]
        for e in entries
    ]


COLUMNS = ("layer", "head", "accuracy %", "AER %", "gold mass %")


def markdown_table(entries: Sequence[dict[str, Any]]) -> str:
    """The table of :func:`table_rows` in Markdown (right-aligned numbers)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---:|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(entries)]
    return "\n".join(lines) + "\n"


def print_table(payload: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"Alignment per decoder layer and head (test, teacher-forced) — {payload['label']}")
    for column in COLUMNS:
        table.add_column(column, justify="right")
    for row in table_rows(payload["entries"]):
        table.add_row(*row)
    console = make_console()
    console.print(table)
    best = payload["best_head"]
    if best is not None:
        console.print(f"best head: layer {best['layer']}, head {best['head']} ({_cell(best['accuracy'])} %)")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Measure, print and write ``alignment_heads.json``, ``alignment_heads.md`` and
    ``plots/alignment_heads.png`` into ``out_dir`` (default: the run dir); returns the JSON."""
    max_sentences = positive_int(CONFIG, "max_sentences", cfg.max_sentences, allow_null=True)
    batch_tokens = positive_int(CONFIG, "batch_tokens", cfg.batch_tokens, allow_null=True)
    threads = positive_int(CONFIG, "threads", cfg.get("threads"), allow_null=True)
    if threads:
        torch.set_num_threads(threads)
    if cfg.run_dir is None:
        raise ValueError(f"{CONFIG}: missing run_dir (the directory of a finished training run); {USAGE}")
    run_dir = Path(cfg.run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run_dir={run_dir} does not exist or is not a directory; {USAGE}")
    out_dir = Path(cfg.out_dir) if cfg.get("out_dir") else run_dir
    option = "ckpt_path" if cfg.get("ckpt_path") else "run_dir"  # another checkpoint, else the run's
    checkpoint = find_checkpoint(cfg[option], option)
    trained = load_checkpoint(checkpoint, map_location=cfg.device)
    max_tokens = batch_tokens or int(trained.cfg.data.batch.eval_max_tokens)
    entries, n_sentences = measure(trained, max_sentences, max_tokens, cfg.device)
    ranking = rank_heads(entries)
    label = run_label(choices_from_config(trained.cfg), trained.cfg)
    best = ranking[0] if ranking and ranking[0]["accuracy"] is not None else None
    payload = {
        "schema": SCHEMA,
        "checkpoint": str(checkpoint),
        "label": label,
        "config": {"max_sentences": max_sentences, "batch_tokens": max_tokens, "split": "test"},
        "n_sentences": n_sentences,
        "layers": len(trained.model.decoder.layers),
        "heads": trained.model.decoder.layers[0].cross_attention.heads,
        "best_head": None if best is None else {k: best[k] for k in ("layer", "head", *SCORES)},
        "ranking": [[e["layer"], e["head"], e["accuracy"]] for e in ranking],
        "entries": entries,
    }
    write_json_atomic(out_dir / "alignment_heads.json", payload)
    write_atomic(
        out_dir / "alignment_heads.md",
        f"Alignment per decoder layer and head — {label}; test split, {n_sentences} sentences, "
        "teacher-forced (head `mean`: the layer's average over heads)\n\n" + markdown_table(entries),
    )
    png = plot_alignment_heads(
        accuracy_grid(entries),
        out_dir / "plots" / "alignment_heads.png",
        f"alignment accuracy (%) per decoder layer and head — {label}",
        best=None if best is None else (best["layer"] - 1, best["head"] - 1),
    )
    print_table(payload)
    print(f"wrote {out_dir / 'alignment_heads.json'}, {out_dir / 'alignment_heads.md'} and {png}")
    return payload


@hydra.main(config_path=CONF_DIR, config_name="alignment_heads", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_or_exit(run, cfg)


if __name__ == "__main__":
    main()
