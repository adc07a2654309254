"""Reading a spreadsheet export as it comes: the encoding, the delimiter, then its records one
by one (never the whole file in memory).

Encoding: a BOM decides (UTF-8 or UTF-16); otherwise the file is read once in chunks to see
whether it is UTF-8, and read as Windows-1252 with a warning when it is not (old Excel
exports). Delimiter: the header line's `,`, `;` or tab; when it holds several, `csv.Sniffer`
judges on the first 64 KiB. Quoted cells may hold the delimiter, quotes and newlines.

Records are numbered as a spreadsheet numbers its rows: the header is row 1, a blank line still
takes a number (it is skipped), and a record whose quoted cell holds a newline is one row.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

__all__ = ["CsvFormat", "CsvReadError", "detect_format", "read_records"]

_BOMS: Final = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_DELIMITERS: Final = ",;\t"
_CHUNK: Final = 64 << 10
SAMPLE_CHARS: Final = 64 << 10


class CsvReadError(Exception):
    """The file cannot be read on (an unreadable byte run, a broken quote at the end)."""

    def __init__(self, row: int, message: str) -> None:
        super().__init__(f"row {row}: {message}" if row else message)
        self.row = row
        self.message = message


@dataclass(frozen=True)
class CsvFormat:
    encoding: str
    delimiter: str
    warning: str | None = None  # the Windows-1252 fallback

    @property
    def delimiter_name(self) -> str:
        return {",": "comma", ";": "semicolon", "\t": "tab"}.get(self.delimiter, repr(self.delimiter))


def detect_format(path: Path) -> CsvFormat:
    """The file's encoding and delimiter; OSError when it cannot be opened."""
    with open(path, "rb") as fh:
        head = fh.read(4)
        encoding = next((name for bom, name in _BOMS if head.startswith(bom)), None)
        warning = None
        if encoding is None:
            fh.seek(0)
            bad = _first_non_utf8(fh)
            encoding = "utf-8" if bad is None else "cp1252"
            if bad is not None:
                warning = f"not UTF-8 (byte {bad} is not): read as Windows-1252"
    with open(path, encoding=encoding, errors="replace", newline="") as text:
        sample = text.read(SAMPLE_CHARS)
    return CsvFormat(encoding, _delimiter(sample), warning)


def _first_non_utf8(fh: BinaryIO) -> int | None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    while True:
        chunk = fh.read(_CHUNK)
        try:
            decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            return offset + exc.start
        if not chunk:
            return None
        offset += len(chunk)


def _delimiter(sample: str) -> str:
    first = sample.lstrip("\ufeff").split("\n", 1)[0]
    present = [d for d in _DELIMITERS if d in first]
    if len(present) == 1:
        return present[0]
    if not present:
        return ","  # one column
    try:
        return csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        return max(present, key=first.count)


def read_records(path: Path, fmt: CsvFormat) -> Generator[tuple[int, list[str]], None, None]:
    """(row number, cells) for every record that holds a non-blank cell, the header first."""
    with open(path, encoding=fmt.encoding, errors="replace", newline="") as fh:
        reader = csv.reader(fh, delimiter=fmt.delimiter)
        row = 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise CsvReadError(row + 1, f"unreadable CSV: {exc}") from None
            row += 1  # a blank line is a record of its own ([]), as it is a row in a spreadsheet
            if any(cell.strip() for cell in cells):
                yield row, cells
