"""Tests for seq2seq.data.filters: normalisation, each training filter and its logged count, option errors."""

import logging
import unicodedata

import pytest
from omegaconf import OmegaConf

from seq2seq.data.errors import DataError
from seq2seq.data.filters import (
    Preprocess,
    clean_training_pairs,
    drop_by_ratio,
    drop_duplicates,
    drop_longer_than,
    drop_shorter_than,
    normalize_pairs,
    preprocess_splits,
)

DECOMPOSED = unicodedata.normalize("NFD", "Jehová")  # "a" + combining acute accent


def test_normalize_pairs_nfc_composes_and_lowercase_applies_to_both_sides():
    pairs = [(DECOMPOSED, "The ﬁrst Day")]
    nfc = normalize_pairs(pairs, "NFC", lowercase=False)
    assert nfc == [("Jehová", "The ﬁrst Day")] and len(nfc[0][0]) == 6
    assert normalize_pairs(pairs, "NFKC", lowercase=True) == [("jehová", "the first day")]  # ligature ﬁ → fi
    assert normalize_pairs(pairs, None, lowercase=False) == pairs


def test_drop_duplicates_keeps_first_occurrence_and_counts():
    pairs = [("a", "x"), ("b", "y"), ("a", "x"), ("a", "z"), ("a", "x")]
    assert drop_duplicates(pairs) == ([("a", "x"), ("b", "y"), ("a", "z")], 2)


def test_length_filters_check_both_sides():
    pairs = [("a b", "x y z"), ("a b c d", "x"), ("a", "w x y z"), ("a b c", "x y z")]
    assert drop_longer_than(pairs, 3) == ([("a b", "x y z"), ("a b c", "x y z")], 2)
    assert drop_longer_than(pairs, 4) == (pairs, 0)
    assert drop_shorter_than(pairs, 2) == ([("a b", "x y z"), ("a b c", "x y z")], 2)


def test_ratio_filter_keeps_the_boundary_and_drops_beyond():
    pairs = [("a b", "x y z w"), ("a", "x y z"), ("a b c d e f", "x y")]
    kept, dropped = drop_by_ratio(pairs, 2.0)
    assert kept == [("a b", "x y z w")] and dropped == 2  # ratio exactly 2.0 is kept
    assert drop_by_ratio(pairs, 3.0) == (pairs, 0)


def test_defaults_change_nothing():
    pairs = [(DECOMPOSED, "X"), (DECOMPOSED, "X"), ("a " * 500, "b")]
    splits, counts = preprocess_splits({"train": pairs, "val": pairs}, Preprocess())
    assert splits == {"train": pairs, "val": pairs}
    assert counts == {"normalized": 0, "duplicate": 0, "too_long": 0, "too_short": 0, "ratio": 0}


def test_each_training_filter_is_counted_and_logged(caplog: pytest.LogCaptureFixture):
    pairs = [
        ("one two", "uno dos"),
        ("one two", "uno dos"),  # duplicate
        ("a b c d e f", "x y z w v u"),  # too long (max_words=5)
        ("hi", "hola"),  # too short (min_words=2)
        ("one two three four", "x"),  # too short (1 word) before the ratio filter sees it
        ("one two", "a b c d e"),  # ratio 2.5 > 2
        ("three words here", "tres palabras aquí"),
    ]
    options = Preprocess(dedupe=True, min_words=2, max_words=5, max_ratio=2.0)
    with caplog.at_level(logging.INFO, logger="seq2seq.data.filters"):
        kept, counts = clean_training_pairs(pairs, options)
    assert kept == [("one two", "uno dos"), ("three words here", "tres palabras aquí")]
    assert counts == {"duplicate": 1, "too_long": 1, "too_short": 2, "ratio": 1}
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert messages == [
        "dropped 1 of 7 training pairs that repeat an earlier pair (data.preprocess.dedupe)",
        "dropped 1 of 6 training pairs longer than data.max_words=5 words (never truncated)",
        "dropped 2 of 5 training pairs shorter than data.preprocess.min_words=2 words",
        "dropped 1 of 3 training pairs whose word counts differ by more than data.preprocess.max_ratio=2.0 times",
    ]


def test_a_filter_that_drops_nothing_logs_info_not_warning(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.INFO, logger="seq2seq.data.filters"):
        clean_training_pairs([("a b", "x y")], Preprocess(dedupe=True, max_words=5, max_ratio=3.0))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "no training pairs that repeat an earlier pair" in caplog.text


@pytest.mark.parametrize(
    ("options", "option"),
    [
        (Preprocess(max_words=2), "raise data.max_words"),
        (Preprocess(min_words=4), "lower data.preprocess.min_words"),
        (Preprocess(max_ratio=1.0), "raise data.preprocess.max_ratio"),
    ],
)
def test_nothing_left_after_a_filter_names_the_option_to_relax(options: Preprocess, option: str):
    pairs = [("a b c", "x y z w"), ("a b c", "x")]
    with pytest.raises(DataError, match="no training pairs left after dropping 2") as err:
        clean_training_pairs(pairs, options)
    assert option in str(err.value)


def test_normalisation_applies_to_every_split_filters_only_to_train():
    long = " ".join(["w"] * 10)
    splits = {
        "train": [("Der Hund", "The Dog"), ("der hund", "the dog"), (long, long), ("kurz", "short")],
        "val": [(DECOMPOSED, "X"), (DECOMPOSED, "X"), (long, long)],
        "test": [("Ein Haus", "A House")],
    }
    options = Preprocess(normalize="NFC", lowercase=True, dedupe=True, max_words=5)
    out, counts = preprocess_splits(splits, options)
    assert out["train"] == [("der hund", "the dog"), ("kurz", "short")]
    assert out["val"] == [("jehová", "x"), ("jehová", "x"), (long, long)]  # duplicates and long pairs stay
    assert out["test"] == [("ein haus", "a house")]
    assert counts["normalized"] == 4 and counts["duplicate"] == 1 and counts["too_long"] == 1


def test_from_config_reads_preprocess_and_max_words():
    cfg = OmegaConf.create(
        {"max_words": 60, "preprocess": {"normalize": "NFKC", "dedupe": True, "max_ratio": 2.5}}
    )
    assert Preprocess.from_config(cfg) == Preprocess(
        normalize="NFKC", dedupe=True, max_words=60, max_ratio=2.5
    )
    assert Preprocess.from_config(OmegaConf.create({"max_words": 9})) == Preprocess(max_words=9)


@pytest.mark.parametrize(
    ("preprocess", "message"),
    [
        ({"dedup": True}, r"unknown option\(s\) data\.preprocess\.dedup; known: dedupe, lowercase"),
        ({"normalize": "nfc"}, r"normalize='nfc': choose one of NFC, NFKC, NFD, NFKD or null"),
        ({"min_words": 0}, r"min_words=0: must be >= 1"),
        ({"min_words": 20}, r"data\.max_words=10 is below data\.preprocess\.min_words=20"),
        ({"max_ratio": 0.5}, r"max_ratio=0\.5: must be >= 1"),
    ],
)
def test_bad_options_are_named(preprocess: dict, message: str):
    with pytest.raises(DataError, match=message):
        Preprocess.from_config(OmegaConf.create({"max_words": 10, "preprocess": preprocess}))
