"""What the driver prepares for JoeyNMT: the same text segmented into seq2seq's pieces, and its config.

JoeyNMT's own SentencePiece tokenizer cannot be used (it calls ``SetVocabulary``, which sentencepiece 0.2.3
lacks), so JoeyNMT reads the text already segmented with seq2seq's SentencePiece models (``level: word``)
and their piece lists as its vocabularies. The config describes the same model, optimiser, clipping and
batches as seq2seq's; ``joeynmt_side.py`` reads both in JoeyNMT's virtualenv. Standard library only.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

EMBEDDING_STD = 1.0  # torch.nn.Embedding's default initialisation, N(0, 1), which seq2seq's embeddings keep


def write_joeynmt_data(datamodule: Any, folder: Path, langs: tuple[str, str], decode: int) -> None:
    """Train and first ``decode`` test pairs segmented into SentencePiece pieces, and the piece vocabularies.

    Args:
        datamodule: seq2seq's data module, set up (its ``raw`` splits and its two tokenizers are read).
    """
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
    """JoeyNMT's config for the same model, optimiser, clipping, embedding initialisation and data (on 2.3.0).

    Args:
        args: the driver's options (sizes, batch budgets, beam, seed, ``work``).
        cfg: seq2seq's composed config (``optim`` and ``trainer.gradient_clip_val`` are read).
    """
    recurrent = {"type": "recurrent", "rnn_type": "gru", "num_layers": 1, "dropout": 0.0}
    embeddings = {"embedding_dim": args.embedding_size, "scale": False, "dropout": 0.0}
    clip = cfg.trainer.get("gradient_clip_val")
    return {
        "name": "bench",
        "model_dir": str(Path(args.work) / "joeynmt" / "model"),
        "use_cuda": getattr(args, "device", "cpu") == "cuda",
        "fp16": bool(getattr(args, "joeynmt_fp16", False)),  # its torch.autocast fp16 + GradScaler, CUDA only
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
            # seq2seq's embeddings are nn.Embedding's N(0, 1); JoeyNMT's default (xavier, std ≈ 0.016 here) kept
            # its loss at the unigram plateau (≈ 6.5) for 250+ updates where seq2seq's fell to 4.5
            # (docs/performance.md, "Matched embedding initialisation"); matched, the two loss curves agree
            "embed_initializer": "normal",
            "embed_init_weight": EMBEDDING_STD,
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
