"""The Bible English–Spanish parallel corpus: KJV and Reina-Valera 1909, verse by verse, split by chapter.

Both texts are public-domain SWORD modules packaged by Debian (``sword-text-kjv``: module
``engKJV2006eb``; ``sword-text-sparv``: module ``spaRV1909eb``), read with ``pysword``. Every verse
is one sentence pair: English source, Spanish target.

Each verse is OSIS markup with Strong's numbers on the words (``<w lemma="strong:H0430">God</w>``).
``osis_to_text`` keeps the words and drops the markup and the footnotes; psalm superscriptions and
the postscripts of the epistles are kept, because the Spanish text has them inside the verse too.

Both modules claim KJV versification, but the Spanish one follows the Hebrew numbering in about a
dozen chapters (Numbers 13, Job 39–40, Jonah 2, ...): there, verse ``n`` of one text holds verse
``n ± 1`` of the other, and a verse the Spanish merged into its neighbour is empty. The Strong's
numbers give both texts a common vocabulary, the Hebrew and Greek words behind them, so
``find_misaligned`` spots these pairs: a verse whose Strong's numbers match a nearby verse of the
other text clearly better than its own partner's is dropped.

Splits are by whole chapter (no chapter has verses in two splits), so test verses never sit next to
their own context in training.
"""

from __future__ import annotations

import functools
import json
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from seq2seq.data.errors import DataError
from seq2seq.data.lengths import bucket_bounds

EN_MODULE = "engKJV2006eb"  # King James Version (1769 text), Debian package sword-text-kjv
ES_MODULE = "spaRV1909eb"  # Reina-Valera 1909, Debian package sword-text-sparv
DEBIAN_PACKAGES: dict[str, str] = {EN_MODULE: "sword-text-kjv", ES_MODULE: "sword-text-sparv"}
DEFAULT_SWORD_PATH = "/usr/share/sword"

SPLITS: tuple[str, ...] = ("train", "val", "test")
LANGUAGES: tuple[str, ...] = ("en", "es")
LENGTH_EDGES: tuple[int, ...] = (1, 11, 21, 31, 41, 51, 61, 71, 81, 91)  # buckets 1-10, ..., 81-90, 91+
DROP_REASONS: tuple[str, ...] = ("missing_en", "missing_es", "empty_en", "empty_es", "misaligned")

# Bump when the text a module yields changes (cleaning, alignment), so old corpora are rebuilt.
CORPUS_FORMAT = 1
MISALIGN_WINDOW = 6  # verses either side searched for a better Strong's match
MISALIGN_MARGIN = 0.1  # Jaccard points a neighbour must beat the own partner by

VerseRef = tuple[str, int, int]  # (OSIS book name, chapter, verse), e.g. ("Gen", 1, 1)


@dataclass(frozen=True)
class VersePair:
    """One aligned verse: English source ``en``, Spanish target ``es``."""

    book: str
    chapter: int
    verse: int
    en: str
    es: str

    @property
    def ref(self) -> str:
        """``"Gen 1:1"``."""
        return f"{self.book} {self.chapter}:{self.verse}"


# ---------------------------------------------------------------------------------------------
# OSIS markup → text


