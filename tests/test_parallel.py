"""Tests for seq2seq.data.parallel: reading line-aligned files, their errors, and length filtering."""

import logging
from pathlib import Path

import pytest

from seq2seq.data.errors import DataError
from seq2seq.data.parallel import filter_by_length, read_parallel


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def test_reads_aligned_pairs_and_strips_whitespace(tmp_path: Path) -> None:
    src = _write(tmp_path / "train.en", "the dog sleeps  \r\n  a cat runs\nniño está\n")
    tgt = _write(tmp_path / "train.xx", "ulo doru vevut\nema jase tokat\t\nel niño\n")
    assert read_parallel(src, str(tgt)) == [
        ("the dog sleeps", "ulo doru vevut"),
        ("a cat runs", "ema jase tokat"),
        ("niño está", "el niño"),
    ]


def test_last_line_without_newline_and_byte_order_mark(tmp_path: Path) -> None:
    src = _write(tmp_path / "a.src", b"\xef\xbb\xbfone\ntwo")
    tgt = _write(tmp_path / "a.tgt", "uno\ndos\n")
    assert read_parallel(src, tgt) == [("one", "uno"), ("two", "dos")]


def test_pairs_with_an_empty_side_are_dropped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = _write(tmp_path / "s.txt", "one\n\nthree\nfour\n   \n")
    tgt = _write(tmp_path / "t.txt", "uno\ndos\n\ncuatro\ncinco\n")
    with caplog.at_level(logging.WARNING, logger="seq2seq.data.parallel"):
        pairs = read_parallel(src, tgt)
    assert pairs == [("one", "uno"), ("four", "cuatro")]
    assert "dropped 3 of 5 pairs" in caplog.text


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    tgt = _write(tmp_path / "t.txt", "uno\n")
    with pytest.raises(DataError, match=r"missing\.txt: file not found") as err:
        read_parallel(tmp_path / "missing.txt", tgt)
    assert "check the path" in str(err.value)
    with pytest.raises(DataError, match=r"gone\.txt: file not found"):
        read_parallel(tgt, tmp_path / "gone.txt")


def test_empty_file_is_named(tmp_path: Path) -> None:
    src = _write(tmp_path / "s.txt", "one\n")
    for content in ("", "\n \n"):
        empty = _write(tmp_path / "empty.txt", content)
        with pytest.raises(DataError, match=r"empty\.txt: file is empty"):
            read_parallel(src, empty)


def test_different_line_counts_name_both_files_and_counts(tmp_path: Path) -> None:
    src = _write(tmp_path / "s.txt", "one\ntwo\nthree\n")
    tgt = _write(tmp_path / "t.txt", "uno\ndos\n")
    with pytest.raises(DataError) as err:
        read_parallel(src, tgt)
    message = str(err.value)
    assert f"{src} has 3 lines" in message and f"{tgt} has 2" in message


def test_undecodable_bytes_name_file_and_line(tmp_path: Path) -> None:
    src = _write(tmp_path / "s.txt", "one\ntwo\n")
    latin1 = _write(tmp_path / "latin1.txt", "uno\nse\xf1or\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt:2: not valid UTF-8") as err:
        read_parallel(src, latin1)
    assert "0xf1" in str(err.value) and "re-encode" in str(err.value)


def test_all_pairs_empty_raises(tmp_path: Path) -> None:
    src = _write(tmp_path / "s.txt", "one\n\n")
    tgt = _write(tmp_path / "t.txt", "\ndos\n")
    with pytest.raises(DataError, match="every line pair has an empty side"):
        read_parallel(src, tgt)


def test_filter_by_length_drops_long_pairs_and_counts_them() -> None:
    pairs = [("a b", "x y z"), ("a b c d", "x"), ("a", "w x y z"), ("a b c", "x y z")]
    kept, n_dropped = filter_by_length(pairs, max_len=3)
    assert kept == [("a b", "x y z"), ("a b c", "x y z")]
    assert n_dropped == 2
    assert filter_by_length(pairs, max_len=4) == (pairs, 0)
    with pytest.raises(DataError, match="max_len must be >= 1"):
        filter_by_length(pairs, max_len=0)
