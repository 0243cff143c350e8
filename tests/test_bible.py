"""Tests of seq2seq.data.bible on small synthetic verse dicts; one test reads the real Debian modules if present."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from seq2seq.data import bible
from seq2seq.data.bible import VersePair
from seq2seq.data.errors import DataError


def make_pairs(chapter_sizes: dict[tuple[str, int], int], words: int = 3) -> list[VersePair]:
    """Verse pairs for the given {(book, chapter): n_verses}, each with ``words`` source words."""
    return [
        VersePair(book, chapter, verse, " ".join([f"w{verse}"] * words), f"es {book} {chapter} {verse}")
        for (book, chapter), n in chapter_sizes.items()
        for verse in range(1, n + 1)
    ]


def chapter_set(pairs: list[VersePair]) -> set[tuple[str, int]]:
    return {(p.book, p.chapter) for p in pairs}


# --- OSIS cleaning ---------------------------------------------------------------------------


def test_osis_to_text_drops_markup_and_notes_keeps_titles():
    osis = (
        '<title canonical="true" type="psalm">A <w lemma="strong:H4210">Psalm</w>.</title> <l level="1"/>'
        '¶ Thou <transChange type="added">art</transChange> the <divineName><w lemma="strong:H3068">LORD</w>'
        '</divineName>’s.<note placement="foot"><reference>3.1 </reference>or, Lord</note> \\nd <lb/>'
    )
    assert bible.osis_to_text(osis) == "A Psalm. Thou art the LORD’s."


def test_osis_to_text_separates_touching_words_but_glues_clitics():
    added = '<transChange type="added">'
    osis = (
        f'<w lemma="strong:H3205">engendró</w>{added}un</transChange><w lemma="strong:H1">hijo</w>; '
        f'<w lemma="strong:H3318">sáca</w>{added}lo</transChange>, <w lemma="strong:H1">de</w>{added}la</transChange>'
    )
    assert bible.osis_to_text(osis) == "engendró un hijo; sácalo, de la"


def test_normalize_text_is_nfc_with_single_spaces():
    decomposed = "  Jehova\u0301 \t dijo\n "
    assert bible.normalize_text(decomposed) == "Jehová dijo"
    assert unicodedata.is_normalized("NFC", bible.normalize_text(decomposed))


def test_strongs_numbers_strip_padding_and_ignore_notes():
    osis = (
        '<w lemma="strong:H0430">God</w> <w lemma="strong:G2424 G5547">Jesucristo</w>'
        '<note><w lemma="strong:H9999">x</w></note>'
    )
    assert bible.strongs_numbers(osis) == {"H430", "G2424", "G5547"}


# --- alignment -------------------------------------------------------------------------------


def test_align_verses_counts_every_drop_reason_once():
    en = {("Gen", 1, 1): "In the beginning", ("Gen", 1, 2): "  ", ("Gen", 1, 3): "light", ("Gen", 1, 4): "x"}
    en |= {("Gen", 1, 5): "day", ("Gen", 1, 6): "firmament"}
    es = {("Gen", 1, 1): "En el principio", ("Gen", 1, 2): "y", ("Gen", 1, 3): "", ("Gen", 1, 5): "día"}
    es |= {("Gen", 1, 6): "expansión", ("Gen", 1, 7): "extra"}
    pairs, dropped = bible.align_verses(en, es, misaligned=[("Gen", 1, 6)])
    assert [(p.book, p.chapter, p.verse) for p in pairs] == [("Gen", 1, 1), ("Gen", 1, 5)]
    assert pairs[0].en == "In the beginning" and pairs[0].es == "En el principio"
    assert dropped == {"missing_en": 1, "missing_es": 1, "empty_en": 1, "empty_es": 1, "misaligned": 1}
    assert len(pairs) + sum(dropped.values()) == len(set(en) | set(es))


def test_find_misaligned_flags_a_shifted_run_and_keeps_aligned_verses():
    lemmas = [frozenset({f"H{10 * i + k}" for k in range(4)}) for i in range(12)]
    refs = [("Num", 12 + i // 6, i % 6 + 1) for i in range(12)]
    en = dict(zip(refs, lemmas, strict=True))
    # Spanish shifted by one verse from the 8th on (numbering of another tradition), last verse merged.
    es = {ref: lemmas[i] if i < 7 else lemmas[i - 1] for i, ref in enumerate(refs)}
    es[refs[7]] = lemmas[6] | lemmas[7]  # verse 8 holds verses 7 and 8 of the English
    misaligned = bible.find_misaligned(en, es)
    assert set(refs[8:]) <= misaligned
    assert not misaligned & set(refs[:6])


def test_find_misaligned_never_flags_verses_without_strongs_numbers():
    en = {
        ("Luke", 17, 35): frozenset({"G1"}),
        ("Luke", 17, 36): frozenset(),
        ("Luke", 17, 37): frozenset({"G3"}),
    }
    es = {
        ("Luke", 17, 35): frozenset({"G1"}),
        ("Luke", 17, 36): frozenset({"G1"}),
        ("Luke", 17, 37): frozenset({"G3"}),
    }
    assert bible.find_misaligned(en, es) == set()


# --- splits ----------------------------------------------------------------------------------

SIZES = {("Gen", c): 5 + c % 7 for c in range(1, 41)} | {("Matt", c): 3 + c % 5 for c in range(1, 21)}


def test_split_is_deterministic_and_seed_dependent():
    pairs = make_pairs(SIZES)
    first = bible.split_by_chapter(pairs, 0.1, 0.1, seed=7)
    assert first == bible.split_by_chapter(list(pairs), 0.1, 0.1, seed=7)
    other = bible.split_by_chapter(pairs, 0.1, 0.1, seed=8)
    assert chapter_set(other["test"]) != chapter_set(first["test"])


def test_split_keeps_whole_chapters_in_one_split_and_loses_nothing():
    pairs = make_pairs(SIZES)
    splits = bible.split_by_chapter(pairs, 0.15, 0.1, seed=0)
    chapters = {name: chapter_set(split) for name, split in splits.items()}
    assert not chapters["train"] & chapters["val"]
    assert not chapters["train"] & chapters["test"]
    assert not chapters["val"] & chapters["test"]
    assert sum(len(s) for s in splits.values()) == len(pairs)
    assert set().union(*splits.values()) == set(pairs)
    for name, split in splits.items():  # whole chapters: every verse of a chapter went with it
        assert len(split) == sum(SIZES[chapter] for chapter in chapters[name])
        assert split == [p for p in pairs if (p.book, p.chapter) in chapters[name]]  # canonical order kept


def test_split_sizes_follow_the_fractions_to_within_a_chapter():
    pairs = make_pairs(SIZES)
    splits = bible.split_by_chapter(pairs, 0.2, 0.1, seed=3)
    largest = max(SIZES.values())
    assert 0.1 * len(pairs) <= len(splits["test"]) < 0.1 * len(pairs) + largest
    assert 0.2 * len(pairs) <= len(splits["val"]) < 0.2 * len(pairs) + largest
    assert bible.split_by_chapter(pairs, 0.0, 0.0, seed=3)["train"] == pairs


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.1), (0.1, 1.0), (0.5, 0.5)])
def test_split_rejects_bad_fractions(val, test):
    with pytest.raises(DataError, match="fraction"):
        bible.split_by_chapter(make_pairs({("Gen", 1): 3}), val, test, seed=0)


# --- statistics and files --------------------------------------------------------------------


def test_corpus_stats_counts_words_and_buckets():
    pairs = [
        VersePair("Gen", 1, 1, "one two", "uno dos tres"),
        VersePair("Gen", 1, 2, " ".join(["w"] * 10), "x"),
        VersePair("Gen", 2, 1, " ".join(["w"] * 11), "y z"),
        VersePair("Gen", 3, 1, " ".join(["w"] * 95), "z"),
    ]
    stats = bible.corpus_stats({"train": pairs, "test": []})
    train = stats["train"]
    assert (train["pairs"], train["chapters"], train["source_words"], train["target_words"]) == (4, 3, 118, 7)
    assert train["max_source_words"] == 95
    histogram = train["source_length_histogram"]
    assert list(histogram) == [
        "1-10",
        "11-20",
        "21-30",
        "31-40",
        "41-50",
        "51-60",
        "61-70",
        "71-80",
        "81-90",
        "91+",
    ]
    assert (histogram["1-10"], histogram["11-20"], histogram["91+"]) == (2, 1, 1)
    assert sum(histogram.values()) == train["pairs"]
    assert stats["test"]["pairs"] == 0 and sum(stats["test"]["source_length_histogram"].values()) == 0


def test_write_corpus_writes_line_aligned_files_and_stats(tmp_path: Path):
    pairs = make_pairs(SIZES)
    splits = bible.split_by_chapter(pairs, 0.1, 0.1, seed=1)
    settings = {"seed": 1, "val_fraction": 0.1}
    stats = bible.write_corpus(splits, tmp_path, {"settings": settings, "dropped": {"empty_es": 2}})
    for split, split_pairs in splits.items():
        en = (tmp_path / f"{split}.en").read_text(encoding="utf-8").splitlines()
        es = (tmp_path / f"{split}.es").read_text(encoding="utf-8").splitlines()
        refs = (tmp_path / f"{split}.ref").read_text(encoding="utf-8").splitlines()
        assert len(en) == len(es) == len(refs) == len(split_pairs)
        for line_en, line_es, ref, pair in zip(en, es, refs, split_pairs, strict=True):
            assert (line_en, line_es, ref) == (pair.en, pair.es, f"{pair.book} {pair.chapter}:{pair.verse}")
    on_disk = json.loads((tmp_path / "stats.json").read_text(encoding="utf-8"))
    assert on_disk == stats
    assert on_disk["dropped"] == {"empty_es": 2}
    assert on_disk["splits"]["val"]["pairs"] == len(splits["val"])
    assert bible.corpus_is_current(tmp_path, settings)
    assert not bible.corpus_is_current(tmp_path, {**settings, "seed": 2})
    (tmp_path / "test.es").unlink()
    assert not bible.corpus_is_current(tmp_path, settings)


def test_write_corpus_rejects_a_line_break_inside_a_verse(tmp_path: Path):
    with pytest.raises(DataError, match="newline"):
        bible.write_corpus({"train": [VersePair("Gen", 1, 1, "a\nb", "c")]}, tmp_path)


# --- the real Debian modules (skipped when they are not installed) ----------------------------

HAVE_MODULES = all(
    (Path(bible.DEFAULT_SWORD_PATH) / "mods.d" / f"{module}.conf").is_file()
    for module in bible.DEBIAN_PACKAGES
)


@pytest.mark.skipif(not HAVE_MODULES, reason=f"SWORD modules not installed in {bible.DEFAULT_SWORD_PATH}")
def test_real_modules_read_clean_aligned_jonah():
    pytest.importorskip("pysword")
    en = bible.read_verses(bible.EN_MODULE, bible.DEFAULT_SWORD_PATH, books=["Jonah"])
    es = bible.read_verses(bible.ES_MODULE, bible.DEFAULT_SWORD_PATH, books=["Jonah"])
    assert len(en) == len(es) == 48  # KJV versification: 17 + 10 + 10 + 11 verses
    assert en[("Jonah", 1, 1)].startswith("Now the word of the LORD came unto Jonah")
    assert "Jehová" in es[("Jonah", 1, 1)] and "Jonás" in es[("Jonah", 1, 1)]  # accents decoded
    assert not any(ch in text for text in [*en.values(), *es.values()] for ch in "<>¶\\")
    en_osis = bible.read_osis(bible.EN_MODULE, bible.DEFAULT_SWORD_PATH, books=["Jonah"])
    es_osis = bible.read_osis(bible.ES_MODULE, bible.DEFAULT_SWORD_PATH, books=["Jonah"])
    misaligned = bible.find_misaligned(
        {ref: bible.strongs_numbers(v) for ref, v in en_osis.items()},
        {ref: bible.strongs_numbers(v) for ref, v in es_osis.items()},
    )
    # The Spanish numbers Jonah 2 as the Hebrew does (KJV 1:17 is its 2:1): chapter 2 is shifted.
    assert ("Jonah", 2, 2) in misaligned and ("Jonah", 3, 1) not in misaligned
    pairs, dropped = bible.align_verses(en, es, misaligned)
    assert dropped["empty_es"] == 1  # 1:17, merged into the Spanish 2:1
    assert all(pair.en and pair.es for pair in pairs)
