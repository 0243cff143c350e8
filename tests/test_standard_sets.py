"""Tests for seq2seq.data.standard_sets: local copies, fetching with (a stand-in for) Hugging Face ``datasets``,
clear errors when offline, and building the Bible corpus when it is missing. Nothing is downloaded."""

from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path

import pytest

from seq2seq.data import bible, standard_sets
from seq2seq.data.errors import DataError
from seq2seq.data.parallel import read_split
from seq2seq.data.standard_sets import corpus_paths, ensure_corpus
from tests.conftest import ROOT, compose_train

SPLITS = ("train", "val", "test")


def data_cfg(tmp_path: Path, name: str, *overrides: str):
    """The ``data`` node of ``data=<name>`` with its directory in ``tmp_path/corpus``."""
    return compose_train(tmp_path, f"data={name}", f"data.dir={tmp_path / 'corpus'}", *overrides).data


class FakeDatasets(types.ModuleType):
    """Stands in for the ``datasets`` package: ``load_dataset`` returns the rows given per hub split."""

    def __init__(self, rows: dict[str, list[dict]] | None = None, error: Exception | None = None) -> None:
        super().__init__("datasets")
        self.rows, self.error, self.calls = rows or {}, error, []

    def load_dataset(self, path, name=None, split=None, revision=None):
        self.calls.append((path, name, split, revision))
        if self.error is not None:
            raise self.error
        return self.rows[split]


MULTI30K_ROWS = {
    "train": [{"de": "Ein Hund läuft.", "en": "A dog runs."}, {"de": "Zwei\nZeilen", "en": "Two lines"}],
    "validation": [{"de": "Eine Katze.", "en": "A cat."}],
    "test": [{"de": "Ein Haus.", "en": "A house."}],
}


def test_multi30k_is_fetched_once_and_written_in_the_configured_layout(tmp_path, monkeypatch, caplog):
    fake = FakeDatasets(MULTI30K_ROWS)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    cfg = data_cfg(tmp_path, "multi30k_de_en")
    with caplog.at_level(logging.INFO, logger="seq2seq.data.standard_sets"):
        ensure_corpus(cfg)
    assert [call[2] for call in fake.calls] == ["train", "validation", "test"]
    assert {call[0] for call in fake.calls} == {"bentrevett/multi30k"}
    assert sorted(p.name for p in (tmp_path / "corpus").glob("*.??")) == [
        f"{split}.{lang}" for split in ("test", "train", "val") for lang in ("de", "en")
    ]
    assert read_split(cfg, "train") == [("Ein Hund läuft.", "A dog runs."), ("Zwei Zeilen", "Two lines")]
    assert read_split(cfg, "val") == [("Eine Katze.", "A cat.")]
    assert "fetching hub dataset bentrevett/multi30k" in caplog.text
    ensure_corpus(cfg)  # now a local copy: nothing fetched again
    assert len(fake.calls) == 3


def test_iwslt14_translation_rows_in_tsv_layout(tmp_path, monkeypatch):
    rows = {
        split: [{"translation": {"de": f"{split} satz", "en": f"{split} sentence"}}]
        for split in MULTI30K_ROWS
    }
    fake = FakeDatasets(rows)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    cfg = data_cfg(tmp_path, "iwslt14_de_en", "data.format=tsv")
    ensure_corpus(cfg)
    assert fake.calls[0] == ("bbaaaa/iwslt14-de-en-preprocess", "de-en", "train", None)
    assert (tmp_path / "corpus" / "val.tsv").read_text() == "validation satz\tvalidation sentence\n"
    assert read_split(cfg, "test") == [("test satz", "test sentence")]


