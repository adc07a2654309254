"""Several servers, one catalog (issue 18): registrations per second into PostgreSQL from one
daemon and from two at once, beside the same tree into SQLite.

Each server's tree is a characters tree of small files (N = 20,000 per server; 2,000 with
--quick), with the same character names on both servers, so the two daemons create and update
the same entities at once. Timed from the daemon's start to the moment `importctl status` counts
every file present with nothing queued: hashing, registration and entity mapping included.

  - SQLite: one daemon, the embedded default (the reference);
  - PostgreSQL, one daemon: the same tree into a new database;
  - PostgreSQL, two daemons (hosts `alpha` and `beta`, each with its own tree) at once into one
    new database: registrations of both per second.

The PostgreSQL server is a throwaway cluster from Debian's binaries with fsync on (as a real
server runs), on the same machine and disk; `IMPORTD_TEST_PG_URL` points at another one.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.core import BenchError, find_importd, toml_str
from bench.report import INFO, Check

CHARACTERS_PER_100_FILES = 10


def _tree(root: Path, files: int, scene_prefix: str) -> None:
    """`files` small files: characters of 10 scene videos each, names shared between servers."""
    per = 100 // CHARACTERS_PER_100_FILES
    for i in range(files):
        folder = root / f"Character {i // per:05d}"
        if i % per == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{scene_prefix}{i % per}.mp4").write_bytes(os.urandom(512) + i.to_bytes(8, "big"))


def _config(home: Path, host: str, url: str, root: Path) -> Path:
    config = home / "importd.toml"
    home.mkdir(parents=True, exist_ok=True)
    config.write_text(
        "\n".join(
            [
                f"host = {toml_str(host)}",
                "settle_seconds = 0.5",
                f"state_dir = {toml_str(str(home / 'state'))}",
                "[media]",
                "enabled = false",
                "[catalog]",
                f"url = {toml_str(url)}",
                "[control]",
                f"socket = {toml_str(str(home / 'control.sock'))}",
                "[[roots]]",
                'name = "media"',
                f"path = {toml_str(str(root))}",
                'rules = "characters"',
            ]
        )
        + "\n"
    )
    return config


def _done(socket: Path, files: int) -> bool:
    from importctl.client import Client

    if not socket.exists():
        return False
    try:
        status = Client(socket, timeout=5.0).status()
    except Exception:
        return False
    q = status["queue"]
    busy = q["settling"] or q["hashing"] or q["writing"] or q.get("mapping", 0)
    scanning = any(r["state"] == "scanning" for r in status["roots"])
    return status["files"]["present"] == files and not busy and not scanning


def _import(work: Path, runs: list[tuple[str, Path, int]], url_of: Any, timeout_s: float = 1800.0) -> float:
    """Start one daemon per (host, root, files) at once on the catalog `url_of(home)`; seconds
    until every one has registered its tree."""
    importd = find_importd()
    procs = []
    homes = []
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFY_SOCKET", "IMPORTD_SOCKET", "IMPORTD_CATALOG_URL")
    }
    started = time.monotonic()
    for host, root, _ in runs:
        home = work / f"home-{host}"
        config = _config(home, host, url_of(home), root)
        log = open(home / "importd.log", "wb")  # noqa: SIM115  (handed to the child)
        procs.append(
            subprocess.Popen([str(importd), "run", "--config", str(config)], stdout=log, stderr=log, env=env)
        )
        log.close()
        homes.append(home)
    try:
        pending = {i for i in range(len(runs))}
        while pending:
            if time.monotonic() - started > timeout_s:
                raise BenchError(f"registration did not finish within {timeout_s:.0f}s")
            for i in list(pending):
                if procs[i].poll() is not None:
                    raise BenchError(
                        f"importd exited with {procs[i].returncode}: see {homes[i] / 'importd.log'}"
                    )
                if _done(homes[i] / "control.sock", runs[i][2]):
                    pending.discard(i)
            time.sleep(0.1)
        return time.monotonic() - started
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def bench_site(work_dir: Path, quick: bool = False) -> dict[str, Any]:
    files = 2_000 if quick else 20_000
    alpha, beta = work_dir / "alpha", work_dir / "beta"
    _tree(alpha, files, "intro ")
    _tree(beta, files, "dance ")
    sqlite_s = _import(
        work_dir / "sqlite", [("alpha", alpha, files)], lambda home: f"sqlite:///{home}/catalog.db"
    )
    sqlite_rate = files / sqlite_s
    checks = [Check("site: registrations into SQLite, one daemon", round(sqlite_rate, 1), "files/s", INFO)]
    figures: dict[str, Any] = {"files_per_server": files, "sqlite_files_per_s": round(sqlite_rate, 1)}

    from tests import pg

    reason = pg.unavailable()
    if reason:
        figures["postgresql"] = f"skipped: {reason}"
        checks.append(Check("site: PostgreSQL", None, "files/s", INFO, note=f"skipped: {reason}"))
        figures["checks"] = [c.as_dict() for c in checks]
        return figures
    url = os.environ.get(pg.ENV_URL)
    cluster = None
    if url:
        server = pg._from_env(url)
    else:
        found = pg.bin_dir()
        assert found is not None
        cluster = pg.Cluster(found)
        server = cluster.start(durable=True)
    try:
        one_db, two_db = server.create_database(), server.create_database()
        one_s = _import(work_dir / "pg-one", [("alpha", alpha, files)], lambda home: server.url(one_db))
        two_s = _import(
            work_dir / "pg-two",
            [("alpha", alpha, files), ("beta", beta, files)],
            lambda home: server.url(two_db),
        )
    finally:
        if cluster is not None:
            cluster.stop()
    one_rate, two_rate = files / one_s, 2 * files / two_s
    figures.update(
        {
            "postgresql_one_daemon_files_per_s": round(one_rate, 1),
            "postgresql_two_daemons_files_per_s": round(two_rate, 1),
        }
    )
    checks += [
        Check(
            "site: registrations into PostgreSQL, one daemon",
            round(one_rate, 1),
            "files/s",
            INFO,
            baseline=round(sqlite_rate, 1),
            baseline_name="the same daemon into SQLite",
        ),
        Check(
            "site: registrations into PostgreSQL, two daemons at once (both trees)",
            round(two_rate, 1),
            "files/s",
            INFO,
            baseline=round(sqlite_rate, 1),
            baseline_name="one daemon into SQLite",
        ),
    ]
    figures["checks"] = [c.as_dict() for c in checks]
    return figures
