"""Export, restore and backup through the real daemon, importctl and `importd import-dump`."""

from __future__ import annotations

import asyncio
import json
import math
import os
import sqlite3
import struct
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from importctl.client import DaemonError
from importd.catalog.dump import DumpSource, engine_lines, sqlite_lines
from importd.catalog.engine import create_engine
from tests.conftest import BIN, Daemon, wait_for
from tests.integration.test_entities import character, studio
from tests.pg import PgServer

EMBEDDING = struct.pack("<512f", *(math.cos(i) for i in range(512)))


def import_dump(dump: Path | str, catalog: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "importd"), "import-dump", str(dump), "--catalog", catalog, *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="ascii").splitlines()


def dump_of(db: Path, state_dir: Path | None = None) -> list[str]:
    """The same export the daemon streams, taken in-process from a catalog no daemon runs on."""
    ledger = bytes(state_dir / "trash" / "ledger.jsonl") if state_dir is not None else None
    return list(sqlite_lines(str(db), DumpSource("0.1.0", 0.0, ledger=ledger)))


def dump_through_engine(url: str, state_dir: Path) -> list[str]:
    ledger = bytes(state_dir / "trash" / "ledger.jsonl")

    async def run() -> list[str]:
        engine = create_engine(url)
        try:
            return [line async for line in engine_lines(engine, DumpSource("0.1.0", 0.0, ledger=ledger))]
        finally:
            await engine.dispose()

    return asyncio.run(run())


def same_dump(a: list[str], b: list[str]) -> None:
    """Equal byte for byte but for the header's time and source."""
    assert a[1:] == b[1:]
    drop = ("created", "source")
    ha, hb = json.loads(a[0]), json.loads(b[0])
    assert {k: v for k, v in ha.items() if k not in drop} == {k: v for k, v in hb.items() if k not in drop}


def rich_catalog(make_daemon: Any, tmp_path: Path) -> Daemon:
    """A studio with characters, a name that is not UTF-8, a conflict, runs with their logs and gap
    reports, a trashed symlink, and (seeded) faces and tags."""
    d = studio(make_daemon, tmp_path)
    root = d.roots["studio"]
    character(root, "Alice", age=30)
    character(root, "Bob", age=None, scenes=("intro",))
    raw = os.fsencode(root) + b"/Caf\xe9 \xff"
    os.makedirs(raw)
    with open(raw + b"/intro\n.mp4", "wb") as fh:
        fh.write(os.urandom(3000))
    (root / "links").mkdir()
    (root / "links" / "old.mkv").write_bytes(b"gone soon")
    os.symlink("old.mkv", root / "links" / "orphan")
    d.start()
    d.wait_idle()
    (root / "Alice" / "metadata.json").write_text('{"age": 31}')
    wait_for(lambda: d.ctl_json("conflicts"), what="a conflict")
    (root / "links" / "old.mkv").unlink()
    d.wait_idle()
    d.ctl("scan", "studio", "--wait", check=True)
    out = d.ctl_json("repair-links", "--yes")
    assert [r["status"] for r in out["results"] if r["action"] == "trash"] == ["done"]
    d.stop()
    digest = d.sql("SELECT blake3 FROM files WHERE blake3 IS NOT NULL ORDER BY id")[0][0]
    file_id, entity_id = d.sql(
        "SELECT file_id, entity_id FROM entity_files WHERE entity_id IS NOT NULL ORDER BY file_id"
    )[0]
    d.sql(
        "INSERT INTO faces (blake3, idx, x1, y1, x2, y2, det_score, embedding)"
        " VALUES (?, 0, 0.1, 0.2, 1, 2, 0.9, ?)",
        digest,
        EMBEDDING,
    )
    (tag_id,) = d.sql(
        "INSERT INTO tags (key, name, color, created) VALUES ('favourite', 'Favourite', '#f00', 1.5)"
        " RETURNING id"
    )[0]
    d.sql("INSERT INTO file_tags (file_id, tag_id, source, at) VALUES (?, ?, 'csv', 2.5)", file_id, tag_id)
    d.sql(
        "INSERT INTO entity_tags (entity_id, tag_id, source, at) VALUES (?, ?, 'nfo', 2.5)", entity_id, tag_id
    )
    d.start()
    d.wait_idle()
    return d