def test_a_local_copy_is_used_without_datasets(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` fails
    cfg = data_cfg(tmp_path, "multi30k_de_en")
    for path in corpus_paths(cfg):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x\n")
    ensure_corpus(cfg)
    assert read_split(cfg, "test") == [("x", "x")]


def test_missing_datasets_library_says_what_to_fetch_and_where(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    cfg = data_cfg(tmp_path, "multi30k_de_en")
    with pytest.raises(DataError) as err:
        ensure_corpus(cfg)
    message = str(err.value)
    corpus = tmp_path / "corpus"
    assert f"missing {corpus / 'train.de'}, {corpus / 'train.en'}, {corpus / 'val.de'}" in message
    assert "the `datasets` library is not installed" in message
    assert "pip install datasets" in message and "bentrevett/multi30k" in message
    assert "line i of the .de file translating line i of the .en file" in message


def test_offline_fetch_fails_clearly_and_writes_nothing(tmp_path, monkeypatch):
    fake = FakeDatasets(error=ConnectionError("Couldn't reach 'bentrevett/multi30k' on the Hub"))
    monkeypatch.setitem(sys.modules, "datasets", fake)
    cfg = data_cfg(tmp_path, "multi30k_de_en")
    with pytest.raises(
        DataError, match=r"fetching bentrevett/multi30k failed: ConnectionError: Couldn't reach"
    ):
        ensure_corpus(cfg)
    assert not any(path.exists() for path in corpus_paths(cfg))


def test_a_partial_local_copy_is_not_completed(tmp_path, monkeypatch):
    fake = FakeDatasets(MULTI30K_ROWS)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    cfg = data_cfg(tmp_path, "multi30k_de_en")
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "train.de").write_text("x\n")
    with pytest.raises(DataError, match=r"train\.de exist but .*train\.en.* do not; complete the local copy"):
        ensure_corpus(cfg)
    assert fake.calls == []


def test_hub_rows_without_the_language_are_named(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", FakeDatasets(MULTI30K_ROWS))
    cfg = data_cfg(tmp_path, "multi30k_de_en", "data.src_lang=fr")
    with pytest.raises(DataError, match=r"rows have no 'fr' text \(columns: de, en\); check data\.src_lang"):
        ensure_corpus(cfg)


def test_user_files_are_never_built_and_unknown_sources_are_named(tmp_path):
    ensure_corpus(data_cfg(tmp_path, "parallel_text"))  # missing files: the reader will name them
    assert not (tmp_path / "corpus").exists()
    with pytest.raises(
        DataError, match=r"data\.source='ftp': choose synthetic or one of files, bible, huggingface"
    ):
        ensure_corpus(data_cfg(tmp_path, "parallel_text", "data.source=ftp"))


# --- the Bible corpus, built when missing ------------------------------------------------------

FAKE_PREPARE = """
import sys
from pathlib import Path
out = Path(sys.argv[sys.argv.index("--out") + 1])
calls = out.parent / "calls.txt"
calls.write_text((calls.read_text() if calls.exists() else "") + " ".join(sys.argv[1:]) + "\\n")
out.mkdir(parents=True, exist_ok=True)
for split in ("train", "val", "test"):
    for suffix, line in (("en", "In the beginning"), ("es", "En el principio"), ("ref", "Gen 1:1")):
        (out / f"{split}.{suffix}").write_text(line + "\\n")
(out / "stats.json").write_text("{}")
"""


def test_bible_is_built_by_the_prepare_script_when_missing_and_only_then(tmp_path, monkeypatch, caplog):
    script = tmp_path / "prepare_bible.py"
    script.write_text(FAKE_PREPARE)
    monkeypatch.setattr(standard_sets, "PREPARE_BIBLE", script)
    cfg = data_cfg(tmp_path, "bible_en_es")
    with caplog.at_level(logging.INFO, logger="seq2seq.data.standard_sets"):
        ensure_corpus(cfg)
    assert f"the Bible corpus is missing from {tmp_path / 'corpus'}; building it now" in caplog.text
    assert read_split(cfg, "val") == [("In the beginning", "En el principio")]
    ensure_corpus(cfg)
    assert (tmp_path / "calls.txt").read_text() == f"--out {tmp_path / 'corpus'}\n"  # built once


def test_bible_is_rebuilt_when_a_file_is_missing(tmp_path, monkeypatch):
    script = tmp_path / "prepare_bible.py"
    script.write_text(FAKE_PREPARE)
    monkeypatch.setattr(standard_sets, "PREPARE_BIBLE", script)
    cfg = data_cfg(tmp_path, "bible_en_es")
    ensure_corpus(cfg)
    (tmp_path / "corpus" / "stats.json").unlink()  # an interrupted build: stats.json is written last
    ensure_corpus(cfg)
    assert len((tmp_path / "calls.txt").read_text().splitlines()) == 2


def test_a_failed_bible_build_reports_the_scripts_message(tmp_path, monkeypatch):
    script = tmp_path / "prepare_bible.py"
    script.write_text(
        "import sys\nsys.exit('SWORD module(s) spaRV1909eb not found; sudo apt-get install -y sword-text-sparv')\n"
    )
    monkeypatch.setattr(standard_sets, "PREPARE_BIBLE", script)
    with pytest.raises(DataError) as err:
        ensure_corpus(data_cfg(tmp_path, "bible_en_es"))
    message = str(err.value)
    assert f"building the Bible corpus in {tmp_path / 'corpus'} failed" in message
    assert "sudo apt-get install -y sword-text-sparv" in message and "make data-bible" in message


HAVE_MODULES = all(
    (Path(bible.DEFAULT_SWORD_PATH) / "mods.d" / f"{module}.conf").is_file()
    for module in bible.DEBIAN_PACKAGES
)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_MODULES, reason=f"SWORD modules not installed in {bible.DEFAULT_SWORD_PATH}")
def test_real_bible_build_splits_by_chapter_and_matches_make_data_bible(tmp_path):
    """The real scripts/prepare_bible.py (a few seconds): no chapter has verses in two splits, and the
    corpus equals the one `make data-bible` built in data/bible with the same settings (deterministic)."""
    pytest.importorskip("pysword")
    cfg = compose_train(tmp_path, "data=bible_en_es", f"data.dir={tmp_path / 'bible'}").data
    ensure_corpus(cfg)
    built = Path(cfg.dir)
    chapters = {}
    for split in SPLITS:
        refs = (built / f"{split}.ref").read_text(encoding="utf-8").splitlines()
        assert len(refs) == len(read_split(cfg, split))  # every verse read, none empty
        chapters[split] = {ref.rsplit(":", 1)[0] for ref in refs}  # "Gen 1:1" → "Gen 1"
    assert not chapters["train"] & chapters["val"]
    assert not chapters["train"] & chapters["test"]
    assert not chapters["val"] & chapters["test"]
    stats = json.loads((built / "stats.json").read_text())
    assert stats["splits"]["train"]["max_source_words"] <= 90
    reference = ROOT / "data" / "bible"
    if not bible.corpus_is_current(reference, stats["settings"]):
        pytest.skip(f"{reference} was not built with the default settings; nothing to compare with")
    for path in bible.corpus_files(built)[:-1]:  # every text file; stats.json is compared by its settings
        assert path.read_bytes() == (reference / path.name).read_bytes(), path.name
