"""`importd import-dump FILE --catalog URL`: a dump (`importctl export`) restored into an empty
catalog, SQLite or PostgreSQL. Offline: run it with no daemon on the target catalog."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import IO

import anyio

from importd.catalog.dump import TRASH_LEDGER, DumpError
from importd.catalog.restore import CatalogNotEmpty, RestoreSummary, restore_catalog

EX_FAILED = 1


def catalog_url(text: str) -> str:
    """A URL as given, or a plain path taken as a SQLite file."""
    if "://" in text or text.startswith("sqlite:"):
        return text
    return "sqlite:///" + os.path.abspath(text)


def _lines(fh: IO[bytes]) -> Iterator[str]:
    for raw in fh:
        line = raw.decode("ascii").rstrip("\n")
        if line:
            yield line


class _Ledger:
    """The trash ledger's lines, written beside the catalog's state only once the restore committed."""

    def __init__(self, state_dir: Path | None) -> None:
        self.path = state_dir / TRASH_LEDGER if state_dir is not None else None
        self.lines: list[str] = []

    def check(self) -> str | None:
        if self.path is not None and self.path.exists() and self.path.stat().st_size:
            return f"{self.path} exists and is not empty: restore into a new state directory"
        return None

    def add(self, name: str, line: str) -> None:
        if name == TRASH_LEDGER:
            self.lines.append(line)

    def write(self) -> None:
        if self.path is None or not self.lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        with open(self.path, "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write("".join(line + "\n" for line in self.lines))


def run(path: str, catalog: str, state_dir: Path | None, as_json: bool) -> int:
    url = catalog_url(catalog)
    ledger = _Ledger(state_dir)
    problem = ledger.check()
    if problem is not None:
        print(f"importd: import-dump: {problem}", file=sys.stderr)
        return EX_FAILED
    try:
        with contextlib.ExitStack() as stack:
            fh = sys.stdin.buffer if path == "-" else stack.enter_context(open(path, "rb"))
            summary = anyio.run(_restore, url, _lines(fh), ledger)
    except CatalogNotEmpty as exc:
        print(
            f"importd: import-dump: {exc} (hint: give a new file or an empty database with --catalog)",
            file=sys.stderr,
        )
        return EX_FAILED
    except (DumpError, UnicodeDecodeError) as exc:
        print(f"importd: import-dump: {path}: {exc}; nothing was restored", file=sys.stderr)
        return EX_FAILED
    except OSError as exc:
        print(f"importd: import-dump: {exc}", file=sys.stderr)
        return EX_FAILED
    ledger.write()
    _report(summary, url, ledger, as_json)
    return 0


async def _restore(url: str, lines: Iterator[str], ledger: _Ledger) -> RestoreSummary:
    return await restore_catalog(url, lines, on_file_line=ledger.add)


def _report(summary: RestoreSummary, url: str, ledger: _Ledger, as_json: bool) -> None:
    shown = url.split("@", 1)[-1] if "@" in url and url.startswith("postgres") else url
    if as_json:
        data = asdict(summary)
        data["catalog"] = shown
        data["seconds"] = round(summary.seconds, 3)
        data["trash_ledger"] = str(ledger.path) if ledger.path is not None and ledger.lines else None
        print(json.dumps(data, indent=2))
        return
    total = sum(summary.rows.values())
    tables = sum(1 for n in summary.rows.values() if n)
    print(
        f"importd: restored {total} rows of {tables} tables into {shown} "
        f"(schema {summary.revision}) in {summary.seconds:.1f}s"
    )
    skipped = summary.files.get(TRASH_LEDGER, 0)
    if skipped and ledger.path is None:
        print(
            f"importd: the trash ledger ({skipped} lines) was not restored: pass --state-dir "
            "(the daemon's state_dir) to write it",
            file=sys.stderr,
        )
    elif skipped:
        print(f"importd: trash ledger written to {ledger.path}")