def test_export_import_export_gives_the_same_bytes(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = rich_catalog(make_daemon, tmp_path)
    out = tmp_path / "catalog.jsonl"
    result = d.ctl_json("export", "--out", str(out))
    first = lines(out)
    assert (
        result["out"] == str(out) and result["lines"] == len(first) and result["bytes"] == out.stat().st_size
    )
    header = json.loads(first[0])
    assert (
        header["format"] == "importd-dump"
        and header["version"] == 1
        and result["revision"] == header["revision"]
    )
    rows = result["rows"]
    for table in (
        "files",
        "entities",
        "conflicts",
        "runs",
        "run_log",
        "faces",
        "symlinks",
        "tags",
        "file_tags",
    ):
        assert rows[table] > 0, table
    assert result["files"] == {"trash/ledger.jsonl": 1}
    relpaths = [json.loads(ln)["row"]["relpath"] for ln in first if ln.startswith('{"table":"files"')]
    assert {"b64": "Q2Fm6SD/L2ludHJvCi5tcDQ="} in relpaths  # b"Caf\xe9 \xff/intro\n.mp4", exactly
    assert any('"gap_report":"{' in ln for ln in first if ln.startswith('{"table":"runs"'))

    # The same dump on stdout.
    res = d.ctl("export")
    assert res.returncode == 0
    same_dump(res.stdout.decode("ascii").splitlines(), first)

    # Restored into a new catalog, it dumps the same; the trash ledger goes to the state dir given.
    restored = tmp_path / "restored" / "catalog.db"
    res = import_dump(out, str(restored), "--state-dir", str(tmp_path / "restored"))
    assert res.returncode == 0, res.stderr
    assert "restored" in res.stdout and "trash ledger written" in res.stdout
    same_dump(dump_of(restored, tmp_path / "restored"), first)
    assert (tmp_path / "restored" / "trash" / "ledger.jsonl").read_bytes() == (
        d.base / "state" / "trash" / "ledger.jsonl"
    ).read_bytes()

    # A daemon on the restored catalog knows every file as it was: nothing is hashed again.
    before = d.status()["files"]
    d.stop()
    d2 = Daemon(tmp_path / "d2", d.roots, extra=d.extra)
    d2.config.write_text(
        d.config.read_text().replace(d.catalog_url, d2.catalog_url).replace(str(d.base), str(d2.base))
    )
    d2.db.parent.mkdir(parents=True)
    os.replace(restored, d2.db)
    d2.start()
    try:
        status = d2.wait_idle()
        assert status["counters"]["hashed_files"] == 0
        assert status["files"] == before
        found = d2.ctl_json(
            "find", os.fsdecode(os.fsencode(d.roots["studio"]) + b"/Caf\xe9 \xff/intro\n.mp4")
        )
        assert len(found) == 1 and found[0]["status"] == "present"
        assert d2.ctl_json("conflicts")[0]["attribute"] == "age"
    finally:
        d2.kill()


def test_a_catalog_with_rows_is_refused(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon()
    (d.roots["legacy"] / "a.txt").write_text("a")
    d.start()
    d.wait_idle()
    out = tmp_path / "dump.jsonl"
    d.ctl("export", "--out", str(out), check=True)
    res = import_dump(out, d.catalog_url)
    assert res.returncode == 1
    assert "not empty" in res.stderr and "hint:" in res.stderr and res.stderr.count("\n") == 1
    assert len(d.rows()) == 1

    # A dump cut short restores nothing.
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(lines(out)[:-1]) + "\n")
    target = tmp_path / "new.db"
    res = import_dump(cut, str(target))
    assert res.returncode == 1 and "truncated" in res.stderr and "nothing was restored" in res.stderr
    assert sqlite3.connect(target).execute("SELECT count(*) FROM files").fetchone() == (0,)
    # ... and the same catalog then takes the whole dump.
    res = import_dump(out, str(target))
    assert res.returncode == 0, res.stderr
    assert json.loads(import_dump(out, str(tmp_path / "j.db"), "--json").stdout)["rows"]["files"] == 1


def test_export_refuses_what_it_cannot_do(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon()
    d.start()
    res = d.ctl("export", "--json")
    assert res.returncode == 2 and "--json needs --out" in res.stderr.decode()
    res = d.ctl("export", "--out", str(tmp_path / "no" / "such" / "dir" / "x.jsonl"))
    assert res.returncode == 1 and "cannot write" in res.stderr.decode()
    with pytest.raises(DaemonError) as err:
        d.client().stream_next("nope")
    assert err.value.code == "not_found"
    res = d.ctl("backup", "--out", str(d.config))
    assert res.returncode == 1 and "exists" in res.stderr.decode()


def _tree(root: Path, files: int, start: int = 0) -> None:
    for i in range(start, start + files):
        folder = root / f"f{i // 500:03d}"
        folder.mkdir(exist_ok=True)
        (folder / f"{i:06d}.bin").write_bytes(i.to_bytes(4, "little") * 8)


def _consistent(db_lines: list[str]) -> dict[str, int]:
    """Every reference in the dump points at a row of the same dump (one snapshot, not a mix)."""
    files: set[int] = set()
    contents: set[str] = set()
    counts: dict[str, int] = {}
    for ln in db_lines[1:-1]:
        obj = json.loads(ln)
        table, row = obj.get("table"), obj.get("row")
        if table is None:
            continue
        counts[table] = counts.get(table, 0) + 1
        if table == "contents":
            contents.add(row["blake3"])
        elif table == "files":
            files.add(row["id"])
            assert row["blake3"] is None or row["blake3"] in contents
        elif table == "entity_files":
            assert row["file_id"] in files
    assert json.loads(db_lines[-1])["rows"] == {k: counts.get(k, 0) for k in json.loads(db_lines[-1])["rows"]}
    return counts


@pytest.mark.slow
@pytest.mark.sqlite_only
def test_export_and_backup_while_the_daemon_registers(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon()
    root = d.roots["legacy"]
    _tree(root, 2000)
    d.start()
    d.wait_idle()
    # A cold stream of new files while both are taken.
    writer = threading.Thread(target=_tree, args=(root, 12000, 2000))
    writer.start()
    wait_for(lambda: d.status()["counters"]["registered"] > 0, what="registrations")
    out = tmp_path / "during.jsonl"
    backup = tmp_path / "during.db"
    export = d.ctl_json("export", "--out", str(out))
    taken = d.ctl_json("backup", "--out", str(backup))
    writer.join()
    final = d.wait_idle(timeout=120)
    counts = _consistent(lines(out))
    assert export["rows"]["files"] == counts["files"]
    assert 2000 <= counts["files"] <= final["files"]["present"]

    assert taken["integrity"] == "ok" and taken["bytes"] == backup.stat().st_size
    conn = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    backed_up = conn.execute("SELECT count(*) FROM files").fetchone()[0]
    conn.close()
    assert 2000 <= backed_up <= final["files"]["present"]
    assert not list((d.db.parent).glob(".backup-*")), "the staged copy is removed"
    # The copy is a catalog: its own dump is consistent too, and matches its row counts.
    assert _consistent(dump_of(backup))["files"] == backed_up


@pytest.mark.sqlite_only
def test_backup_of_a_quiet_catalog_equals_it(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon()
    _tree(d.roots["legacy"], 300)
    d.start()
    d.wait_idle()
    stale = d.db.parent / ".backup-0123456789abcdef.db"
    stale.write_bytes(b"left by a daemon stopped mid-backup")
    res = d.ctl("backup", "--out", str(tmp_path / "b.db"))
    assert res.returncode == 0, res.stderr
    assert "integrity ok" in res.stdout.decode()
    assert not stale.exists()
    d.stop()
    # The daemon's heartbeat row moves on by itself (every 15 s, and at the stop): the rest of a
    # quiet catalog does not.
    beating = '{"table":"hosts",'
    same_dump(
        [ln for ln in dump_of(tmp_path / "b.db") if not ln.startswith(beating)],
        [ln for ln in dump_of(d.db) if not ln.startswith(beating)],
    )


def test_sqlite_to_postgresql_to_sqlite_is_lossless(  # type: ignore[no-untyped-def]
    make_daemon, tmp_path, pg_url: str
) -> None:
    d = rich_catalog(make_daemon, tmp_path)
    out = tmp_path / "catalog.jsonl"
    d.ctl("export", "--out", str(out), check=True)
    first = lines(out)
    res = import_dump(out, pg_url)
    assert res.returncode == 0, res.stderr
    from_pg = dump_through_engine(pg_url, d.base / "state")
    same_dump(from_pg, first)
    assert json.loads(from_pg[0])["source"] == "postgresql"
    again = tmp_path / "again.jsonl"
    again.write_text("".join(ln + "\n" for ln in from_pg), encoding="ascii")
    res = import_dump(again, str(tmp_path / "back" / "catalog.db"), "--state-dir", str(tmp_path / "back"))
    assert res.returncode == 0, res.stderr
    same_dump(dump_of(tmp_path / "back" / "catalog.db", tmp_path / "back"), first)
    assert import_dump(out, pg_url).returncode == 1, "a PostgreSQL catalog with rows is refused too"


def test_pg_dump_restores_a_postgresql_catalog(  # type: ignore[no-untyped-def]
    make_daemon, tmp_path, pg_server: PgServer, pg_url: str
) -> None:
    """The README's pg_dump line and its restore: the restored catalog dumps the same."""
    d = rich_catalog(make_daemon, tmp_path)
    out = tmp_path / "catalog.jsonl"
    d.ctl("export", "--out", str(out), check=True)
    assert import_dump(out, pg_url).returncode == 0
    source_db = make_url(pg_url).database
    assert source_db
    archive = tmp_path / "catalog.pgdump"
    env = pg_server.env()
    subprocess.run(
        [
            pg_server.tool("pg_dump"),
            "--format=custom",
            "--file",
            str(archive),
            *pg_server.libpq_args(source_db),
        ],
        check=True,
        env=env,
        timeout=120,
    )
    target = pg_server.create_database()
    try:
        subprocess.run(
            [
                pg_server.tool("pg_restore"),
                "--no-owner",
                "--exit-on-error",
                *pg_server.libpq_args(target),
                str(archive),
            ],
            check=True,
            env=env,
            timeout=120,
        )
        same_dump(dump_through_engine(pg_server.url(target), d.base / "state"), lines(out))
    finally:
        pg_server.drop_database(target)


def test_a_daemon_on_postgresql_streams_its_export(make_daemon, tmp_path, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    """Through the socket, in several pieces: the PostgreSQL snapshot stays open across pulls."""
    from bench.export import make_catalog

    seeded = tmp_path / "seed.db"
    make_catalog(seeded, 6000)
    first = dump_of(seeded)
    dump = tmp_path / "seed.jsonl"
    dump.write_text("".join(ln + "\n" for ln in first), encoding="ascii")
    assert import_dump(dump, pg_url).returncode == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    # Media off: the seeded rows have no files behind them to analyse.
    d = make_daemon({"empty": empty}, extra="[media]\nenabled = false\n", catalog_url=pg_url)
    d.start()
    out = tmp_path / "from-pg.jsonl"
    result = d.ctl_json("export", "--out", str(out))
    got = lines(out)
    assert json.loads(got[0])["source"] == "postgresql" and result["bytes"] > 2 << 20, "several pieces"
    counts = _consistent(got)
    theirs = json.loads(first[-1])["rows"]
    assert counts["files"] == theirs["files"] and counts["faces"] == theirs["faces"]
    # The seeded rows come out exactly as they went in (the daemon only added its root and runs,
    # and adopted the seeded root and runs, which had no host, as its own).
    seeded_rows = {ln for ln in first[1:-1]}
    adopted = {ln for ln in first if ln.startswith(('{"table":"runs"', '{"table":"roots"'))}
    assert seeded_rows - set(got) <= adopted
    res = d.ctl("backup", "--out", str(tmp_path / "b.db"))
    assert res.returncode == 1 and "pg_dump" in res.stderr.decode()