_NOTE = re.compile(r"<note\b[^>]*>.*?</note>|<note\b[^>]*/>", re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_USFM_MARKER = re.compile(r"\\\+?[a-z]+\d*\*?")  # left over from the USFM source, e.g. `the \nd LORD`
# The end of a word-level element directly followed by the start of another: `a</w><transChange>b`.
_JUNCTION = re.compile(r"(\w*)</(w|transChange)>(?=<(?:w|transChange)\b[^>]*>(\w*))")
# A Spanish object pronoun the translators added after a verb (`sáca</w><transChange>lo` = "sácalo").
_CLITICS = frozenset({"lo", "la", "los", "las", "le", "les", "me", "te", "se", "nos", "os"})
# Words a pronoun never attaches to: after these, `</w><transChange>la` is a new word ("de la").
_NON_HOSTS = frozenset({"de", "que", "y", "no", "como", "os"})
_STRONGS = re.compile(r"\b([HG])0*(\d+)")
_LEMMA = re.compile(r'lemma="([^"]*)"')


def _junction(match: re.Match) -> str:
    left, tag, right = match.group(1), match.group(2), match.group(3)
    joined = tag == "w" and right.lower() in _CLITICS and left != "" and left.lower() not in _NON_HOSTS
    return left if joined else left + " "


def normalize_text(text: str) -> str:
    """Unicode NFC and single spaces, stripped."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def osis_to_text(osis: str) -> str:
    """The words of one OSIS verse: footnotes (``<note>``), paragraph marks (¶) and stray USFM markers
    (``\\nd``) dropped, tags removed.

    Word-level elements (``<w>``, ``<transChange>``) that touch each other are separate words, except
    a Spanish object pronoun glued to the verb before it (``sáca`` + ``lo`` → ``sácalo``).
    """
    text = _NOTE.sub("", osis)
    text = _JUNCTION.sub(_junction, text)
    text = _USFM_MARKER.sub(" ", _TAG.sub("", text)).replace("¶", " ")
    return normalize_text(text)


def strongs_numbers(osis: str) -> frozenset[str]:
    """The Strong's numbers of a verse's words, zero padding removed: ``{"H430", "G2424"}``."""
    lemmas = " ".join(_LEMMA.findall(_NOTE.sub("", osis)))
    return frozenset(f"{letter}{number}" for letter, number in _STRONGS.findall(lemmas))


# ---------------------------------------------------------------------------------------------
# Reading the SWORD modules


def _open_bible(module_name: str, sword_path: str):
    """The pysword bible for ``module_name``; DataError naming what to install when it cannot."""
    try:
        from pysword.modules import SwordModules
    except ImportError:
        raise DataError("pysword is not installed; run `.venv/bin/pip install pysword`") from None
    if not (Path(sword_path) / "mods.d").is_dir():
        raise DataError(f"{sword_path}: no SWORD library here (no mods.d/); {_install_hint(module_name)}")
    modules = SwordModules(sword_path)
    found = modules.parse_modules()
    if module_name not in found:
        raise DataError(
            f"{sword_path}: SWORD module {module_name} not found (have: {', '.join(sorted(found)) or 'none'}); "
            f"{_install_hint(module_name)}"
        )
    bible = modules.get_bible_from_module(module_name)
    # Modules with BlockType=BOOK store a whole book per compressed block and pysword inflates it again
    # for every verse; remembering the last blocks makes reading the Bible ~300x faster (0.3 s, not 100 s).
    if hasattr(bible, "_decompressed_text"):
        bible._decompressed_text = functools.lru_cache(maxsize=4)(bible._decompressed_text)
    return bible, found[module_name]


def _install_hint(module_name: str) -> str:
    package = DEBIAN_PACKAGES.get(module_name)
    if package is None:
        return f"install module {module_name} into the SWORD library (option --sword-path)"
    return f"install it with `sudo apt-get install -y {package}` (SWORD library {DEFAULT_SWORD_PATH})"


def module_info(module_name: str, sword_path: str) -> dict[str, str]:
    """Description, version and licence of a module, from its ``mods.d/*.conf``."""
    _, conf = _open_bible(module_name, sword_path)
    keys = ("description", "version", "distributionlicense", "lang")
    return {key: conf[key] for key in keys if key in conf}


def list_books(module_name: str, sword_path: str = DEFAULT_SWORD_PATH) -> list[str]:
    """The OSIS names of the module's books in canonical order (``["Gen", "Exod", ..., "Rev"]``)."""
    bible, _ = _open_bible(module_name, sword_path)
    return [book.osis_name for testament in bible.get_structure().get_books().values() for book in testament]


def read_osis(
    module_name: str,
    sword_path: str,
    books: Sequence[str] | None = None,
    on_book: Callable[[str], None] | None = None,
) -> dict[VerseRef, str]:
    """Every verse of a module as raw OSIS markup, in canonical order (Genesis 1:1 first).

    ``books`` restricts reading to these OSIS book names (``["Jonah"]``); ``on_book(name)`` is called
    after each book (for a progress bar). Verses the module lacks are empty strings.
    """
    bible, _ = _open_bible(module_name, sword_path)
    structure = [book for testament in bible.get_structure().get_books().values() for book in testament]
    known = {book.osis_name for book in structure}
    unknown = sorted(set(books or ()) - known)
    if unknown:
        raise DataError(f"unknown OSIS book name(s) {unknown}; known: {', '.join(sorted(known))}")
    verses: dict[VerseRef, str] = {}
    for book in structure:
        if books is not None and book.osis_name not in books:
            continue
        for chapter, n_verses in enumerate(book.chapter_lengths, start=1):
            for verse in range(1, n_verses + 1):
                text = bible.get(books=book.name, chapters=chapter, verses=verse, clean=False)
                verses[(book.osis_name, chapter, verse)] = text
        if on_book is not None:
            on_book(book.osis_name)
    return verses


def read_verses(
    module_name: str,
    sword_path: str = DEFAULT_SWORD_PATH,
    books: Sequence[str] | None = None,
    on_book: Callable[[str], None] | None = None,
) -> dict[VerseRef, str]:
    """Every verse of a module as clean text (``osis_to_text``), keyed ``(book, chapter, verse)``."""
    return {
        ref: osis_to_text(osis) for ref, osis in read_osis(module_name, sword_path, books, on_book).items()
    }


# ---------------------------------------------------------------------------------------------
# Alignment


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    union = a | b
    return len(a & b) / len(union) if union else 0.0


def find_misaligned(
    en_strongs: Mapping[VerseRef, frozenset[str]],
    es_strongs: Mapping[VerseRef, frozenset[str]],
    window: int = MISALIGN_WINDOW,
    margin: float = MISALIGN_MARGIN,
) -> set[VerseRef]:
    """Verses whose partner is not their translation, judged by the Strong's numbers both texts carry.

    With verses in canonical order (the order of ``en_strongs``) and J the Jaccard overlap of two
    Strong's sets, verse i is misaligned when, for some 0 < |d| <= ``window``,
    ``max(J(en_i, es_i+d), J(en_i+d, es_i)) >= J(en_i, es_i) + margin``: a neighbour of the other
    text matches clearly better than its own partner (a shifted or merged verse). A verse without
    Strong's numbers on either side cannot be judged and is never flagged.
    """
    refs = [ref for ref in en_strongs if ref in es_strongs]
    en = [en_strongs[ref] for ref in refs]
    es = [es_strongs[ref] for ref in refs]
    misaligned = set()
    for i, ref in enumerate(refs):
        if not en[i] or not es[i]:
            continue
        own = _jaccard(en[i], es[i])
        for j in range(max(0, i - window), min(len(refs), i + window + 1)):
            if j != i and max(_jaccard(en[i], es[j]), _jaccard(en[j], es[i])) >= own + margin:
                misaligned.add(ref)
                break
    return misaligned


def align_verses(
    en: Mapping[VerseRef, str],
    es: Mapping[VerseRef, str],
    misaligned: Iterable[VerseRef] = (),
) -> tuple[list[VersePair], dict[str, int]]:
    """Pairs of the verses present and non-empty on both sides (after ``normalize_text``), in ``en`` order.

    Returns (pairs, dropped) where ``dropped`` counts each dropped verse under exactly one reason, the
    first that applies: ``missing_en`` / ``missing_es`` (the verse is absent from that side),
    ``empty_en`` / ``empty_es`` (blank after normalisation), ``misaligned`` (listed in ``misaligned``).
    """
    misaligned = set(misaligned)
    dropped = dict.fromkeys(DROP_REASONS, 0)
    dropped["missing_en"] = sum(ref not in en for ref in es)
    pairs = []
    for ref, en_raw in en.items():
        if ref not in es:
            dropped["missing_es"] += 1
            continue
        en_text, es_text = normalize_text(en_raw), normalize_text(es[ref])
        reason = (
            "empty_en"
            if not en_text
            else "empty_es"
            if not es_text
            else "misaligned"
            if ref in misaligned
            else None
        )
        if reason:
            dropped[reason] += 1
        else:
            pairs.append(VersePair(*ref, en=en_text, es=es_text))
    return pairs, dropped


# ---------------------------------------------------------------------------------------------
# Splits, statistics, files


def split_by_chapter(
    pairs: Sequence[VersePair], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[VersePair]]:
    """Deterministic train/val/test split by whole chapters.

    Chapters are shuffled with ``random.Random(seed)``; whole chapters go to test until it holds
    ``round(test_fraction * len(pairs))`` verses or more, then to val likewise, the rest to train.
    Within a split, verses keep the order of ``pairs``.
    """
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise DataError(f"--{name.replace('_', '-')}={fraction}: must be in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise DataError(
            f"--val-fraction={val_fraction} + --test-fraction={test_fraction} >= 1 leaves nothing to train on"
        )
    sizes = Counter((pair.book, pair.chapter) for pair in pairs)
    chapters = list(sizes)  # first-seen order, so the shuffle depends only on the data and the seed
    random.Random(seed).shuffle(chapters)
    targets = {"test": round(test_fraction * len(pairs)), "val": round(val_fraction * len(pairs))}
    filled = {"test": 0, "val": 0}
    split_of = {}
    for chapter in chapters:
        split = next((s for s in ("test", "val") if filled[s] < targets[s]), "train")
        split_of[chapter] = split
        if split != "train":
            filled[split] += sizes[chapter]
    splits: dict[str, list[VersePair]] = {split: [] for split in SPLITS}
    for pair in pairs:
        splits[split_of[(pair.book, pair.chapter)]].append(pair)
    return splits


def length_histogram(lengths: Iterable[int], edges: Sequence[int] = LENGTH_EDGES) -> dict[str, int]:
    """Counts per length bucket, ``{"1-10": n, "11-20": n, ..., "91+": n}`` (every bucket present)."""
    bounds = bucket_bounds(edges)
    histogram = {label: 0 for label, _, _ in bounds}
    for length in lengths:
        for label, low, high in bounds:
            if low <= length and (high is None or length <= high):
                histogram[label] += 1
                break
    return histogram


def corpus_stats(splits: Mapping[str, Sequence[VersePair]]) -> dict[str, dict]:
    """Per split: pairs, chapters, source (en) and target (es) words, and the source-length histogram.

    Words are whitespace tokens, as in the length buckets of ``results.json``.
    """
    stats = {}
    for split, pairs in splits.items():
        source_lengths = [len(pair.en.split()) for pair in pairs]
        stats[split] = {
            "pairs": len(pairs),
            "chapters": len({(pair.book, pair.chapter) for pair in pairs}),
            "source_words": sum(source_lengths),
            "target_words": sum(len(pair.es.split()) for pair in pairs),
            "max_source_words": max(source_lengths, default=0),
            "source_length_histogram": length_histogram(source_lengths),
        }
    return stats


def corpus_files(out_dir: str | Path) -> list[Path]:
    """The files ``write_corpus`` writes: ``{train,val,test}.{en,es,ref}`` and ``stats.json``."""
    out_dir = Path(out_dir)
    names = [f"{split}.{suffix}" for split in SPLITS for suffix in (*LANGUAGES, "ref")]
    return [out_dir / name for name in names] + [out_dir / "stats.json"]


def write_corpus(
    splits: Mapping[str, Sequence[VersePair]], out_dir: str | Path, metadata: Mapping | None = None
) -> dict:
    """Write ``{split}.en``, ``{split}.es`` (one verse per line, line-aligned), ``{split}.ref``
    (``Gen 1:1``) and ``stats.json`` = ``metadata`` + ``{"splits": corpus_stats(splits)}``.

    stats.json is written last, so a corpus with a stats.json is complete. Returns its content.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        pairs = splits.get(split, [])
        columns = {"en": [p.en for p in pairs], "es": [p.es for p in pairs], "ref": [p.ref for p in pairs]}
        for suffix, lines in columns.items():
            if any("\n" in line for line in lines):
                raise DataError(f"{split}.{suffix}: a line contains a newline; normalise the text first")
            (out_dir / f"{split}.{suffix}").write_text(
                "".join(f"{line}\n" for line in lines), encoding="utf-8"
            )
    stats = {**(metadata or {}), "splits": corpus_stats(splits)}
    (out_dir / "stats.json").write_text(
        json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return stats


def corpus_is_current(out_dir: str | Path, settings: Mapping) -> bool:
    """True when ``out_dir`` holds every corpus file and its stats.json was built with ``settings``."""
    files = corpus_files(out_dir)
    if not all(path.is_file() for path in files):
        return False
    try:
        stats = json.loads(files[-1].read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(stats, dict) and stats.get("settings") == dict(settings)
