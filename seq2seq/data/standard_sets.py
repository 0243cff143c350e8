"""Corpora that are built or fetched when their files are missing.

- ``data.source=bible``: the Bible en–es corpus, built by ``scripts/prepare_bible.py`` (from the Debian
  SWORD modules, no network needed once they are installed) into ``data.dir``.
- ``data.source=huggingface``: a standard small NMT set (Multi30k de–en, IWSLT'14 de–en) read from a local
  copy in ``data.dir``; when there is none, fetched once with the Hugging Face ``datasets`` library
  (optional, imported only here) and written there in the layout of ``data.format``.
- ``data.source=files``: the user's own files; nothing to build (the reader names a missing file).

Building and fetching hold a lock file in ``data.dir``, so parallel jobs (sweeps, DDP ranks) do it once.
"""

from __future__ import annotations

import fcntl
import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from seq2seq.data import bible
from seq2seq.data.errors import DataError
from seq2seq.data.parallel import Pairs, split_files, write_split

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
FILE_SOURCES = ("files", "bible", "huggingface")
PREPARE_BIBLE = Path(__file__).resolve().parents[2] / "scripts" / "prepare_bible.py"


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory/.lock`` (created with the directory if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def corpus_paths(data_cfg: Any) -> list[Path]:
    """Every file the data config reads, all splits."""
    return [path for split in SPLITS for path in split_files(data_cfg, split)]


def ensure_corpus(data_cfg: Any) -> None:
    """Make sure the files of a ``files``/``bible``/``huggingface`` corpus exist, building or fetching them.

    Does nothing when they are all there (a local copy always wins).
    """
    source = data_cfg.source
    if source not in FILE_SOURCES:
        raise DataError(f"data.source={source!r}: choose synthetic or one of {', '.join(FILE_SOURCES)}")
    if source == "files" or all(path.is_file() for path in _required(data_cfg)):
        return
    directory = Path(data_cfg.dir)
    with _locked(directory):
        if all(path.is_file() for path in _required(data_cfg)):  # another job built it meanwhile
            return
        if source == "bible":
            build_bible(directory)
        else:
            fetch_from_hub(data_cfg)


def _required(data_cfg: Any) -> list[Path]:
    if data_cfg.source == "bible":  # stats.json is written last: a corpus with it is complete
        return [*corpus_paths(data_cfg), *bible.corpus_files(data_cfg.dir)]
    return corpus_paths(data_cfg)


def build_bible(out_dir: str | Path) -> None:
    """Build the Bible corpus in ``out_dir`` with ``scripts/prepare_bible.py`` (its default settings)."""
    out_dir = Path(out_dir)
    if not PREPARE_BIBLE.is_file():
        raise DataError(
            f"{out_dir}: the Bible corpus is missing and {PREPARE_BIBLE} is not there to build it; "
            "run `make data-bible` from a checkout of the repository"
        )
    command = [sys.executable, str(PREPARE_BIBLE), "--out", str(out_dir)]
    log.info("the Bible corpus is missing from %s; building it now: %s", out_dir, " ".join(command))
    result = subprocess.run(command, stderr=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise DataError(
            f"building the Bible corpus in {out_dir} failed: {result.stderr.strip() or 'no message'} "
            f"(see `make data-bible` and docs/data.md)"
        )


def _field(row: Any, lang: str, hub_path: str) -> str:
    """The ``lang`` text of a hub row: a column named ``lang`` or ``row["translation"][lang]``."""
    if lang in row:
        return row[lang]
    if lang in (row.get("translation") or {}):
        return row["translation"][lang]
    raise DataError(
        f"hub dataset {hub_path}: rows have no {lang!r} text (columns: {', '.join(row)}); "
        "check data.src_lang and data.tgt_lang"
    )


def _what_to_fetch(data_cfg: Any, missing: list[Path], reason: str) -> str:
    """The message for a corpus that is not on disk and cannot be fetched now."""
    files = ", ".join(str(path) for path in missing)
    layout = (
        f"`{data_cfg.src_lang}<TAB>{data_cfg.tgt_lang}` sentence pairs, one per line"
        if data_cfg.get("format", "two_files") == "tsv"
        else f"one sentence per line, line i of the .{data_cfg.src_lang} file translating line i of the "
        f".{data_cfg.tgt_lang} file"
    )
    return (
        f"data={data_cfg.name}: missing {files} ({reason}). Either put a local copy there ({layout}; "
        "see docs/data.md), or, online, install the Hugging Face datasets library (`.venv/bin/pip install datasets`) and run "
        f"again to fetch the hub dataset {data_cfg.hub.path} into {data_cfg.dir}"
    )


def fetch_from_hub(data_cfg: Any) -> None:
    """Download ``data.hub`` with Hugging Face ``datasets`` and write its splits where the config reads them.

    ``data.hub``: ``path`` (hub id), ``name`` (configuration or null), ``revision`` (or null) and
    ``splits`` (our split → hub split, e.g. ``val: validation``). Refuses to complete a partial local copy.
    """
    paths = corpus_paths(data_cfg)
    missing = [path for path in paths if not path.is_file()]
    present = [path for path in paths if path.is_file()]
    if present:
        raise DataError(
            f"data={data_cfg.name}: {', '.join(map(str, present))} exist but {', '.join(map(str, missing))} "
            "do not; complete the local copy, or remove it to fetch the whole set again"
        )
    try:
        import datasets
    except ImportError:
        raise DataError(
            _what_to_fetch(data_cfg, missing, "the `datasets` library is not installed")
        ) from None
    hub = data_cfg.hub
    log.info(
        "fetching hub dataset %s (%s) with Hugging Face datasets into %s", hub.path, hub.name, data_cfg.dir
    )
    splits: dict[str, Pairs] = {}
    for split in SPLITS:
        try:
            rows = datasets.load_dataset(
                hub.path, hub.get("name"), split=hub.splits[split], revision=hub.get("revision")
            )
        except Exception as err:  # offline, unknown id, hub errors: all mean "get the files another way"
            reason = f"fetching {hub.path} failed: {type(err).__name__}: {err}"
            raise DataError(_what_to_fetch(data_cfg, missing, reason)) from err
        splits[split] = [
            (_field(row, data_cfg.src_lang, hub.path), _field(row, data_cfg.tgt_lang, hub.path))
            for row in rows
        ]
    for split, pairs in splits.items():  # write only once every split is in hand
        write_split(pairs, split_files(data_cfg, split))
        log.info(
            "wrote %d %s pairs to %s", len(pairs), split, ", ".join(map(str, split_files(data_cfg, split)))
        )
