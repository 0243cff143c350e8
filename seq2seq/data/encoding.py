"""Text → token ids, the one way training, evaluation, translation and the analyses all do it.

``data.preprocess`` normalisation (Unicode form, lower-casing) → SentencePiece → with ``data.reverse_source``
the source ids reversed (Sutskever et al. 2014). The tokenizers are the ones the model was trained with
(from the data module, or from inside a checkpoint).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from seq2seq.data.batching import Example, PairDataset
from seq2seq.data.filters import Preprocess, normalize_pairs
from seq2seq.data.parallel import Pairs
from seq2seq.data.tokenizer import Tokenizer


class PairEncoder:
    """Encodes pairs and raw sources for one model.

    Args:
        src_tokenizer, tgt_tokenizer: the model's SentencePiece tokenizers.
        normalize, lowercase: ``data.preprocess.normalize`` / ``.lowercase`` (applied to raw text).
        reverse_source: ``data.reverse_source``.
    """

    def __init__(
        self,
        src_tokenizer: Tokenizer,
        tgt_tokenizer: Tokenizer,
        normalize: str | None = None,
        lowercase: bool = False,
        reverse_source: bool = False,
    ) -> None:
        self.src_tokenizer = src_tokenizer
        self.tgt_tokenizer = tgt_tokenizer
        self.normalize = normalize
        self.lowercase = lowercase
        self.reverse_source = reverse_source

    @classmethod
    def from_config(cls, data_cfg: Any, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer) -> PairEncoder:
        """For the ``data`` config a model was trained with."""
        options = Preprocess.from_config(data_cfg)
        return cls(
            src_tokenizer,
            tgt_tokenizer,
            normalize=options.normalize,
            lowercase=options.lowercase,
            reverse_source=bool(data_cfg.get("reverse_source", False)),
        )

    def normalize_pairs(self, pairs: Sequence[tuple[str, str]]) -> Pairs:
        """Raw pairs as training saw them (normalised, lower-cased as configured)."""
        return normalize_pairs(pairs, self.normalize, self.lowercase)

    def source_ids(self, sources: Sequence[str]) -> list[list[int]]:
        """Ids of already normalised sources, reversed with ``reverse_source``."""
        ids = self.src_tokenizer.encode_batch(list(sources))
        return [row[::-1] for row in ids] if self.reverse_source else ids

    def encode(self, pairs: Sequence[tuple[str, str]]) -> PairDataset:
        """A dataset of already normalised pairs; each example keeps its text."""
        src_ids = self.source_ids([source for source, _ in pairs])
        tgt_ids = self.tgt_tokenizer.encode_batch([target for _, target in pairs])
        return PairDataset(
            [
                Example(i, src, tgt, source, target)
                for i, (src, tgt, (source, target)) in enumerate(zip(src_ids, tgt_ids, pairs, strict=True))
            ]
        )

    def encode_sources(self, sentences: Sequence[str]) -> PairDataset:
        """A dataset of raw sentences to translate (normalised here); targets are empty."""
        sources = [source for source, _ in self.normalize_pairs([(s, "") for s in sentences])]
        return PairDataset(
            [
                Example(i, ids, [], source)
                for i, (ids, source) in enumerate(zip(self.source_ids(sources), sources, strict=True))
            ]
        )
