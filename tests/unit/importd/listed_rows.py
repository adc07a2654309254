"""`KnownRows` over a list, for unit tests of the comparison (the catalog's own reads are tested in
catalog/test_files.py against SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence

from importd.items import KnownRow


class ListedRows:
    """Rows in relpath order, handed out in chunks of `chunk`."""

    def __init__(self, present: list[KnownRow], in_error: Sequence[bytes] = (), chunk: int = 4096) -> None:
        self._present = sorted(present)
        self._errors = sorted(in_error)
        self._chunk = chunk
        self._at = 0
        self.closed = False

    def in_error(self) -> list[bytes]:
        return self._errors

    def next_chunk(self) -> list[KnownRow] | None:
        part = self._present[self._at : self._at + self._chunk]
        self._at += len(part)
        return part or None

    def close(self) -> None:
        self.closed = True
