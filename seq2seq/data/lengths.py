"""Sentence length in words, and the source-length buckets every BLEU-by-length table uses.

Lengths are whitespace words of the raw text (as in Bahdanau et al. 2015, Fig. 2, and Cho et al. 2014), the
unit of ``data.max_words``, the ``data.preprocess`` filters and ``data.length_buckets``.
"""

from __future__ import annotations

from collections.abc import Sequence


def words(text: str) -> int:
    """Whitespace words in ``text``."""
    return len(text.split())


def bucket_bounds(
    edges: Sequence[int], option: str = "eval.length_buckets"
) -> list[tuple[str, int, int | None]]:
    """``[1, 11, 21]`` → ``[("1-10", 1, 10), ("11-20", 11, 20), ("21+", 21, None)]``.

    Raises:
        ValueError: the edges do not increase from 1 or more; the message names ``option``.
    """
    edges = [int(e) for e in edges or []]
    if not edges or edges[0] < 1 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        raise ValueError(f"{option}={edges}: need increasing lower edges starting at >= 1, e.g. [1,11,21,31]")
    bounds = []
    for low, high in zip(edges, [*edges[1:], None], strict=True):
        if high is None:
            bounds.append((f"{low}+", low, None))
        else:
            bounds.append((f"{low}-{high - 1}" if high - 1 > low else f"{low}", low, high - 1))
    return bounds
