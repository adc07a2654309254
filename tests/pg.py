"""A PostgreSQL server for the tests that need one.

`IMPORTD_TEST_PG_URL` (any database on a server where that user may CREATE DATABASE) when set;
else a throwaway cluster started from Debian's binaries (/usr/lib/postgresql/*/bin: `initdb`,
`pg_ctl`) in a temp folder, listening on a Unix socket only, run as the `postgres` user when the
tests run as root (PostgreSQL refuses root). Without either, the tests that use `pg_server` or
`pg_url` are skipped, with the reason. Each test gets a database of its own (`pg_url`).

`python -m tests.pg [PYTEST ARGS]` (the second half of `make test`) runs the integration suite
again with every daemon on a PostgreSQL catalog (IMPORTD_TEST_CATALOG=postgresql), on one server
it starts for the pass (and hands its workers as `IMPORTD_TEST_PG_URL`), or prints
"PostgreSQL: skipped (why)" and exits 0 when no server can be had; with IMPORTD_TEST_PG_REQUIRED=1
(as CI sets it) that is a failure instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

ENV_URL = "IMPORTD_TEST_PG_URL"


@dataclass(frozen=True)
class PgServer:
    """Where the server is: a Unix socket folder or a host, the user, the password if any."""

    host: str
    port: int
    user: str
    password: str | None
    bin_dir: Path | None  # where pg_dump and pg_restore are, when known

    def url(self, database: str) -> str:
        auth = self.user + (f":{self.password}" if self.password else "")
        if self.host.startswith("/"):
            return f"postgresql://{auth}@/{database}?host={self.host}&port={self.port}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{database}"

    def libpq_args(self, database: str) -> list[str]:
        """`-h -p -U -d` for pg_dump, pg_restore and psql (the password goes in PGPASSWORD)."""
        return ["-h", self.host, "-p", str(self.port), "-U", self.user, "-d", database]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def tool(self, name: str) -> str:
        if self.bin_dir is not None and (self.bin_dir / name).exists():
            return str(self.bin_dir / name)
        found = shutil.which(name)
        if found is None:
            pytest.skip(f"{name} is not installed")
        return found

    def create_database(self) -> str:
        name = "importd_test_" + secrets.token_hex(6)
        asyncio.run(self._admin(f'CREATE DATABASE "{name}"'))
        return name

    def drop_database(self, name: str) -> None:
        asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    async def _admin(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, database="postgres"
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()


def bin_dir() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        path = Path(candidate)
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _from_env(url: str) -> PgServer:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    host = u.host or str(u.query.get("host") or "/run/postgresql")
    return PgServer(host, u.port or 5432, u.username or "postgres", u.password, bin_dir())


class Cluster:
    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.base = Path(tempfile.mkdtemp(prefix="importd-pg-"))
        self.data = self.base / "data"
        self.prefix: list[str] = []
        self.user = pwd.getpwuid(os.getuid()).pw_name
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")  # KeyError: no postgres user
            os.chown(self.base, account.pw_uid, account.pw_gid)
            self.prefix = [
                "setpriv",
                f"--reuid={account.pw_uid}",
                f"--regid={account.pw_gid}",
                "--clear-groups",
            ]
            self.user = "postgres"
        # Anyone may reach the socket in it (the tests' daemons that drop root's DAC override too);
        # the data folder inside stays the server's alone (initdb makes it 0700).
        self.base.chmod(0o755)

    def run(self, *args: str) -> None:
        subprocess.run([*self.prefix, *args], check=True, capture_output=True, timeout=120, cwd=self.base)

    def start(self, durable: bool = False) -> PgServer:
        """`durable`: fsync as a real server does (the benchmarks); the tests skip it."""
        self.run(
            str(self.bin_dir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user,
            "--no-sync", "-E", "UTF8", "--locale=C.UTF-8",
        )  # fmt: skip
        options = f"-k {self.base} -c listen_addresses=''"
        if not durable:
            options += " -c fsync=off -c full_page_writes=off"
        self.run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
            str(self.base / "server.log"), "-w", "-t", "60", "start",
        )  # fmt: skip
        return PgServer(str(self.base), 5432, self.user, None, self.bin_dir)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


def _skip_reason() -> str | None:
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return "asyncpg is not installed (pip install '.[postgresql]')"
    return None


def unavailable() -> str | None:
    """Why no server can be had (the fixture's own reasons, checked without starting one), or None."""
    reason = _skip_reason()
    if reason or os.environ.get(ENV_URL):
        return reason
    if bin_dir() is None:
        return f"no initdb/pg_ctl (apt-get install postgresql) and {ENV_URL} unset"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server as"
    return None


def main(args: list[str]) -> int:
    reason = unavailable()
    if reason:
        print(f"PostgreSQL: skipped ({reason})", flush=True)
        return 1 if os.environ.get("IMPORTD_TEST_PG_REQUIRED") == "1" else 0
    env = dict(os.environ, IMPORTD_TEST_CATALOG="postgresql")
    # Building and installing the wheel (`install`), and the tests that run no daemon on the tests'
    # catalog (`catalog_free`), would run here just as they did on SQLite.
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "not install and not catalog_free", *args]
    cmd.append("tests/integration")
    url = os.environ.get(ENV_URL)
    if url:
        print(f"PostgreSQL: the integration suite on {url}", flush=True)
        return subprocess.run(cmd, env=env).returncode
    found = bin_dir()
    assert found is not None  # unavailable() said so
    print(f"PostgreSQL: the integration suite on a throwaway server from {found}", flush=True)
    # One server for the whole pass, started here: the parallel workers (pytest-xdist) share it
    # through the URL, each test on a database of its own, rather than each starting its own.
    cluster = Cluster(found)
    try:
        try:
            server = cluster.start()
        except subprocess.CalledProcessError as exc:
            print(f"PostgreSQL: the server did not start: {exc.stderr.decode(errors='replace')}")
            return 1
        env[ENV_URL] = server.url("postgres")
        return subprocess.run(cmd, env=env).returncode
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def _skip(reason: str) -> NoReturn:
    # Where PostgreSQL is the point of the run, no server is a failure rather than a skip.
    if os.environ.get("IMPORTD_TEST_CATALOG") == "postgresql":
        pytest.fail(f"no PostgreSQL server: {reason}")
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    reason = _skip_reason()
    if reason:
        _skip(reason)
    url = os.environ.get(ENV_URL)
    if url:
        yield _from_env(url)
        return
    found = bin_dir()
    if found is None:
        _skip(f"no initdb/pg_ctl (apt-get install postgresql) and {ENV_URL} unset")
    try:
        cluster = Cluster(found)
    except KeyError:
        _skip("running as root and there is no postgres user to run it as")
    try:
        server = cluster.start()
    except subprocess.CalledProcessError as exc:
        cluster.stop()
        _skip(f"the server did not start: {exc.stderr.decode(errors='replace')}")
    try:
        yield server
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A new, empty database on the test server, dropped after the test."""
    name = pg_server.create_database()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_database(name)
