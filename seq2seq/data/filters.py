"""Cleaning a parallel corpus: Unicode normalisation, lower-casing, duplicates, length and length ratio.

Normalisation and lower-casing apply to every split alike, so test references look like the training
targets. Duplicate, length and ratio filters apply to the training split only: val and test stay the
sets others score on. Lengths are whitespace words (as in the length buckets of ``results.json``).
Each filter logs how many pairs it dropped; a filter that leaves nothing raises DataError naming the
option to relax.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from seq2seq.data.errors import DataError
from seq2seq.data.lengths import words
from seq2seq.data.parallel import Pairs

log = logging.getLogger(__name__)

NORMAL_FORMS = ("NFC", "NFKC", "NFD", "NFKD")


@dataclass(frozen=True)
class Preprocess:
    """The options of ``data.preprocess``, plus ``data.max_words``. The defaults change nothing.

    Attributes:
        normalize: Unicode normal form for every split (``NFC``, ``NFKC``, ``NFD``, ``NFKD``), or None.
        lowercase: lower-case every split.
        dedupe: drop training pairs identical (source and target) to an earlier one.
        min_words: drop training pairs with fewer words on either side.
        max_words: drop training pairs with more words on either side (never truncated); None keeps all.
        max_ratio: drop training pairs whose longer side has more than this many times the words of the
            shorter side; None keeps all.
    """

    normalize: str | None = None
    lowercase: bool = False
    dedupe: bool = False
    min_words: int = 1
    max_words: int | None = None
    max_ratio: float | None = None

    def __post_init__(self) -> None:
        if self.normalize is not None and self.normalize not in NORMAL_FORMS:
            raise DataError(
                f"data.preprocess.normalize={self.normalize!r}: choose one of {', '.join(NORMAL_FORMS)} or null"
            )
        if self.min_words < 1:
            raise DataError(f"data.preprocess.min_words={self.min_words}: must be >= 1")
        if self.max_words is not None and self.max_words < self.min_words:
            raise DataError(
                f"data.max_words={self.max_words} is below data.preprocess.min_words={self.min_words}; "
                "no pair could pass"
            )
        if self.max_ratio is not None and self.max_ratio < 1.0:
            raise DataError(f"data.preprocess.max_ratio={self.max_ratio}: must be >= 1 (or null to keep all)")

    @classmethod
    def from_config(cls, data_cfg: Any) -> Preprocess:
        """Options from a ``data`` config node: ``data.preprocess`` (may be absent) and ``data.max_words``."""
        options = dict(data_cfg.get("preprocess") or {})
        known = {f.name for f in fields(cls)} - {"max_words"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise DataError(
                f"unknown option(s) data.preprocess.{', data.preprocess.'.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        max_words = data_cfg.get("max_words")
        return cls(**options, max_words=None if max_words is None else int(max_words))


def normalize_pairs(pairs: Sequence[tuple[str, str]], form: str | None, lowercase: bool) -> Pairs:
    """Both sides in Unicode normal form ``form`` (None: unchanged), lower-cased if ``lowercase``."""

    def clean(text: str) -> str:
        text = unicodedata.normalize(form, text) if form else text
        return text.lower() if lowercase else text

    return [(clean(src), clean(tgt)) for src, tgt in pairs]


def drop_duplicates(pairs: Sequence[tuple[str, str]]) -> tuple[Pairs, int]:
    """(pairs without repeats of an earlier identical (source, target) pair, number dropped)."""
    kept = list(dict.fromkeys(pairs))
    return kept, len(pairs) - len(kept)


def drop_longer_than(pairs: Sequence[tuple[str, str]], max_words: int) -> tuple[Pairs, int]:
    """(pairs with at most ``max_words`` words on both sides, number dropped).

    Long pairs are dropped, never truncated: a truncated pair is no longer a translation.
    """
    kept = [(src, tgt) for src, tgt in pairs if max(words(src), words(tgt)) <= max_words]
    return kept, len(pairs) - len(kept)


def drop_shorter_than(pairs: Sequence[tuple[str, str]], min_words: int) -> tuple[Pairs, int]:
    """(pairs with at least ``min_words`` words on both sides, number dropped)."""
    kept = [(src, tgt) for src, tgt in pairs if min(words(src), words(tgt)) >= min_words]
    return kept, len(pairs) - len(kept)


def drop_by_ratio(pairs: Sequence[tuple[str, str]], max_ratio: float) -> tuple[Pairs, int]:
    """(pairs whose word counts differ by a factor of at most ``max_ratio``, number dropped).

    The ratio is longer side / shorter side in words; a pair with an empty side has an infinite ratio.
    """

    def ratio(src: str, tgt: str) -> float:
        short, long = sorted((words(src), words(tgt)))
        return long / short if short else float("inf")

    kept = [(src, tgt) for src, tgt in pairs if ratio(src, tgt) <= max_ratio]
    return kept, len(pairs) - len(kept)


def clean_training_pairs(
    pairs: Sequence[tuple[str, str]], options: Preprocess
) -> tuple[Pairs, dict[str, int]]:
    """Apply the training-only filters in this order: duplicates, too long, too short, length ratio.

    Returns (kept pairs, counts ``{"duplicate", "too_long", "too_short", "ratio"}``; 0 for a filter that is
    off). Each count is logged (a warning when it is not 0); DataError when a filter leaves nothing.
    """
    steps: list[tuple[str, Callable[[Pairs], tuple[Pairs, int]], str, str]] = []
    if options.dedupe:
        steps.append(
            (
                "duplicate",
                drop_duplicates,
                "that repeat an earlier pair (data.preprocess.dedupe)",
                "set data.preprocess.dedupe=false",
            )
        )
    if options.max_words is not None:
        steps.append(
            (
                "too_long",
                lambda p: drop_longer_than(p, options.max_words),
                f"longer than data.max_words={options.max_words} words (never truncated)",
                "raise data.max_words",
            )
        )
    steps.append(
        (
            "too_short",
            lambda p: drop_shorter_than(p, options.min_words),
            f"shorter than data.preprocess.min_words={options.min_words} words",
            "lower data.preprocess.min_words",
        )
    )
    if options.max_ratio is not None:
        steps.append(
            (
                "ratio",
                lambda p: drop_by_ratio(p, options.max_ratio),
                f"whose word counts differ by more than data.preprocess.max_ratio={options.max_ratio} times",
                "raise data.preprocess.max_ratio or set it to null",
            )
        )
    pairs = list(pairs)
    counts = dict.fromkeys(("duplicate", "too_long", "too_short", "ratio"), 0)
    for name, step, why, relax in steps:
        total = len(pairs)
        pairs, counts[name] = step(pairs)
        if counts[name]:
            log.warning("dropped %d of %d training pairs %s", counts[name], total, why)
        else:
            log.info("no training pairs %s", why)
        if not pairs:
            raise DataError(f"no training pairs left after dropping {counts[name]} {why}; {relax}")
    return pairs, counts


def preprocess_splits(
    splits: Mapping[str, Sequence[tuple[str, str]]], options: Preprocess
) -> tuple[dict[str, Pairs], dict[str, int]]:
    """Normalise every split, then clean the ``train`` split (``clean_training_pairs``).

    Returns (splits, training filter counts, plus ``"normalized"``: how many pairs normalisation or
    lower-casing changed, over all splits).
    """
    out: dict[str, Pairs] = {}
    changed = 0
    for split, pairs in splits.items():
        out[split] = normalize_pairs(pairs, options.normalize, options.lowercase)
        changed += sum(new != old for new, old in zip(out[split], pairs, strict=True))
    if options.normalize or options.lowercase:
        log.info(
            "data.preprocess (normalize=%s, lowercase=%s) changed %d pairs over all splits",
            options.normalize,
            options.lowercase,
            changed,
        )
    out["train"], counts = clean_training_pairs(out["train"], options)
    return out, {"normalized": changed, **counts}
