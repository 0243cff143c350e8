"""SentencePiece tokenizers, trained on the training split and cached by a hash of data and settings.

Special ids are fixed for every model: ``<pad>`` 0, ``<unk>`` 1, ``<s>`` (BOS) 2, ``</s>`` (EOS) 3.
The serialized model travels inside checkpoints, so a checkpoint moved elsewhere still decodes.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

from seq2seq.data.atomic import write_atomic

log = logging.getLogger(__name__)

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
MODEL_TYPES = ("unigram", "bpe", "word", "char")


class Tokenizer:
    """A thin wrapper around ``SentencePieceProcessor`` with the project's special ids."""

    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def __init__(self, model_proto: bytes) -> None:
        self.model_proto = model_proto
        self.processor = spm.SentencePieceProcessor(model_proto=model_proto)

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.processor.encode(text, out_type=int)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.processor.encode(list(texts), out_type=int)

    def decode(self, ids: Sequence[int]) -> str:
        return self.processor.decode([int(i) for i in ids])

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.processor.id_to_piece(int(i)) for i in ids]


def _cache_key(sentences: Sequence[str], settings: dict) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for sentence in sentences:
        digest.update(sentence.encode())
        digest.update(b"\n")
    return digest.hexdigest()[:20]


def train_tokenizer(
    sentences: Sequence[str], model_type: str = "unigram", vocab_size: int = 8000, **options
) -> bytes:
    """Train a SentencePiece model in memory; returns the serialized model.

    ``vocab_size`` is an upper bound (``hard_vocab_limit=false``), so a small corpus or a word-level model
    with fewer distinct words still trains.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"data.tokenizer.model_type={model_type!r}: choose one of {MODEL_TYPES}")
    if not sentences:
        raise ValueError("cannot train a tokenizer on an empty training split")
    model = io.BytesIO()
    try:
        _train(sentences, model, model_type, vocab_size, options)
    except RuntimeError as error:  # SentencePiece's own checks, e.g. "Vocabulary size is smaller than ..."
        reason = str(error).split("]")[-1].strip().split(". Increase")[0] or str(error)
        needed = re.search(r"smaller than required_chars\. \d+ vs (\d+)", reason)
        fix = (
            f"raise data.tokenizer.vocab_size to at least {int(needed.group(1)) + 4} (its characters and the "
            "4 special tokens)"
            if needed
            else "change data.tokenizer.vocab_size or use a larger training split"
        )
        raise ValueError(
            f"SentencePiece cannot train a {model_type} tokenizer with data.tokenizer.vocab_size={vocab_size} "
            f"on these {len(sentences)} training sentences ({reason}); {fix}"
        ) from None
    return model.getvalue()


def _train(
    sentences: Sequence[str], model: io.BytesIO, model_type: str, vocab_size: int, options: dict
) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        model_type=model_type,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        character_coverage=options.pop("character_coverage", 1.0),
        input_sentence_size=options.pop("input_sentence_size", 2_000_000),
        shuffle_input_sentence=True,
        num_threads=options.pop("num_threads", os.cpu_count() or 1),
        minloglevel=2,
        **options,
    )


def load_or_train(sentences: Iterable[str], settings: dict, cache_dir: str | Path, name: str) -> Tokenizer:
    """Return the cached tokenizer for these sentences and settings, training and caching it if new.

    The cache file is ``<cache_dir>/tokenizers/<name>-<hash>.model``; it is written atomically so parallel
    jobs (sweeps, DDP ranks) never read a half-written file.
    """
    sentences = list(sentences)
    path = Path(cache_dir) / "tokenizers" / f"{name}-{_cache_key(sentences, settings)}.model"
    if path.exists():
        try:
            proto = path.read_bytes()
            log.info("tokenizer %s: cached %s", name, path)
            return Tokenizer(proto)
        except OSError as error:  # e.g. another user's cache file; train our own
            log.warning("tokenizer %s: cannot read the cached %s (%s); training it again", name, path, error)
    log.info("tokenizer %s: training SentencePiece (%s) on %d sentences", name, settings, len(sentences))
    proto = train_tokenizer(sentences, **settings)
    try:
        write_atomic(path, proto)
    except OSError as error:
        log.warning(
            "tokenizer %s: cannot cache it in %s (%s); set paths.cache_dir (or SEQ2SEQ_CACHE) to a writable "
            "directory to reuse it",
            name,
            path.parent,
            error.strerror or error,
        )
    return Tokenizer(proto)
