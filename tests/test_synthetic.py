"""Tests for seq2seq.data.synthetic: determinism, lengths, the symbol tasks, the toy language, splits."""

from collections import Counter, defaultdict

import pytest

from seq2seq.data import synthetic
from seq2seq.data.errors import DataError
from seq2seq.data.synthetic import TASKS, TOY_LEXICON, TOY_TARGET_VERBS, generate_pairs, make_splits

SOURCE_VERBS = {
    w
    for verbs in (synthetic.TRANSITIVE_VERBS, synthetic.INTRANSITIVE_VERBS)
    for pair in verbs.items()
    for w in pair
}
TARGET_CONJUNCTIONS = {TOY_LEXICON[c] for c in synthetic.CONJUNCTIONS}


def _split_at(words: list[str], separators: set[str]) -> list[list[str]]:
    clauses: list[list[str]] = [[]]
    for word in words:
        if word in separators:
            clauses.append([])
        else:
            clauses[-1].append(word)
    return clauses


@pytest.fixture(scope="module")
def toy_pairs() -> list[tuple[str, str]]:
    return generate_pairs("toy_translation", 1500, 3, 30, seed=7)


# --- determinism and lengths ---


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_pairs_and_different_seed_different_pairs(task: str) -> None:
    first = generate_pairs(task, 50, 3, 20, seed=1)
    assert first == generate_pairs(task, 50, 3, 20, seed=1)
    assert first != generate_pairs(task, 50, 3, 20, seed=2)
    assert all(isinstance(s, str) and isinstance(t, str) for s, t in first)


