"""Shared fixtures: a real importd process, real importctl, real files in tmp_path."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from importctl.client import Client

# The PostgreSQL server fixtures (pg_server, pg_url), for any test that asks for them.
pytest_plugins = ["tests.pg"]

BIN = Path(sys.executable).parent
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"

# `IMPORTD_TEST_CATALOG=postgresql` runs every daemon the tests start on a PostgreSQL catalog (a
# new database per daemon on the server tests/pg.py gives) instead of a SQLite file.
CATALOG_ENV = "IMPORTD_TEST_CATALOG"
ON_POSTGRESQL = os.environ.get(CATALOG_ENV, "sqlite") == "postgresql"


# `make test` runs the tests in parallel processes (pytest-xdist, `-n`). A test marked `alone` runs
# with no other test beside it: it changes something machine-wide (an inotify limit) or times what
# it measures against a deadline that a neighbour's daemon start-up could eat. The workers share a
# readers-writer lock, two flock(2) files in a folder the controller makes: every test holds the
# `tests` file shared; an `alone` test holds it exclusive. The `turn` file, taken before either,
# queues an `alone` test ahead of the tests that come after it (flock alone lets readers starve a
# writer).
LOCKS_ENV = "IMPORTD_TEST_LOCKS"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: tests of SQLite itself (its file, WAL, backup API); skipped on PostgreSQL"
    )
    config.addinivalue_line(
        "markers",
        "catalog_free: runs no daemon on the tests' catalog (or names its own SQLite one): the"
        " PostgreSQL pass (python -m tests.pg) leaves it out, it would run the same test again",
    )
    config.addinivalue_line(
        "markers", "alone: runs with no other test beside it when the suite runs in parallel (xdist)"
    )
    if not hasattr(config, "workerinput") and config.getoption("numprocesses", None):
        # The controller, before it starts the workers (they inherit its environment).
        os.environ[LOCKS_ENV] = tempfile.mkdtemp(prefix="importd-test-locks-")


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and os.environ.get(LOCKS_ENV):
        shutil.rmtree(os.environ.pop(LOCKS_ENV), ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not ON_POSTGRESQL:
        return
    skip = pytest.mark.skip(reason="tests SQLite's own file (IMPORTD_TEST_CATALOG=postgresql)")
    for item in items:
        if item.get_closest_marker("sqlite_only"):
            item.add_marker(skip)


def _utf8(value: object) -> object:
    """`value` with every string UTF-8-encodable: a surrogate (a name that is not UTF-8, decoded
    with surrogateescape, in a log line or an assertion) as a backslash escape."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return value.encode(errors="backslashreplace").decode()
        return value
    if isinstance(value, dict):
        return {k: _utf8(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_utf8(v) for v in value)
    return value


@pytest.hookimpl(wrapper=True)
def pytest_report_to_serializable(config: pytest.Config, report: object) -> Generator[None, object, object]:
    # A worker sends each report to the controller as UTF-8 (execnet): a report holding a surrogate
    # (a test's captured log of such a name) killed the worker instead of reaching the terminal.
    return _utf8((yield))


_lock_files: dict[str, int] = {}


def _lock(name: str, how: int) -> int:
    if name not in _lock_files:
        _lock_files[name] = os.open(Path(os.environ[LOCKS_ENV]) / name, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(_lock_files[name], how)
    return _lock_files[name]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    # Around setup, call and teardown: a module's fixtures are made in its first test's setup.
    if not (hasattr(item.config, "workerinput") and os.environ.get(LOCKS_ENV)):
        return (yield)
    alone = item.get_closest_marker("alone") is not None
    turn = _lock("turn", fcntl.LOCK_EX)
    if not alone:
        fcntl.flock(turn, fcntl.LOCK_UN)
    tests = _lock("tests", fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
    try:
        return (yield)
    finally:
        fcntl.flock(tests, fcntl.LOCK_UN)
        if alone:
            fcntl.flock(turn, fcntl.LOCK_UN)


class Row(tuple):  # type: ignore[type-arg]
    """A result row read by index, by column name, or as a dict (dict(row)), from either catalog."""

    _keys: tuple[str, ...]

    def __new__(cls, values: Any, keys: tuple[str, ...]) -> Row:
        row = super().__new__(cls, values)
        row._keys = keys
        return row

    def keys(self) -> tuple[str, ...]:
        return self._keys

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._keys.index(key))
        return tuple.__getitem__(self, key)


def _pg_placeholders(query: str) -> str:
    """sqlite3's `?` placeholders as asyncpg's `$1, $2, ...` (the tests' SQL has no `?` in strings)."""
    parts = query.split("?")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))


