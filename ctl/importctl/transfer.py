"""Writing what `export` and `backup` stream: the client, not the daemon, writes the operator's
file (the daemon may run as another user on a read-only file system). A file is written beside
its final name, flushed to disk and renamed into place only once the stream ended well, so an
interrupted transfer never leaves a half file under FILE."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from importctl.protocol import BackupResult, ExportResult, StreamChunkReply


class TransferError(Exception):
    """The file could not be written (the message names it and why)."""


Progress = Callable[[StreamChunkReply], None]


def _open_part(out: Path) -> tuple[Path, IO[bytes]]:
    part = out.with_name(f".{out.name}.part-{os.getpid()}")
    try:
        return part, open(part, "xb")
    except OSError as exc:
        raise TransferError(f"cannot write {out}: {exc.strerror or exc}") from None


def _finish(part: Path, fh: IO[bytes], out: Path) -> None:
    try:
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        os.replace(part, out)
        dir_fd = os.open(out.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise TransferError(f"cannot write {out}: {exc.strerror or exc}") from None


def _drop(part: Path, fh: IO[bytes]) -> None:
    with contextlib.suppress(OSError):
        fh.close()
    with contextlib.suppress(OSError):
        part.unlink()


def write_export(pieces: Iterable[StreamChunkReply], out: Path | None, fmt: str) -> ExportResult:
    """The dump's text into `out` (or stdout when None); what it held, from its first and last line."""
    started = time.monotonic()
    part: Path | None = None
    if out is None:
        fh: IO[bytes] = sys.stdout.buffer
    else:
        part, fh = _open_part(out)
    size = lines = 0
    header: dict[str, Any] = {}
    end: dict[str, Any] = {}
    try:
        for piece in pieces:
            data = piece["data"]
            if not data:
                continue
            if not header:
                header = json.loads(data[: data.index("\n")])
            if piece["done"]:
                end = json.loads(data.rstrip("\n").rsplit("\n", 1)[-1])
            raw = data.encode("ascii")
            try:
                fh.write(raw)
            except OSError as exc:
                raise TransferError(f"cannot write {out or 'stdout'}: {exc.strerror or exc}") from None
            size += len(raw)
            lines += data.count("\n")
        if not end.get("end"):
            raise TransferError("the export ended without its end line")
        if part is not None and out is not None:
            _finish(part, fh, out)
            part = None
        else:
            fh.flush()
    finally:
        if part is not None:
            _drop(part, fh)
    return {
        "out": str(out) if out is not None else None,
        "format": fmt,
        "version": int(header.get("version", 0)),
        "revision": str(header.get("revision", "")),
        "bytes": size,
        "lines": lines,
        "rows": end.get("rows", {}),
        "files": end.get("files", {}),
        "seconds": round(time.monotonic() - started, 3),
    }


def write_backup(pieces: Iterable[StreamChunkReply], out: Path, progress: Progress | None) -> BackupResult:
    """The catalog copy's bytes into `out`, then `PRAGMA integrity_check` on what arrived."""
    started = time.monotonic()
    part, fh = _open_part(out)
    size = 0
    summary: dict[str, Any] = {}
    try:
        for piece in pieces:
            if progress is not None:
                progress(piece)
            if piece["data"]:
                raw = base64.b64decode(piece["data"])
                try:
                    fh.write(raw)
                except OSError as exc:
                    raise TransferError(f"cannot write {out}: {exc.strerror or exc}") from None
                size += len(raw)
            if piece["done"]:
                summary = piece.get("summary", {})
        if size != summary.get("bytes"):
            raise TransferError(f"the backup arrived short: {size} of {summary.get('bytes')} bytes")
        fh.flush()
        integrity = _integrity(part)
        if integrity != "ok":
            raise TransferError(f"the copy fails PRAGMA integrity_check ({integrity}); {out} not written")
        _finish(part, fh, out)
    except BaseException:
        _drop(part, fh)
        raise
    return {
        "out": str(out),
        "bytes": size,
        "pages": int(summary.get("pages", 0)),
        "page_size": int(summary.get("page_size", 0)),
        "steps": int(summary.get("steps", 0)),
        "seconds": round(time.monotonic() - started, 3),
        "integrity": integrity,
    }


def _integrity(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.Error as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    return "ok" if rows == [("ok",)] else str(rows[0][0])
