"""Deterministic synthetic sentence pairs: ``copy``, ``reverse``, ``sort`` and ``toy_translation``.

Every task yields whitespace-tokenized ``(source, target)`` strings. The source length in words is
drawn uniformly from ``[min_len, max_len]``, so every length bucket (1-10, 11-20, ...) holds about
the same number of sentences. The same arguments always give the same pairs: all randomness comes
from ``random.Random(seed)``, and the toy lexicon from SHA-256 hashes of the English words.

``copy``, ``reverse`` and ``sort`` draw tokens from ``vocab_size`` symbols ``w01 .. w50`` (zero-padded,
so string order is numeric order) and output the source itself, reversed, or sorted.

``toy_translation`` is the task of the project: an English-like SVO source and an invented SOV
target language. One pair, with a gloss of the target::

    source: the big dog sees some cats near this river
    target: ulo pipi gigi eman jaseli iko mesa deri bipit
    gloss:  the.SG.I dog big some.PL.II cats this.SG.I river near sees

that is subject (DET' NOUN' ADJ'), object (DET' NOUN'), postpositional phrase (DET' NOUN' POSTP),
verb. Translating it needs local reordering (adjectives after the noun, postpositions after their
noun phrase, the verb moved to the end of its clause past the object and the PP) and a few longer
links (the target determiner depends on the gender of a noun up to two words later; the verb agrees
with the subject). Each source content word maps to exactly one target word, so a perfect translation exists
and exact match is meaningful. An attention model can translate clause by clause, looking a few
words back and forth; a fixed-context model must carry all of a sentence of up to 60 words in one
vector before it writes the first word, so its quality falls with length: the bottleneck.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count, islice

from seq2seq.data.errors import DataError

TASKS: tuple[str, ...] = ("copy", "reverse", "sort", "toy_translation")
TOY_MIN_LEN = 3  # the shortest clause, "DET NOUN VERB"

# --- Source grammar: English-like, SVO --------------------------------------------------------------
# sentence = clause (CONJ clause)*;  clause = NP VERB [NP] [PREP NP];  NP = DET ADJ{0..2} NOUN

NOUNS: dict[str, str] = {  # singular -> plural
    **{w: w + "s" for w in (
        "dog", "cat", "bird", "horse", "farmer", "teacher", "king", "queen", "student", "doctor",
        "soldier", "baker", "sailor", "house", "tree", "river", "garden", "village", "boat", "car",
        "book", "letter", "table", "window", "door", "road", "bridge", "mountain", "forest", "field",
        "basket", "key", "song", "market", "school",
    )},
    "child": "children", "woman": "women", "man": "men", "city": "cities", "box": "boxes",
}  # fmt: skip
ADJECTIVES: tuple[str, ...] = (
    "big", "small", "proud", "young", "red", "green", "blue", "happy", "sad", "quiet",
    "loud", "tall", "short", "bright", "dark", "clever", "lazy", "brave", "gentle", "strange",
)  # fmt: skip
TRANSITIVE_VERBS: dict[str, str] = {  # subject singular -> subject plural
    "sees": "see", "likes": "like", "finds": "find", "helps": "help", "follows": "follow",
    "carries": "carry", "watches": "watch", "builds": "build", "paints": "paint", "opens": "open",
    "calls": "call", "visits": "visit", "reads": "read", "wants": "want", "loves": "love",
}  # fmt: skip
INTRANSITIVE_VERBS: dict[str, str] = {
    "sleeps": "sleep", "waits": "wait", "runs": "run", "sings": "sing", "walks": "walk",
    "laughs": "laugh", "works": "work", "swims": "swim", "dances": "dance", "stays": "stay",
}  # fmt: skip
PREPOSITIONS: tuple[str, ...] = ("in", "on", "near", "behind", "under", "with", "from", "beside")
CONJUNCTIONS: tuple[str, ...] = ("and", "but", "while")
DETERMINERS: dict[str, dict[str, str]] = {  # number -> {source determiner: meaning}
    "sg": {"the": "def", "a": "indef", "this": "prox", "that": "dist", "every": "every", "no": "neg"},
    "pl": {"the": "def", "some": "indef", "these": "prox", "those": "dist", "many": "many", "no": "neg"},
}

# --- Target lexicon: invented words, SOV -----------------------------------------------------------
# Content stems are consonant-vowel pairs hashed from the English word, so they never depend on the
# data seed. Nouns have a fixed gender (I or II); the determiner is a stem for its meaning plus an
# ending for the noun's number and gender. Plural nouns add "li"; verbs add "t" (singular subject)
# or "nt" (plural subject).

_CONSONANTS, _VOWELS = "bdfghjklmnprstvz", "aeiou"
_DET_STEMS = {
    "def": "ul",
    "indef": "em",
    "prox": "ik",
    "dist": "ov",
    "every": "ax",
    "many": "ur",
    "neg": "ez",
}
_DET_ENDINGS = {("sg", "I"): "o", ("sg", "II"): "a", ("pl", "I"): "on", ("pl", "II"): "an"}


def _stem(word: str, taken: set[str]) -> str:
    """A two-syllable pseudo-word hashed from ``word``, distinct from every word in ``taken``."""
    for attempt in count():
        digest = hashlib.sha256(f"{word}/{attempt}".encode()).digest()
        stem = "".join(_CONSONANTS[digest[i] % 16] + _VOWELS[digest[i + 1] % 5] for i in (0, 2))
        if stem not in taken:
            taken.add(stem)
            return stem


def _build_lexicon() -> tuple[dict[str, str], dict[str, str]]:
    """(source content word -> target word, singular noun -> gender)."""
    taken = set(NOUNS) | set(NOUNS.values()) | set(ADJECTIVES) | set(PREPOSITIONS) | set(CONJUNCTIONS)
    taken |= {w for verbs in (TRANSITIVE_VERBS, INTRANSITIVE_VERBS) for pair in verbs.items() for w in pair}
    lexicon: dict[str, str] = {}
    genders: dict[str, str] = {}
    for singular, plural in NOUNS.items():
        stem = _stem(singular, taken)
        lexicon[singular], lexicon[plural] = stem, stem + "li"
        genders[singular] = ("I", "II")[hashlib.sha256(f"gender/{singular}".encode()).digest()[0] % 2]
    for singular, plural in {**TRANSITIVE_VERBS, **INTRANSITIVE_VERBS}.items():
        stem = _stem(plural, taken)
        lexicon[singular], lexicon[plural] = stem + "t", stem + "nt"
    for word in (*ADJECTIVES, *PREPOSITIONS, *CONJUNCTIONS):
        lexicon[word] = _stem(word, taken)
    return lexicon, genders


TOY_LEXICON, TOY_GENDERS = _build_lexicon()
TOY_TARGET_VERBS: frozenset[str] = frozenset(
    TOY_LEXICON[w] for verbs in (TRANSITIVE_VERBS, INTRANSITIVE_VERBS) for pair in verbs.items() for w in pair
)

# --- Transfer: one parsed clause rendered in both languages ----------------------------------------


@dataclass(frozen=True)
class _NounPhrase:
    number: str  # "sg" | "pl"
    determiner: str
    adjectives: tuple[str, ...]
    noun: str  # singular form

    def source(self) -> list[str]:
        noun = self.noun if self.number == "sg" else NOUNS[self.noun]
        return [self.determiner, *self.adjectives, noun]

    def target(self) -> list[str]:
        meaning = DETERMINERS[self.number][self.determiner]
        determiner = _DET_STEMS[meaning] + _DET_ENDINGS[self.number, TOY_GENDERS[self.noun]]
        noun = TOY_LEXICON[self.noun if self.number == "sg" else NOUNS[self.noun]]
        return [determiner, noun, *(TOY_LEXICON[a] for a in self.adjectives)]


@dataclass(frozen=True)
class _Clause:
    subject: _NounPhrase
    verb: str  # singular-subject form
    obj: _NounPhrase | None
    preposition: str | None
    pp_object: _NounPhrase | None

    def _verb_form(self) -> str:
        if self.subject.number == "sg":
            return self.verb
        return {**TRANSITIVE_VERBS, **INTRANSITIVE_VERBS}[self.verb]

    def source(self) -> list[str]:
        """NP VERB [NP] [PREP NP]"""
        words = [*self.subject.source(), self._verb_form()]
        if self.obj is not None:
            words += self.obj.source()
        if self.pp_object is not None:
            words += [self.preposition, *self.pp_object.source()]
        return words

    def target(self) -> list[str]:
        """NP' [NP'] [NP' POSTP] VERB'"""
        words = self.subject.target()
        if self.obj is not None:
            words += self.obj.target()
        if self.pp_object is not None:
            words += [*self.pp_object.target(), TOY_LEXICON[self.preposition]]
        return [*words, TOY_LEXICON[self._verb_form()]]


# --- Length control: clause shapes that add up to exactly L source words ---------------------------
# A shape is (subject adjectives, object adjectives or None, PP adjectives or None).

_Shape = tuple[int, int | None, int | None]
_CLAUSE_MAX = 14  # DET ADJ ADJ NOUN VERB DET ADJ ADJ NOUN PREP DET ADJ ADJ NOUN


def _shape_length(shape: _Shape) -> int:
    n_subj, n_obj, n_pp = shape
    return 3 + n_subj + (0 if n_obj is None else 2 + n_obj) + (0 if n_pp is None else 3 + n_pp)


def _shapes_by_length() -> dict[int, list[_Shape]]:
    shapes: dict[int, list[_Shape]] = {}
    for shape in ((s, o, p) for s in range(3) for o in (None, 0, 1, 2) for p in (None, 0, 1, 2)):
        shapes.setdefault(_shape_length(shape), []).append(shape)
    return shapes


_SHAPES_BY_LENGTH = _shapes_by_length()


def _clause_lengths(length: int, rng: random.Random) -> list[int]:
    """Split ``length`` words into clauses of 3-14 words joined by one-word conjunctions."""
    fewest = -(-(length + 1) // (_CLAUSE_MAX + 1))
    most = (length + 1) // (TOY_MIN_LEN + 1)
    typical = rng.uniform(6.0, 10.0)  # mean clause length of this sentence
    n_clauses = min(max(round((length + 1) / (typical + 1)), fewest), most)
    sizes = [TOY_MIN_LEN] * n_clauses
    for _ in range(length - (n_clauses - 1) - TOY_MIN_LEN * n_clauses):
        sizes[rng.choice([i for i, size in enumerate(sizes) if size < _CLAUSE_MAX])] += 1
    return sizes


def _noun_phrase(n_adjectives: int, rng: random.Random) -> _NounPhrase:
    number = rng.choice(("sg", "pl"))
    return _NounPhrase(
        number=number,
        determiner=rng.choice(list(DETERMINERS[number])),
        adjectives=tuple(rng.sample(ADJECTIVES, n_adjectives)),
        noun=rng.choice(list(NOUNS)),
    )


def _clause(shape: _Shape, rng: random.Random) -> _Clause:
    n_subj, n_obj, n_pp = shape
    subject = _noun_phrase(n_subj, rng)
    verbs = INTRANSITIVE_VERBS if n_obj is None else TRANSITIVE_VERBS
    return _Clause(
        subject=subject,
        verb=rng.choice(list(verbs)),
        obj=None if n_obj is None else _noun_phrase(n_obj, rng),
        preposition=None if n_pp is None else rng.choice(PREPOSITIONS),
        pp_object=None if n_pp is None else _noun_phrase(n_pp, rng),
    )


def _toy_pair(length: int, rng: random.Random) -> tuple[list[str], list[str]]:
    source: list[str] = []
    target: list[str] = []
    for i, size in enumerate(_clause_lengths(length, rng)):
        if i:
            conjunction = rng.choice(CONJUNCTIONS)
            source.append(conjunction)
            target.append(TOY_LEXICON[conjunction])
        clause = _clause(rng.choice(_SHAPES_BY_LENGTH[size]), rng)
        source += clause.source()
        target += clause.target()
    return source, target


# --- Pair streams and the public API ---------------------------------------------------------------


def _symbol_pair(
    task: str, length: int, rng: random.Random, symbols: list[str]
) -> tuple[list[str], list[str]]:
    source = [rng.choice(symbols) for _ in range(length)]
    target = {"copy": source, "reverse": source[::-1], "sort": sorted(source)}[task]
    return source, target


def _check_arguments(task: str, min_len: int, max_len: int, vocab_size: int) -> None:
    if task not in TASKS:
        raise DataError(
            f"unknown synthetic task {task!r}; choose one of {', '.join(TASKS)} (option data.task)"
        )
    if min_len < 1 or max_len < min_len:
        raise DataError(
            f"bad sentence lengths min_len={min_len}, max_len={max_len}: need 1 <= min_len <= max_len "
            "(options data.min_len, data.max_len)"
        )
    if task == "toy_translation" and min_len < TOY_MIN_LEN:
        raise DataError(
            f"toy_translation needs min_len >= {TOY_MIN_LEN} (its shortest clause is 'DET NOUN VERB'), "
            f"got min_len={min_len}; set data.min_len={TOY_MIN_LEN} or more"
        )
    if task != "toy_translation" and vocab_size < 1:
        raise DataError(f"vocab_size must be >= 1, got {vocab_size} (option data.symbols)")


def _pair_stream(
    task: str, min_len: int, max_len: int, vocab_size: int, rng: random.Random
) -> Iterator[tuple[str, str]]:
    """Endless pairs; the caller has checked the arguments."""
    width = len(str(vocab_size))
    symbols = [f"w{i:0{width}d}" for i in range(1, vocab_size + 1)]
    while True:
        length = rng.randint(min_len, max_len)
        if task == "toy_translation":
            source, target = _toy_pair(length, rng)
        else:
            source, target = _symbol_pair(task, length, rng, symbols)
        yield " ".join(source), " ".join(target)


def generate_pairs(
    task: str, n: int, min_len: int, max_len: int, seed: int, vocab_size: int = 50
) -> list[tuple[str, str]]:
    """``n`` (source, target) pairs of ``task``, source lengths uniform in [min_len, max_len].

    ``vocab_size`` is the number of symbols of copy/reverse/sort; toy_translation has a fixed lexicon
    and ignores it.
    """
    _check_arguments(task, min_len, max_len, vocab_size)
    if n < 0:
        raise DataError(f"number of pairs must be >= 0, got {n}")
    return list(islice(_pair_stream(task, min_len, max_len, vocab_size, random.Random(seed)), n))


def _split_seed(seed: int, split: str) -> int:
    """A seed for one split, stable across processes (unlike ``hash``, which is salted per process)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{split}".encode()).digest()[:8], "big")


def make_splits(
    task: str,
    sizes: dict[str, int],
    min_len: int,
    max_len: int,
    seed: int,
    vocab_size: int = 50,
    lengths: dict[str, tuple[int, int]] | None = None,
) -> dict[str, list[tuple[str, str]]]:
    """Splits of exactly ``sizes[name]`` pairs, each from its own seed derived from ``seed`` and the name.

    ``lengths`` gives some splits their own ``(min_len, max_len)`` (``data.test_min_len``/``test_max_len``:
    a test set longer than training, for length generalisation).

    Every split other than ``"train"`` holds no source sentence that occurs in ``"train"``: such pairs
    are drawn again. Short sentences, whose few variants all occur in train, are therefore rarer in the
    held-out splits.
    """
    _check_arguments(task, min_len, max_len, vocab_size)
    bad = {name: size for name, size in sizes.items() if size < 0}
    if bad:
        raise DataError(f"split sizes must be >= 0, got {bad} (option data.sizes)")
    train = generate_pairs(
        task, sizes.get("train", 0), min_len, max_len, _split_seed(seed, "train"), vocab_size
    )
    train_sources = {source for source, _ in train}
    splits = {}
    for name, size in sizes.items():
        if name == "train":
            splits[name] = train
            continue
        low, high = (lengths or {}).get(name, (min_len, max_len))
        _check_arguments(task, low, high, vocab_size)
        stream = _pair_stream(task, low, high, vocab_size, random.Random(_split_seed(seed, name)))
        fresh = (pair for pair in islice(stream, 100 * size + 1000) if pair[0] not in train_sources)
        splits[name] = list(islice(fresh, size))
        if len(splits[name]) < size:
            raise DataError(
                f"could not draw {size} {name!r} pairs whose sources are not in the {len(train)} training "
                f"pairs: {task} with lengths {min_len}-{max_len} and vocab_size {vocab_size} has too few "
                "distinct sentences; raise data.max_len or data.symbols, or lower the split sizes"
            )
    return splits
