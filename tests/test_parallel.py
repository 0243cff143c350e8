"""Tests for seq2seq.data.parallel: line-aligned files and TSV, their errors, the config layouts, writing."""

import logging
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from seq2seq.data.errors import DataError
from seq2seq.data.parallel import read_parallel, read_split, read_tsv, split_files, write_split


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


def test_tsv_reads_pairs_strips_sides_and_handles_crlf_and_bom(tmp_path: Path) -> None:
    path = _write(tmp_path / "train.tsv", b"\xef\xbb\xbfthe dog \t el perro\r\na cat\tun gato\n")
    assert read_tsv(path) == [("the dog", "el perro"), ("a cat", "un gato")]


def test_tsv_blank_lines_and_empty_sides_are_dropped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(tmp_path / "t.tsv", "one\tuno\n\n\tdos\nthree\t \nfour\tcuatro\n")
    with caplog.at_level(logging.WARNING, logger="seq2seq.data.parallel"):
        pairs = read_tsv(path)
    assert pairs == [("one", "uno"), ("four", "cuatro")]
    assert "dropped 3 of 5 pairs" in caplog.text


@pytest.mark.parametrize(("line", "tabs"), [("no tab here", 0), ("a\tb\tc", 2)])
def test_tsv_line_without_exactly_one_tab_names_file_and_line(tmp_path: Path, line: str, tabs: int) -> None:
    path = _write(tmp_path / "bad.tsv", f"one\tuno\n{line}\n")
    with pytest.raises(
        DataError, match=rf"bad\.tsv:2: expected `source<TAB>target` \(one tab\), found {tabs} tabs"
    ):
        read_tsv(path)


def test_tsv_undecodable_bytes_name_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "l.tsv", "one\tuno\ntwo\tdos\nmister\tse\xf1or\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"l\.tsv:3: not valid UTF-8"):
        read_tsv(path)


def _cfg(tmp_path: Path, layout: str):
    return OmegaConf.create(
        {
            "format": layout,
            "files": {"train": {"src": str(tmp_path / "train.de"), "tgt": str(tmp_path / "train.en")}},
            "tsv": {"train": str(tmp_path / "train.tsv")},
        }
    )


def test_split_files_and_read_split_follow_data_format(tmp_path: Path) -> None:
    _write(tmp_path / "train.de", "ein Haus\n")
    _write(tmp_path / "train.en", "a house\n")
    _write(tmp_path / "train.tsv", "zwei\ttwo\n")
    two_files, tsv = _cfg(tmp_path, "two_files"), _cfg(tmp_path, "tsv")
    assert split_files(two_files, "train") == (tmp_path / "train.de", tmp_path / "train.en")
    assert split_files(tsv, "train") == (tmp_path / "train.tsv",)
    assert read_split(two_files, "train") == [("ein Haus", "a house")]
    assert read_split(tsv, "train") == [("zwei", "two")]
    with pytest.raises(DataError, match=r"data\.format='csv': choose one of two_files, tsv"):
        split_files(_cfg(tmp_path, "csv"), "train")


@pytest.mark.parametrize("layout", ["two_files", "tsv"])
def test_write_split_round_trips_and_keeps_lines_aligned(tmp_path: Path, layout: str) -> None:
    pairs = [("ein  Haus", "a house"), ("zwei\nZeilen", "two\tparts"), ("Straße", "street")]
    files = split_files(_cfg(tmp_path, layout), "train")
    write_split(pairs, files)
    assert read_split(_cfg(tmp_path, layout), "train") == [
        ("ein Haus", "a house"),
        ("zwei Zeilen", "two parts"),
        ("Straße", "street"),
    ]
    assert not list(tmp_path.glob("*.tmp"))  # written atomically: no temporary file left behind
