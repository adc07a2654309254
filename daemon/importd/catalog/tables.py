"""The catalog's tables as SQLAlchemy `Table`s, declared once, for the statements of every
family module (files, runs, entities, media, maintenance) and of the writer.

The models in `models.py` declare the schema; these are the same tables, looked up in the shared
metadata so that they are typed as `Table` (a model's `__table__` is not, to a type checker).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Any, TypeVar

from sqlalchemy import Table
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from importd.catalog import models  # noqa: F401  (registers the tables on SQLModel.metadata)


def _table(name: str) -> Table:
    return SQLModel.metadata.tables[name]


roots = _table("roots")
hosts = _table("hosts")
files = _table("files")
contents = _table("contents")
file_moves = _table("file_moves")
runs = _table("runs")
run_log = _table("run_log")
entities = _table("entities")
entity_links = _table("entity_files")  # how a file was mapped: to an entity with a role, or to none
conflicts = _table("conflicts")
extractions = _table("extractions")
image_hashes = _table("image_hashes")
video_fingerprints = _table("video_fingerprints")
faces = _table("faces")
symlinks = _table("symlinks")
findings = _table("findings")
vanish_holds = _table("vanish_holds")
attribute_sources = _table("attribute_sources")
tags = _table("tags")
file_tags = _table("file_tags")
entity_tags = _table("entity_tags")
legacy_backlog = _table("legacy_backlog")
backlog_control = _table("backlog_control")
file_attributes = _table("file_attributes")
file_counts = _table("file_counts")

T = TypeVar("T")
# SQLite's default limit on bound parameters is 32766; stay far below for IN lists.
IN_CHUNK = 900


def chunks(seq: Sequence[T], size: int = IN_CHUNK) -> Iterable[Sequence[T]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


# Rows per INSERT statement: SQLite allows 32,766 bound values per statement.
ROWS_PER_INSERT = 256


def insert_rows(
    conn: Connection, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]], tail: str = ""
) -> None:
    """SQLite only: many rows per INSERT ... VALUES (...), (...) statement rather than
    executemany. The driver releases the GIL for each statement it steps, and a release per row
    made the writer and the hashing thread hand the GIL to each other 100,000 times in a cold
    import, at tens of microseconds a hand-off on two cores. `tail` follows the VALUES (an ON
    CONFLICT clause: SQLite applies the rows in order, so a later row for the same key wins)."""
    one = "(" + ",".join("?" * len(columns)) + ")"
    head = f"INSERT INTO {table} ({','.join(columns)}) VALUES "
    for part in chunks(rows, ROWS_PER_INSERT):
        conn.exec_driver_sql(head + ",".join([one] * len(part)) + tail, tuple(chain.from_iterable(part)))
