"""Gold word alignments of ``toy_translation`` pairs: which source word each target word translates.

The toy grammar (``synthetic.py``) is unambiguous and maps every source word to exactly one target word, so the
source sentence alone fixes the target's word order and therefore the alignment: per clause the target is
``NP' [NP'] [NP' POSTP] VERB'`` with each ``NP'`` = ``DET' NOUN' ADJ'*``, clauses joined by their conjunctions.
"""

from __future__ import annotations

from seq2seq.data.errors import DataError
from seq2seq.data.synthetic import (
    ADJECTIVES,
    CONJUNCTIONS,
    DETERMINERS,
    INTRANSITIVE_VERBS,
    PREPOSITIONS,
    TOY_LEXICON,
    TRANSITIVE_VERBS,
)

_DETERMINER_WORDS = frozenset(d for number in DETERMINERS.values() for d in number)
TOY_VERBS_SOURCE: frozenset[str] = frozenset(
    w for verbs in (TRANSITIVE_VERBS, INTRANSITIVE_VERBS) for pair in verbs.items() for w in pair
)


def _parse_noun_phrase(words: list[str], at: int) -> tuple[list[int], int]:
    """Source NP ``DET ADJ* NOUN`` starting at ``at`` → its source indices in target order (DET' NOUN' ADJ'*)
    and the index after it."""
    if at >= len(words) or words[at] not in _DETERMINER_WORDS:
        raise DataError(f"not a toy_translation source: expected a determiner at word {at + 1}")
    end = at + 1
    while end < len(words) and words[end] in ADJECTIVES:
        end += 1
    if end >= len(words) or words[end] not in TOY_LEXICON or words[end] in TOY_VERBS_SOURCE:
        raise DataError(f"not a toy_translation source: expected a noun at word {end + 1}")
    return [at, end, *range(at + 1, end)], end + 1


def toy_alignment(source: str) -> list[int]:
    """The gold alignment of a ``toy_translation`` pair, from its source: for each word of the target, the
    0-based index of the source word it translates (the target determiner translates the source determiner,
    the postposition the preposition). The grammar is unambiguous, so the source alone fixes the target.

    Raises:
        DataError: ``source`` is not a sentence of the toy grammar.
    """
    words = source.split()
    alignment: list[int] = []
    at = 0
    while at < len(words):
        if at:
            if words[at] not in CONJUNCTIONS:
                raise DataError(f"not a toy_translation source: expected a conjunction at word {at + 1}")
            alignment.append(at)
            at += 1
        subject, at = _parse_noun_phrase(words, at)
        if at >= len(words) or words[at] not in TOY_VERBS_SOURCE:
            raise DataError(f"not a toy_translation source: expected a verb at word {at + 1}")
        verb, at = at, at + 1
        clause = subject
        if at < len(words) and words[at] in _DETERMINER_WORDS:
            obj, at = _parse_noun_phrase(words, at)
            clause += obj
        if at < len(words) and words[at] in PREPOSITIONS:
            pp, after = _parse_noun_phrase(words, at + 1)
            clause += [*pp, at]
            at = after
        alignment += [*clause, verb]
    return alignment
