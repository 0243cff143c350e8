"""Parallel text on disk: line-aligned source and target files, or one ``source<TAB>target`` file.

``data.format`` chooses the layout of each split: ``two_files`` reads ``data.files.<split>.{src,tgt}``,
``tsv`` reads ``data.tsv.<split>``. Every reader checks the encoding (UTF-8, naming file and line), drops
pairs with an empty side (logging how many) and strips surrounding whitespace.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seq2seq.data.atomic import write_atomic
from seq2seq.data.errors import DataError

logger = logging.getLogger(__name__)

FORMATS = ("two_files", "tsv")
Pairs = list[tuple[str, str]]


def _require_file(path: Path) -> None:
    if not path.exists():
        raise DataError(
            f"{path}: file not found (resolved to {path.resolve()}); check the path in the data config "
            "or create the file"
        )
    if not path.is_file():
        raise DataError(f"{path}: not a regular file; point the data config at a text file")


def _read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 file, line ends (``\\n``, ``\\r\\n``) removed; a leading byte-order mark is ignored."""
    _require_file(path)
    data = path.read_bytes()
    if not data.removeprefix(codecs.BOM_UTF8).strip():
        raise DataError(f"{path}: file is empty; it needs one sentence pair per line")
    return decode_lines(data, str(path))


def decode_lines(data: bytes, name: str) -> list[str]:
    """Split UTF-8 bytes into lines (``\\n`` or ``\\r\\n``; a leading BOM ignored); undecodable bytes raise a
    :class:`DataError` naming ``name`` and the 1-based line."""
    raw_lines = data.removeprefix(codecs.BOM_UTF8).split(b"\n")
    if raw_lines[-1] == b"":  # the final newline ends the last line, it does not start a new one
        raw_lines.pop()
    lines = []
    for number, raw in enumerate(raw_lines, start=1):
        if b"\r" in raw.removesuffix(b"\r"):
            raise DataError(
                f"{name}:{number}: a carriage return (\\r) inside the line: the file has old-Mac (CR-only) line "
                "ends or stray CRs, so its lines run together; convert them, e.g. `tr '\\r' '\\n' < IN > OUT`"
            )
        try:
            lines.append(raw.decode("utf-8").removesuffix("\r"))
        except UnicodeDecodeError as err:
            raise DataError(
                f"{name}:{number}: not valid UTF-8 (byte {raw[err.start]:#04x} at byte offset {err.start} "
                "of the line); re-encode it as UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`"
            ) from None
    return lines


def _drop_empty(pairs: Pairs, where: str) -> Pairs:
    """``pairs`` without those that have an empty side; logs the count, raises when nothing is left."""
    kept = [(src, tgt) for src, tgt in pairs if src and tgt]
    if not kept:
        raise DataError(f"{where}: every line pair has an empty side; no pairs to use")
    if len(kept) < len(pairs):
        logger.warning(
            "%s: dropped %d of %d pairs with an empty side", where, len(pairs) - len(kept), len(pairs)
        )
    return kept


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> Pairs:
    """Pairs (line i of ``src_path``, line i of ``tgt_path``), surrounding whitespace stripped.

    Raises DataError for a missing, empty or non-UTF-8 file, or files with different line counts.
    Pairs with an empty side are dropped, and how many is logged.
    """
    src_path, tgt_path = Path(src_path), Path(tgt_path)
    src_lines, tgt_lines = _read_lines(src_path), _read_lines(tgt_path)
    if len(src_lines) != len(tgt_lines):
        raise DataError(
            f"{src_path} has {len(src_lines)} lines but {tgt_path} has {len(tgt_lines)}; the files must be "
            "line-aligned (line i of one translates line i of the other): look for a truncated file or "
            "extra blank lines at the end"
        )
    pairs = [(src.strip(), tgt.strip()) for src, tgt in zip(src_lines, tgt_lines, strict=True)]
    return _drop_empty(pairs, f"{src_path} / {tgt_path}")


def read_tsv(path: str | Path) -> Pairs:
    """Pairs from a file of ``source<TAB>target`` lines, each side stripped.

    A blank line is a pair with empty sides (dropped and counted); a non-blank line must hold exactly one
    tab, otherwise DataError names the file and line.
    """
    path = Path(path)
    pairs = []
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            pairs.append(("", ""))
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(
                f"{path}:{number}: expected `source<TAB>target` (one tab), found {len(fields) - 1} tabs; "
                "fix the line, or use data.format=two_files for line-aligned source and target files"
            )
        pairs.append((fields[0].strip(), fields[1].strip()))
    return _drop_empty(pairs, str(path))


def split_files(data_cfg: Any, split: str) -> tuple[Path, ...]:
    """The files of one split named by the data config: ``(src, tgt)`` for two_files, ``(tsv,)`` for tsv."""
    layout = data_cfg.get("format", "two_files")
    if layout == "two_files":
        return Path(data_cfg.files[split].src), Path(data_cfg.files[split].tgt)
    if layout == "tsv":
        return (Path(data_cfg.tsv[split]),)
    raise DataError(f"data.format={layout!r}: choose one of {', '.join(FORMATS)}")


def read_split(data_cfg: Any, split: str) -> Pairs:
    """The pairs of one split, read in the layout ``data.format`` names."""
    files = split_files(data_cfg, split)
    return read_parallel(*files) if len(files) == 2 else read_tsv(files[0])


def _write_atomic(path: Path, lines: Sequence[str]) -> None:
    write_atomic(path, "".join(f"{line}\n" for line in lines))


def write_split(pairs: Sequence[tuple[str, str]], files: Sequence[Path]) -> None:
    """Write pairs in the layout of ``files`` (``(src, tgt)`` or ``(tsv,)``, as from ``split_files``).

    Line breaks and tabs inside a sentence become spaces, so the files stay line-aligned. Each file is
    written atomically (a reader never sees half a file).
    """
    clean = [tuple(" ".join(side.split()) for side in pair) for pair in pairs]
    if len(files) == 2:
        _write_atomic(Path(files[0]), [src for src, _ in clean])
        _write_atomic(Path(files[1]), [tgt for _, tgt in clean])
    else:
        _write_atomic(Path(files[0]), [f"{src}\t{tgt}" for src, tgt in clean])
