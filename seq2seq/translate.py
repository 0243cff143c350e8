"""Translate text with a trained model: ``seq2seq-translate ckpt_path=<file or run dir> [input=<file>]``.

Reads UTF-8 sentences, one per line, from ``input`` or stdin, and writes one translation per line to
stdout, in order; an empty input line gives an empty output line, so the output stays line-aligned.
Decoding is the checkpoint's own or the one chosen here (``decoding=beam decoding.beam_size=10``).
``dump_attention=<file>`` also writes every line's attention weights as JSON (``attention_heads=true``: a
Transformer decoder's per layer and head as well). The model, tokenizers and
config all come from the checkpoint, so a checkpoint moved anywhere still works. Messages go to stderr;
bad input (checkpoint, file, encoding, over-long lines) ends with one clear line and exit status 1.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from seq2seq.config import CONF_DIR
from seq2seq.config.checks import full_error, validate_translate
from seq2seq.data.atomic import write_atomic
from seq2seq.data.errors import DataError
from seq2seq.data.parallel import decode_lines
from seq2seq.inference.checkpoint import TrainedModel, find_checkpoint, load_checkpoint
from seq2seq.inference.signals import Stopped, stop_on_signals
from seq2seq.inference.translator import NO_ATTENTION, NO_HEADS, Translation, Translator
from seq2seq.models.decoding import Decoding
from seq2seq.training.allocator import keep_freed_memory

log = logging.getLogger("seq2seq.translate")


def read_lines(path: str | None) -> list[str]:
    """The lines of a UTF-8 file (stdin when ``path`` is None), without line endings; a BOM is ignored."""
    name = "<stdin>" if path is None else str(path)
    if path is None:
        data = sys.stdin.buffer.read()
    else:
        if not Path(path).is_file():
            raise DataError(f"input={path}: no such file (resolved to {Path(path).resolve()})")
        data = Path(path).read_bytes()
    return decode_lines(data, name)


def check_lengths(lines: Sequence[str], max_words: int | None, policy: str) -> None:
    """Refuse (``error``) or warn about (``warn``) lines with more words than the model trained on."""
    if max_words is None:
        return
    long = [(i + 1, len(line.split())) for i, line in enumerate(lines) if len(line.split()) > max_words]
    if not long:
        return
    where = ", ".join(f"line {number} ({words} words)" for number, words in long[:5])
    more = f" and {len(long) - 5} more" if len(long) > 5 else ""
    message = (
        f"{len(long)} input line(s) are longer than {max_words} words, the longest the model trained on "
        f"(data.max_words): {where}{more}"
    )
    if policy == "error":
        raise ValueError(
            f"{message}; split them into sentences, raise max_words=N, or pass long_lines=warn to translate "
            "them anyway"
        )
    log.warning("%s; translating them anyway (expect poor quality)", message)


def attention_record(number: int, translation: Translation) -> dict[str, Any]:
    """One line of the ``dump_attention`` JSON: pieces and ``weights[output][source]`` (or null); with
    ``attention_heads`` also ``heads[layer][head][output][source]``."""
    weights = translation.attention
    return {
        "line": number,
        "source": translation.source,
        "translation": translation.text,
        "source_pieces": translation.source_pieces,
        "output_pieces": translation.output_pieces,
        "weights": None if weights is None else _rounded(weights),
        **({} if translation.heads is None else {"heads": _rounded(translation.heads)}),
    }


def _rounded(values: torch.Tensor | list | float) -> list | float:
    """A tensor's values as nested lists, each rounded to 6 decimals (the JSON stays readable and small)."""
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    return [_rounded(v) for v in values] if isinstance(values, list) else round(values, 6)


def write_attention(
    path: Path, trained: TrainedModel, decoding: Decoding, translations: Sequence[Translation]
) -> None:
    """The ``dump_attention`` file: model facts, then one record per input line (in order)."""
    document: dict[str, Any] = {
        "checkpoint": str(trained.path),
        "attention": trained.cfg.model.attention.name,
        "decoding": decoding.name,
        "rows": "output pieces (ending with </s> when the search stopped at EOS)",
        "columns": "source pieces as fed to the encoder",
    }
    if trained.model.decoder.attention is None:
        document["note"] = NO_ATTENTION
    document["lines"] = [attention_record(i + 1, t) for i, t in enumerate(translations)]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(document, ensure_ascii=False) + "\n")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def translate(cfg: DictConfig) -> list[Translation]:
    """Translate ``input`` (or stdin) and write the translations to stdout; returns them."""
    validate_translate(cfg)
    keep_freed_memory()  # decoding allocates the same blocks at every step (training/allocator.py)
    device = pick_device(cfg.device)
    trained = load_checkpoint(find_checkpoint(cfg.ckpt_path), map_location=device)
    decoding = Decoding.from_config(cfg.decoding if cfg.get("decoding") is not None else trained.cfg.decoding)
    budget = cfg.batch_tokens or trained.cfg.data.batch.eval_max_tokens
    translator = Translator(trained.model, trained.encoder, decoding, budget)
    heads = bool(cfg.get("attention_heads", False))
    if heads and not translator.has_heads:
        raise ValueError(f"attention_heads=true: {NO_HEADS}")
    lines = read_lines(cfg.input)
    max_words = cfg.max_words if cfg.max_words is not None else trained.cfg.data.get("max_words")
    check_lengths(lines, max_words, cfg.long_lines)
    if cfg.dump_attention is not None and not translator.has_attention:
        log.warning("%s; %s gets null weights", NO_ATTENTION, cfg.dump_attention)
    translations = translator.translate(
        lines, return_attention=cfg.dump_attention is not None, return_heads=heads
    )
    sys.stdout.write("".join(t.text + "\n" for t in translations))
    sys.stdout.flush()
    if cfg.dump_attention is not None:
        write_attention(Path(cfg.dump_attention), trained, decoding, translations)
    return translations


@hydra.main(config_path=CONF_DIR, config_name="translate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: bad input ends with one clear line on stderr and exit status 1."""
    try:
        with stop_on_signals():  # SIGTERM / Ctrl+C stop at once; dump_attention is then not written
            translate(cfg)
    except Stopped as stop:
        log.error("translate %s", stop)
        sys.exit(stop.exit_code)
    except ValueError as error:  # CheckpointError, DataError and bad options are ValueErrors
        log.error("translate failed: %s", error)
        if full_error():
            raise
        sys.exit(1)


if __name__ == "__main__":
    main()