def catalog_sql(url: str, query: str, params: tuple[Any, ...] = ()) -> list[Row]:
    """One statement on a catalog (a `sqlite:///` file or a `postgresql://` URL), committed; its rows."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///") :], timeout=10)
        try:
            cur = conn.execute(query, params)
            keys = tuple(c[0] for c in cur.description or ())
            rows = [Row(r, keys) for r in cur.fetchall()]
            conn.commit()
            return rows
        finally:
            conn.close()
    import asyncio

    import asyncpg

    async def run() -> list[Row]:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            records = await conn.fetch(_pg_placeholders(query), *params)
            return [Row(tuple(r.values()), tuple(r.keys())) for r in records]
        finally:
            await conn.close()

    return asyncio.run(run())


def wait_for(
    predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # the daemon may be between states; try again
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what or predicate}: last={last!r}")


class Daemon:
    """One importd process with its own config, catalog and socket under a temp dir."""

    def __init__(
        self,
        base: Path,
        roots: dict[str, Path],
        settle: float = 0.3,
        extra: str = "",
        catalog_url: str | None = None,
        host: str | None = None,
    ) -> None:
        self.base = base
        self.host = host  # the config's `host` (the machine's name when None)
        self.roots = roots
        self.settle = settle
        self.extra = extra
        self.socket = base / "run" / "control.sock"
        self.db = base / "state" / "catalog.db"  # the SQLite file, when the catalog is SQLite
        self.catalog_url = catalog_url or f"sqlite:///{self.db}"
        self.config = base / "importd.toml"
        self.log = base / "importd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        base.mkdir(parents=True, exist_ok=True)
        self.write_config()

    def write_config(self, roots_toml: str | None = None) -> None:
        if roots_toml is None:
            roots_toml = "".join(
                f'\n[[roots]]\nname = "{name}"\npath = "{path}"\n' for name, path in self.roots.items()
            )
        self.config.write_text(
            encoding="utf-8",
            data=(f'host = "{self.host}"\n' if self.host else "")
            + textwrap.dedent(
                f"""\
                settle_seconds = {self.settle}
                hash_workers = 2
                log_level = "debug"
                state_dir = "{self.base / "state"}"
                [catalog]
                url = "{self.catalog_url}"
                [control]
                socket = "{self.socket}"
                """
            )
            + self.extra
            + roots_toml,
        )

    def start(self, wait: bool = True, drop_dac: bool = False) -> Daemon:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("NOTIFY_SOCKET", "IMPORTD_SOCKET", "IMPORTD_CATALOG_URL")
        }
        logf = open(self.log, "ab")  # noqa: SIM115  (handed to the child, closed right after)
        cmd = [str(BIN / "importd"), "run", "--config", str(self.config)]
        if drop_dac:
            # Root ignores permission bits; without these two capabilities it obeys them.
            caps = "-dac_override,-dac_read_search"
            cmd = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *cmd]
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
        logf.close()
        if wait:
            wait_for(
                lambda: self.socket.exists() and self.client().status(), timeout=60, what="daemon socket"
            )
        return self

    def client(self, timeout: float = 5.0) -> Client:
        return Client(self.socket, timeout=timeout)

    def status(self) -> dict[str, Any]:
        return self.client().status()

    def idle(self) -> bool:
        s = self.status()
        if self.roots and not s["roots"]:
            # The socket answers while the daemon still starts: before its roots are added,
            # empty queues say nothing (a test read an empty catalog as the import's end).
            return False
        q = s["queue"]
        busy = q["settling"] or q["hashing"] or q["writing"] or q.get("mapping", 0)
        scanning = any(r["state"] == "scanning" for r in s["roots"])
        return not busy and not scanning

    def wait_idle(self, timeout: float = 30.0) -> dict[str, Any]:
        wait_for(self.idle, timeout=timeout, what="daemon idle")
        time.sleep(0.05)
        wait_for(self.idle, timeout=timeout, what="daemon idle")
        return self.status()

    def ctl(
        self, *args: str, check: bool = False, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        res = subprocess.run(
            [str(BIN / "importctl"), "--socket", str(self.socket), *args],
            capture_output=True,
            timeout=60,
            input=input,
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"importctl {args} -> {res.returncode}: {res.stderr.decode(errors='replace')}"
            )
        return res

    def ctl_json(self, *args: str) -> Any:
        res = self.ctl(*args, "--json", check=True)
        return json.loads(res.stdout)

    def sql(self, query: str, *params: Any) -> list[Row]:
        """One statement on this daemon's catalog, SQLite or PostgreSQL (`?` placeholders)."""
        return catalog_sql(self.catalog_url, query, params)

    def rows(self, where: str = "1=1") -> list[Row]:
        return self.sql(f"SELECT * FROM files WHERE {where} ORDER BY id")

    def rows_at(self, relpath: bytes) -> list[Row]:
        return self.sql("SELECT * FROM files WHERE relpath = ? ORDER BY id", relpath)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        self.proc = None
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def new_catalog(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """One catalog URL for a fixture of any scope: a new PostgreSQL database (dropped after) under
    IMPORTD_TEST_CATALOG=postgresql, else None (the daemon's own SQLite file)."""
    if not ON_POSTGRESQL:
        yield None
        return
    server = request.getfixturevalue("pg_server")
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


@pytest.fixture
def catalog_url_for(request: pytest.FixtureRequest) -> Iterator[Callable[[], str | None]]:
    """A new catalog URL per call: a new PostgreSQL database under IMPORTD_TEST_CATALOG=postgresql,
    else None (the daemon's own SQLite file)."""
    made: list[str] = []
    server = request.getfixturevalue("pg_server") if ON_POSTGRESQL else None

    def new() -> str | None:
        if server is None:
            return None
        name = server.create_database()
        made.append(name)
        return server.url(name)

    yield new
    for name in made:
        assert server is not None
        server.drop_database(name)


@pytest.fixture
def make_daemon(tmp_path: Path, catalog_url_for: Callable[[], str | None]) -> Iterator[Callable[..., Daemon]]:
    made: list[Daemon] = []

    def make(roots: dict[str, Path] | None = None, **kw: Any) -> Daemon:
        if roots is None:
            root = tmp_path / "legacy"
            root.mkdir(exist_ok=True)
            roots = {"legacy": root}
        kw.setdefault("catalog_url", catalog_url_for())
        d = Daemon(tmp_path / f"d{len(made)}", roots, **kw)
        d.base.mkdir(parents=True, exist_ok=True)
        made.append(d)
        return d

    yield make
    for d in made:
        d.kill()


def blake3_of(data: bytes) -> str:
    import blake3

    return blake3.blake3(data).hexdigest()