@pytest.mark.parametrize("task", TASKS)
def test_source_lengths_stay_in_range_and_fill_every_bucket(task: str) -> None:
    pairs = generate_pairs(task, 1800, 3, 60, seed=3)
    lengths = [len(source.split()) for source, _ in pairs]
    assert min(lengths) >= 3 and max(lengths) <= 60
    per_bucket = Counter((n - 1) // 10 for n in lengths)
    lengths_in_bucket = {b: len(range(max(3, 10 * b + 1), 10 * b + 11)) for b in range(6)}
    for bucket, n_lengths in lengths_in_bucket.items():  # uniform over 58 lengths
        expected = 1800 * n_lengths / 58
        assert abs(per_bucket[bucket] - expected) < 0.25 * expected, (bucket, per_bucket)


def test_exact_length_sixty_works_for_toy_translation() -> None:
    pairs = generate_pairs("toy_translation", 20, 60, 60, seed=0)
    assert {len(source.split()) for source, _ in pairs} == {60}


# --- copy, reverse, sort ---


def test_symbol_tasks_transform_the_source_and_use_the_vocabulary() -> None:
    for task, expected in (("copy", lambda w: w), ("reverse", lambda w: w[::-1]), ("sort", sorted)):
        pairs = generate_pairs(task, 200, 1, 15, seed=4, vocab_size=12)
        for source, target in pairs:
            assert target.split() == list(expected(source.split()))
        tokens = {w for source, _ in pairs for w in source.split()}
        assert len(tokens) == 12  # every symbol is drawn, no other


def test_sort_order_is_numeric_order_of_symbols() -> None:
    (_, target), *_ = generate_pairs("sort", 1, 40, 40, seed=5, vocab_size=120)
    numbers = [int(token[1:]) for token in target.split()]
    assert numbers == sorted(numbers)


# --- toy_translation ---


def test_toy_source_uses_the_english_lexicon(toy_pairs: list[tuple[str, str]]) -> None:
    english = set(TOY_LEXICON) | {d for dets in synthetic.DETERMINERS.values() for d in dets}
    assert {w for source, _ in toy_pairs for w in source.split()} <= english


def test_toy_target_is_reordered_but_has_the_same_content_words(toy_pairs: list[tuple[str, str]]) -> None:
    targets = set(TOY_LEXICON.values())
    n_reordered = 0
    for source, target in toy_pairs:
        assert len(target.split()) == len(source.split())
        translated = [TOY_LEXICON[w] for w in source.split() if w in TOY_LEXICON]
        in_target = [w for w in target.split() if w in targets]
        assert Counter(translated) == Counter(in_target)
        n_reordered += translated != in_target
    assert n_reordered > 0.8 * len(toy_pairs)


def test_toy_lexicon_is_one_to_one_as_seen_in_the_data(toy_pairs: list[tuple[str, str]]) -> None:
    """Infer each source word's translation from co-occurrence alone: the one target word present in
    every target whose source contains it. It must exist, be unique and differ between words."""
    always_with: dict[str, set[str]] = {}
    occurrences: Counter[str] = Counter()
    for source, target in toy_pairs:
        for word in set(source.split()) & set(TOY_LEXICON):
            occurrences[word] += 1
            always_with[word] = always_with.get(word, set(target.split())) & set(target.split())
    frequent = [w for w in always_with if occurrences[w] >= 20]
    assert len(frequent) > 0.9 * len(TOY_LEXICON)
    inferred = {}
    for word in frequent:
        assert len(always_with[word]) == 1, (word, always_with[word])
        inferred[word] = always_with[word].pop()
    assert len(set(inferred.values())) == len(inferred)
    assert inferred == {w: TOY_LEXICON[w] for w in frequent}
    assert len(set(TOY_LEXICON.values())) == len(TOY_LEXICON)
    assert not set(TOY_LEXICON.values()) & set(TOY_LEXICON)  # no target word is also an English word


def test_toy_target_clauses_are_verb_final(toy_pairs: list[tuple[str, str]]) -> None:
    for source, target in toy_pairs:
        source_clauses = _split_at(source.split(), set(synthetic.CONJUNCTIONS))
        target_clauses = _split_at(target.split(), TARGET_CONJUNCTIONS)
        assert len(source_clauses) == len(target_clauses)
        for src_clause, tgt_clause in zip(source_clauses, target_clauses, strict=True):
            (verb,) = [w for w in src_clause if w in SOURCE_VERBS]
            assert tgt_clause[-1] == TOY_LEXICON[verb]
            assert [w for w in tgt_clause if w in TOY_TARGET_VERBS] == [tgt_clause[-1]]


def test_toy_verbs_agree_and_determiners_depend_on_noun_gender() -> None:
    """In three-word sentences (DET NOUN VERB) the target determiner is a function of the source
    determiner and noun, and 'the' with singular nouns takes two forms (two genders)."""
    pairs = generate_pairs("toy_translation", 600, 3, 3, seed=11)
    determiner_for: dict[tuple[str, str], set[str]] = defaultdict(set)
    for source, target in pairs:
        det, noun, verb = source.split()
        det_t, noun_t, verb_t = target.split()
        assert (noun_t, verb_t) == (TOY_LEXICON[noun], TOY_LEXICON[verb])
        assert (noun in synthetic.NOUNS) == (verb in synthetic.INTRANSITIVE_VERBS)  # subject-verb agreement
        determiner_for[det, noun].add(det_t)
    assert all(len(forms) == 1 for forms in determiner_for.values())
    the_singular = {
        next(iter(f)) for (d, n), f in determiner_for.items() if d == "the" and n in synthetic.NOUNS
    }
    assert len(the_singular) == 2


def test_docstring_example_is_consistent_with_the_lexicon() -> None:
    doc = synthetic.__doc__
    source = doc.split("source: ")[1].split("\n")[0].split()
    target = doc.split("target: ")[1].split("\n")[0].split()
    translated = [TOY_LEXICON[w] for w in source if w in TOY_LEXICON]
    assert sorted(translated) == sorted(w for w in target if w in set(TOY_LEXICON.values()))
    assert target[-1] == TOY_LEXICON["sees"]


# --- splits ---


@pytest.mark.parametrize("task", ["copy", "toy_translation"])
def test_splits_have_exact_sizes_and_held_out_sources_are_not_in_train(task: str) -> None:
    sizes = {"train": 400, "val": 60, "test": 70}
    splits = make_splits(task, sizes, 3, 8, seed=0, vocab_size=4)
    assert {name: len(pairs) for name, pairs in splits.items()} == sizes
    train_sources = {source for source, _ in splits["train"]}
    for name in ("val", "test"):
        assert not train_sources & {source for source, _ in splits[name]}
    assert splits["val"] != splits["test"]
    assert splits == make_splits(task, sizes, 3, 8, seed=0, vocab_size=4)
    assert splits["train"] != make_splits(task, sizes, 3, 8, seed=1, vocab_size=4)["train"]


def test_split_that_cannot_be_disjoint_raises() -> None:
    # copy with 2 symbols and lengths 1-2 has only 6 distinct sources; 200 training pairs cover all.
    with pytest.raises(DataError, match="too few distinct sentences"):
        make_splits("copy", {"train": 200, "val": 10}, 1, 2, seed=0, vocab_size=2)


# --- bad arguments ---


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "transliterate"}, "copy, reverse, sort, toy_translation"),
        ({"min_len": 0}, "min_len=0"),
        ({"min_len": 9, "max_len": 8}, "min_len <= max_len"),
        ({"task": "toy_translation", "min_len": 2}, "min_len >= 3"),
        ({"vocab_size": 0}, "vocab_size must be >= 1"),
        ({"n": -1}, "must be >= 0"),
    ],
)
def test_bad_arguments_raise_data_error(kwargs: dict, message: str) -> None:
    arguments = {"task": "copy", "n": 5, "min_len": 3, "max_len": 8, "seed": 0, "vocab_size": 10} | kwargs
    with pytest.raises(DataError, match=message):
        generate_pairs(**arguments)
    if "n" not in kwargs:
        del arguments["n"]
        with pytest.raises(DataError, match=message):
            make_splits(sizes={"train": 5}, **arguments)
