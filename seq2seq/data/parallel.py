"""Line-aligned parallel text: read a source and a target file into (source, target) pairs."""

from __future__ import annotations

import codecs
import logging
from pathlib import Path

from seq2seq.data.errors import DataError

logger = logging.getLogger(__name__)


def _require_file(path: Path) -> None:
    if not path.exists():
        raise DataError(
            f"{path}: file not found (resolved to {path.resolve()}); check the path in the data config "
            "or create the file"
        )
    if not path.is_file():
        raise DataError(f"{path}: not a regular file; point the data config at a text file")


def _read_lines(path: Path) -> list[str]:
    """The stripped lines of a UTF-8 file (a leading byte-order mark is ignored)."""
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    if not data.strip():
        raise DataError(f"{path}: file is empty; it needs one sentence per line")
    raw_lines = data.split(b"\n")
    if raw_lines[-1] == b"":  # the final newline ends the last line, it does not start a new one
        raw_lines.pop()
    lines = []
    for number, raw in enumerate(raw_lines, start=1):
        try:
            lines.append(raw.decode("utf-8").strip())
        except UnicodeDecodeError as err:
            raise DataError(
                f"{path}:{number}: not valid UTF-8 (byte {raw[err.start]:#04x} at byte offset {err.start} "
                "of the line); re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`"
            ) from None
    return lines


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> list[tuple[str, str]]:
    """Pairs (line i of ``src_path``, line i of ``tgt_path``), surrounding whitespace stripped.

    Raises DataError for a missing, empty or non-UTF-8 file, or files with different line counts.
    Pairs with an empty side are dropped, and how many is logged.
    """
    src_path, tgt_path = Path(src_path), Path(tgt_path)
    _require_file(src_path)
    _require_file(tgt_path)
    src_lines, tgt_lines = _read_lines(src_path), _read_lines(tgt_path)
    if len(src_lines) != len(tgt_lines):
        raise DataError(
            f"{src_path} has {len(src_lines)} lines but {tgt_path} has {len(tgt_lines)}; the files must be "
            "line-aligned (line i of one translates line i of the other): look for a truncated file or "
            "extra blank lines at the end"
        )
    pairs = [(src, tgt) for src, tgt in zip(src_lines, tgt_lines, strict=True) if src and tgt]
    n_dropped = len(src_lines) - len(pairs)
    if n_dropped:
        logger.warning(
            "%s / %s: dropped %d of %d pairs with an empty side",
            src_path,
            tgt_path,
            n_dropped,
            len(src_lines),
        )
    if not pairs:
        raise DataError(f"{src_path} / {tgt_path}: every line pair has an empty side; no pairs to use")
    return pairs


def filter_by_length(pairs: list[tuple[str, str]], max_len: int) -> tuple[list[tuple[str, str]], int]:
    """(pairs whose source and target have at most ``max_len`` whitespace words, number dropped).

    Long pairs are dropped, never truncated: a truncated pair is no longer a translation.
    """
    if max_len < 1:
        raise DataError(f"max_len must be >= 1, got {max_len} (option data.max_words)")
    kept = [(src, tgt) for src, tgt in pairs if len(src.split()) <= max_len and len(tgt.split()) <= max_len]
    return kept, len(pairs) - len(kept)
