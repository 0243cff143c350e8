"""Tests for seq2seq.data.datamodule with the data configs of conf/data/: reading, preprocessing, errors."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from seq2seq.data import standard_sets
from seq2seq.data.datamodule import Seq2SeqDataModule
from seq2seq.data.errors import DataError
from seq2seq.train import train
from tests.conftest import TINY, compose_train

WORD_TOKENIZER = ("data.tokenizer.model_type=word", "data.tokenizer.vocab_size=100")

TRAIN = {
    "de": [
        "Der Hund läuft",
        "Der Hund läuft",
        "Die Katze schläft heute",
        "Ein sehr sehr langer Satz hier",
        "Ja",
    ],
    "en": ["The dog runs", "The dog runs", "The cat sleeps today", "A very very long sentence here", "Yes"],
}
EVAL = {
    "de": ["Der Hund läuft", "Der Hund läuft", "Ein Haus"],
    "en": ["The dog runs", "The dog runs", "A House"],
}


def write_corpus(directory: Path, src: str = "de", tgt: str = "en") -> Path:
    """{train,val,test}.{src,tgt} from TRAIN and EVAL; returns ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, texts in (("train", TRAIN), ("val", EVAL), ("test", EVAL)):
        for lang, side in ((src, "de"), (tgt, "en")):
            (directory / f"{split}.{lang}").write_text("\n".join(texts[side]) + "\n", encoding="utf-8")
    return directory


def setup_module_for(tmp_path: Path, *overrides: str) -> Seq2SeqDataModule:
    cfg = compose_train(tmp_path, *overrides)
    datamodule = Seq2SeqDataModule(cfg.data, tmp_path / "cache", seed=0)
    datamodule.setup()
    return datamodule


def test_parallel_text_filters_train_and_normalises_every_split(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    dm = setup_module_for(
        tmp_path,
        "data=parallel_text",
        f"data.dir={corpus}",
        "data.src_lang=de",
        "data.tgt_lang=en",
        "data.max_words=4",
        "data.preprocess.lowercase=true",
        "data.preprocess.max_ratio=2.0",
        *WORD_TOKENIZER,
    )
    assert dm.raw["train"] == [
        ("der hund läuft", "the dog runs"),
        ("die katze schläft heute", "the cat sleeps today"),
        ("ja", "yes"),
    ]
    val = [("der hund läuft", "the dog runs"), ("der hund läuft", "the dog runs"), ("ein haus", "a house")]
    assert dm.raw["val"] == val  # normalised, but not deduplicated
    assert dm.filter_counts == {"normalized": 11, "duplicate": 1, "too_long": 1, "too_short": 0, "ratio": 0}
    assert [len(dm.datasets[split]) for split in ("train", "val", "test")] == [3, 3, 3]
    assert dm.src_tokenizer.decode(dm.datasets["train"][0].src) == "der hund läuft"


def test_tsv_format_reads_one_file_per_split(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("train", "val", "test"):
        (corpus / f"{split}.tsv").write_text("ein Haus\ta house\nzwei Hunde\ttwo dogs\n", encoding="utf-8")
    dm = setup_module_for(
        tmp_path, "data=parallel_text", f"data.dir={corpus}", "data.format=tsv", *WORD_TOKENIZER
    )
    assert dm.raw["test"] == [("ein Haus", "a house"), ("zwei Hunde", "two dogs")]


def test_synthetic_data_is_not_deduplicated(tmp_path):
    dm = setup_module_for(
        tmp_path, "data=copy", "data.symbols=2", "data.min_len=1", "data.max_len=8", "data.sizes.train=60",
        "data.sizes.val=5", "data.sizes.test=5",
    )  # fmt: skip
    assert len(dm.raw["train"]) == 60 > len(set(dm.raw["train"]))  # repeats of short sentences are kept
    assert dm.filter_counts["duplicate"] == 0 and dm.filter_counts["normalized"] == 0


def test_nothing_left_after_filtering_raises_before_training(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    with pytest.raises(
        DataError, match=r"no training pairs left after dropping 5 shorter than .*min_words=7"
    ):
        setup_module_for(
            tmp_path, "data=parallel_text", f"data.dir={corpus}", "data.src_lang=de", "data.tgt_lang=en",
            "data.preprocess.min_words=7", "data.preprocess.dedupe=false",
        )  # fmt: skip


def test_bad_input_errors_name_file_and_line(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    (corpus / "val.en").write_bytes("The dog runs\nThe dog r\xfcns\nA house\n".encode("latin-1"))
    overrides = ("data=parallel_text", f"data.dir={corpus}", "data.src_lang=de", "data.tgt_lang=en")
    with pytest.raises(DataError, match=r"val\.en:2: not valid UTF-8"):
        setup_module_for(tmp_path, *overrides)
    (corpus / "val.en").write_text("The dog runs\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"val\.de has 3 lines but .*val\.en has 1"):
        setup_module_for(tmp_path, *overrides)


@pytest.mark.parametrize(
    ("name", "src", "tgt", "lowercase"),
    [
        ("bible_en_es", "en", "es", False),
        ("multi30k_de_en", "de", "en", False),
        ("iwslt14_de_en", "de", "en", True),
    ],
)
def test_built_in_corpora_read_a_local_copy_without_building_or_fetching(
    tmp_path, monkeypatch, name, src, tgt, lowercase
):
    monkeypatch.setattr(standard_sets, "PREPARE_BIBLE", tmp_path / "absent.py")  # a build attempt would fail
    monkeypatch.setitem(sys.modules, "datasets", None)  # so would a fetch
    corpus = write_corpus(tmp_path / name, src, tgt)
    for extra in ("train.ref", "val.ref", "test.ref", "stats.json"):  # the Bible corpus's other files
        (corpus / extra).write_text("\n")
    dm = setup_module_for(tmp_path, f"data={name}", f"data.dir={corpus}", *WORD_TOKENIZER)
    expected = ("ein haus", "a house") if lowercase else ("Ein Haus", "A House")
    assert dm.raw["test"][-1] == expected


def test_experiment_bible_en_es_composes_data_model_and_budget(tmp_path):
    cfg = compose_train(tmp_path, "experiment=bible_en_es")
    assert (cfg.data.name, cfg.data.source, cfg.data.src_lang, cfg.data.tgt_lang) == (
        "bible_en_es",
        "bible",
        "en",
        "es",
    )
    assert Path(cfg.data.files.train.src) == Path(cfg.paths.data_dir) / "bible" / "train.en"
    assert dict(cfg.data.tokenizer) == {"model_type": "unigram", "vocab_size": 4000}
    assert (cfg.model.hidden_size, cfg.model.embedding_size) == (256, 256)
    assert cfg.trainer.max_time is not None and cfg.trainer.max_epochs > 1
    assert cfg.eval.length_buckets[-1] > 51  # the long verses get their own bucket
    override = compose_train(
        tmp_path, "experiment=bible_en_es", "model/attention=none", "model.hidden_size=64"
    )
    assert override.model.hidden_size == 64 and override.data.name == "bible_en_es"


def test_training_on_a_tsv_corpus_scores_against_normalised_references(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = [f"Satz {i} Ende\tSentence {i} End" for i in range(12)]
    for split in ("train", "val", "test"):
        (corpus / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tiny_model = [o for o in TINY if not o.startswith("data")]
    cfg = compose_train(
        tmp_path, *tiny_model, "data=parallel_text", f"data.dir={corpus}", "data.format=tsv",
        "data.preprocess.lowercase=true", "data.batch.max_tokens=120", *WORD_TOKENIZER,
    )  # fmt: skip
    results = train(cfg)
    assert results["status"] == "completed" and results["choices"]["data"] == "parallel_text"
    with (tmp_path / "run" / "predictions" / "test.tsv").open(encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))[1:]
    assert [row[:2] for row in rows] == [[f"satz {i} ende", f"sentence {i} end"] for i in range(12)]


def test_reverse_source_reverses_encoder_input_only(tmp_path):
    """data.reverse_source (Sutskever et al. 2014) feeds the source backwards; raw text and targets are untouched."""
    plain = setup_module_for(tmp_path / "plain", *TINY)
    flipped = setup_module_for(tmp_path / "flipped", *TINY, "data.reverse_source=true")
    assert flipped.raw == plain.raw  # references, sources and length buckets refer to the original order
    for split in ("train", "val", "test"):
        for a, b in zip(plain.datasets[split].examples, flipped.datasets[split].examples, strict=True):
            assert b.src == a.src[::-1] and b.tgt == a.tgt
    assert any(len(e.src) > 1 and e.src != e.src[::-1] for e in plain.datasets["test"].examples)
