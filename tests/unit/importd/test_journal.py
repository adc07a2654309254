"""journal.py against real things: AF_UNIX datagram sockets, real files as journal streams, and
systemd-analyze for the unit. Only journald itself is faked (its `sendv`): CI has none."""

from __future__ import annotations

import array
import fcntl
import io
import logging
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from importd.journal import (
    LOGGER_NAME,
    LogMode,
    Notifier,
    choose_log_mode,
    escape,
    format_fields,
    parse_log_level,
    run_watchdog,
    setup_logging,
    syslog_priority,
)

REPO = Path(__file__).resolve().parents[3]
VERIFY = REPO / "units" / "verify.sh"
UNIT = REPO / "units" / "importd.service"

# A name as it comes back from os.listdir() on a tree copied from an old Windows share.
ODD_PATH = os.fsdecode(b"/srv/legacy/Clip 01\xff\nfinal.mov")
ODD_PATH_SHOWN = "/srv/legacy/Clip 01\\xff\\nfinal.mov"

SYSTEMD_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "INVOCATION_ID")


@pytest.fixture(autouse=True)
def outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests may themselves run under systemd (a CI runner service): start from nothing."""
    for name in (*SYSTEMD_ENV, "IMPORTD_NO_SYSTEMD_PYTHON"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def restore_logger() -> Iterator[None]:
    logger = logging.getLogger(LOGGER_NAME)
    handlers, level = list(logger.handlers), logger.level
    yield
    for handler in logger.handlers:
        if handler not in handlers:
            logger.removeHandler(handler)
            handler.close()
    logger.setLevel(level)


# ---------------------------------------------------------------------------------------------
# sd_notify


@pytest.fixture(params=["datagram", "libsystemd"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "libsystemd":
        pytest.importorskip("systemd.daemon")
    else:
        monkeypatch.setenv("IMPORTD_NO_SYSTEMD_PYTHON", "1")
    return str(request.param)


@pytest.fixture(params=["path", "abstract"])
def listener(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[socket.socket]:
    """A bound datagram socket standing in for systemd, with $NOTIFY_SOCKET pointing at it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify")
        sock.bind(address)
    else:
        name = f"importd-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        address = "@" + name
    sock.settimeout(2.0)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    with sock:
        yield sock


def received(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def drain(sock: socket.socket) -> list[str]:
    sock.setblocking(False)
    messages = []
    while True:
        try:
            messages.append(received(sock))
        except BlockingIOError:
            return messages


@pytest.mark.parametrize(
    ("method", "expected"),
    [("ready", "READY=1"), ("stopping", "STOPPING=1"), ("watchdog", "WATCHDOG=1")],
)
def test_each_method_sends_its_datagram(
    listener: socket.socket, backend: str, method: str, expected: str
) -> None:
    notifier = Notifier.from_env()
    assert notifier.enabled
    assert notifier.via_libsystemd is (backend == "libsystemd")
    assert getattr(notifier, method)() is True
    assert received(listener) == expected


def test_status_is_sent_as_one_escaped_line(listener: socket.socket, backend: str) -> None:
    assert Notifier.from_env().status(f"hashing {ODD_PATH}") is True
    assert received(listener) == f"STATUS=hashing {ODD_PATH_SHOWN}"


def test_reloading_carries_the_monotonic_clock(listener: socket.socket, backend: str) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert Notifier.from_env().reloading() is True
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    match = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)", received(listener))
    assert match is not None
    assert before <= int(match[1]) <= after


def test_without_notify_socket_every_method_is_a_no_op(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    notifier = Notifier.from_env()
    assert not notifier.enabled
    assert [notifier.ready(), notifier.status("x"), notifier.reloading(), notifier.stopping()] == [False] * 4
    assert notifier.watchdog() is False
    assert notifier.watchdog_interval() is None


def test_a_send_failure_is_logged_not_raised(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    with caplog.at_level(logging.DEBUG, logger="importd.journal"):
        assert Notifier.from_env().ready() is False
    assert "READY=1" in caplog.text and "failed" in caplog.text


def test_an_address_family_it_cannot_speak_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Notifier(address="vsock:2:1234").ready() is False


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "<self>"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # systemd meant someone else
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "me"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_period_and_only_for_this_pid(
    env: dict[str, str], interval: float | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    for name, value in env.items():
        monkeypatch.setenv(name, str(os.getpid()) if value == "<self>" else value)
    assert Notifier.from_env().watchdog_interval() == interval


def test_watchdog_pid_is_checked_when_asked_so_a_forked_child_does_not_ping() -> None:
    notifier = Notifier(address="/run/notify", watchdog_usec=2_000_000, watchdog_pid=os.getpid())
    assert notifier.watchdog_interval() == 1.0
    assert (
        Notifier(
            address="/run/notify", watchdog_usec=2_000_000, watchdog_pid=os.getpid() + 1
        ).watchdog_interval()
        is None
    )


def test_run_watchdog_pings_at_half_the_period(
    listener: socket.socket, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A ping every 50 ms for 0.32 s: at most 8 pings, under the kernel's default queue of 10
    # datagrams (net.unix.max_dgram_qlen); past that libsystemd's sd_notify blocks until read.
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    notifier = Notifier.from_env()

    async def for_a_while() -> None:
        with anyio.move_on_after(0.32):
            await run_watchdog(notifier)

    started = time.monotonic()
    anyio.run(for_a_while)
    elapsed = time.monotonic() - started
    pings = drain(listener)
    assert 3 <= len(pings) <= elapsed / 0.05 + 1
    assert set(pings) == {"WATCHDOG=1"}


def test_a_full_queue_delays_a_datagram_boundedly_then_gives_up(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd not reading must not freeze the event loop that sends the pings."""
    monkeypatch.setenv("IMPORTD_NO_SYSTEMD_PYTHON", "1")
    monkeypatch.setattr("importd.journal._NOTIFY_TIMEOUT_S", 0.05)
    queue = int(Path("/proc/sys/net/unix/max_dgram_qlen").read_text())
    if queue > 1000:
        pytest.skip(f"net.unix.max_dgram_qlen is {queue}: too long a queue to fill in a unit test")
    notifier = Notifier.from_env()
    started = time.monotonic()
    results = [notifier.watchdog() for _ in range(queue + 4)]
    assert time.monotonic() - started < 5
    assert results[0] is True and results[-1] is False
    assert drain(listener)[0] == "WATCHDOG=1"


def test_run_watchdog_returns_at_once_when_the_watchdog_is_not_ours(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000")
    monkeypatch.setenv("WATCHDOG_PID", "1")

    async def bounded() -> None:
        with anyio.fail_after(1):
            await run_watchdog(Notifier.from_env())

    anyio.run(bounded)
    assert drain(listener) == []


# ---------------------------------------------------------------------------------------------
# Levels


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("debug", logging.DEBUG),
        ("INFO", logging.INFO),
        ("Warning", logging.WARNING),
        ("error", 40),
        ("critical", 50),
    ],
)
def test_parse_log_level(name: str, level: int) -> None:
    assert parse_log_level(name) == level


@pytest.mark.parametrize("name", ["verbose", "", "warn", "10"])
def test_an_invalid_level_is_a_value_error_naming_it_and_the_choices(name: str) -> None:
    with pytest.raises(
        ValueError, match=rf"invalid log level '{name}'.*debug, info, warning, error, critical"
    ):
        parse_log_level(name)


def test_setup_logging_refuses_a_bad_level_before_touching_anything() -> None:
    before = list(logging.getLogger(LOGGER_NAME).handlers)
    with pytest.raises(ValueError, match="loud"):
        setup_logging("loud", stream=io.StringIO(), environ={})
    assert logging.getLogger(LOGGER_NAME).handlers == before


@pytest.mark.parametrize(
    ("level", "priority"),
    [
        (logging.DEBUG, 7),
        (logging.INFO, 6),
        (25, 4),
        (logging.WARNING, 4),
        (logging.ERROR, 3),
        (logging.CRITICAL, 2),
    ],
)
def test_syslog_priority(level: int, priority: int) -> None:
    assert syslog_priority(level) == priority


# ---------------------------------------------------------------------------------------------
# Choosing the destination


@pytest.fixture
def journal_file(tmp_path: Path) -> Iterator[tuple[io.TextIOWrapper, str]]:
    """A real file standing in for journald's stderr stream, and the JOURNAL_STREAM naming it."""
    with open(tmp_path / "journal-stream", "w", encoding="utf-8") as stream:
        status = os.fstat(stream.fileno())
        yield stream, f"{status.st_dev}:{status.st_ino}"


def test_stderr_on_the_journal_stream_means_the_journal_with_or_without_systemd_python(
    journal_file: tuple[io.TextIOWrapper, str], tmp_path: Path
) -> None:
    stream, journal_stream = journal_file
    environ = {"JOURNAL_STREAM": journal_stream, "IMPORTD_NO_SYSTEMD_PYTHON": "1"}
    assert choose_log_mode(environ, stream) is LogMode.JOURNAL
    # journald's socket out of reach: priority prefixes on its stream instead.
    missing = {**environ, "IMPORTD_JOURNAL_SOCKET": str(tmp_path / "no-journal")}
    assert setup_logging("info", stream=stream, environ=missing) is LogMode.PREFIXED


def test_journal_stream_naming_another_file_means_by_hand(journal_file: tuple[io.TextIOWrapper, str]) -> None:
    stream, journal_stream = journal_file
    device, inode = journal_stream.split(":")
    assert choose_log_mode({"JOURNAL_STREAM": f"{device}:{int(inode) + 1}"}, stream) is LogMode.PLAIN
    assert choose_log_mode({"JOURNAL_STREAM": "garbage"}, stream) is LogMode.PLAIN
    assert choose_log_mode({"JOURNAL_STREAM": journal_stream}, io.StringIO()) is LogMode.PLAIN


def test_redirected_stderr_under_systemd_without_the_journal_socket_stays_plain(
    journal_file: tuple[io.TextIOWrapper, str], tmp_path: Path
) -> None:
    stream, _ = journal_file
    environ = {
        "INVOCATION_ID": "0f",
        "JOURNAL_STREAM": "1:2",
        "IMPORTD_NO_SYSTEMD_PYTHON": "1",
        "IMPORTD_JOURNAL_SOCKET": str(tmp_path / "no-journal"),
    }
    assert setup_logging("info", stream=stream, environ=environ) is LogMode.PLAIN


def test_under_journald_means_the_native_journal(journal_file: tuple[io.TextIOWrapper, str]) -> None:
    stream, journal_stream = journal_file
    assert choose_log_mode({"JOURNAL_STREAM": journal_stream}, stream) is LogMode.JOURNAL
    # stderr redirected by the unit, stdout still on the journal: the native socket still works.
    assert choose_log_mode({"INVOCATION_ID": "0f", "JOURNAL_STREAM": "1:2"}, stream) is LogMode.JOURNAL
    assert choose_log_mode({"JOURNAL_STREAM": "1:2"}, stream) is LogMode.PLAIN


# ---------------------------------------------------------------------------------------------
# By hand


def log_settled(**extra: object) -> None:
    logging.getLogger("importd.pipeline").info("settled %s", extra.get("path", "-"), extra=extra)


PLAIN_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (?P<level>\S+) +(?P<rest>.*)")


def test_plain_lines_on_stderr_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert setup_logging("info", environ={}) is LogMode.PLAIN
    log_settled(root="/srv/legacy", path="/srv/legacy/a.mov", hash="af1349b9")
    logging.getLogger("importd.pipeline").debug("not at info")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    match = PLAIN_LINE.fullmatch(lines[0])
    assert match is not None, lines[0]
    assert lines[0][23:30] == " INFO  "
    assert match["rest"] == (
        "importd.pipeline: settled /srv/legacy/a.mov root=/srv/legacy path=/srv/legacy/a.mov hash=af1349b9"
    )


def test_odd_paths_never_split_a_line_nor_break_the_encoder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lone_surrogate = "/srv/\ud800"  # not from surrogateescape: cannot be encoded any way
    with open(tmp_path / "stderr", "w", encoding="utf-8", errors="strict") as stream:
        setup_logging("info", stream=stream, environ={})
        log_settled(root="/srv/legacy", path=ODD_PATH)
        logging.getLogger("importd.pipeline").warning(
            "odd %s", lone_surrogate, extra={"path": lone_surrogate}
        )
    lines = (tmp_path / "stderr").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(f'settled {ODD_PATH_SHOWN} root=/srv/legacy path="{ODD_PATH_SHOWN}"')
    assert lines[1].endswith('odd /srv/\\ud800 path="/srv/\\ud800"')
    assert "Logging error" not in capsys.readouterr().err


def test_a_traceback_follows_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", environ={})
    try:
        raise OSError(f"cannot read {ODD_PATH}")
    except OSError:
        logging.getLogger("importd.pipeline").exception("hash failed", extra={"path": ODD_PATH})
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith(f'ERROR importd.pipeline: hash failed path="{ODD_PATH_SHOWN}"')
    assert lines[1] == "Traceback (most recent call last):"
    # The exception's own text may hold a newline: it continues the traceback, escaped otherwise.
    assert lines[-2:] == ["OSError: cannot read /srv/legacy/Clip 01\\xff", "final.mov"]


def test_setup_again_replaces_its_handler_and_leaves_others(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger(LOGGER_NAME)
    foreign = logging.NullHandler()
    logger.addHandler(foreign)
    setup_logging("info", environ={})
    setup_logging("debug", environ={})  # SIGHUP with a new level
    logging.getLogger("importd.pipeline").debug("once")
    assert capsys.readouterr().err.count("once") == 1
    assert foreign in logger.handlers
    assert logger.level == logging.DEBUG


# ---------------------------------------------------------------------------------------------
# journald's stream, its socket out of reach

UNREACHABLE = "<4>importd.journal: journald's socket cannot be reached ("


def without_socket(journal_stream: str) -> dict[str, str]:
    return {
        "JOURNAL_STREAM": journal_stream,
        "IMPORTD_NO_SYSTEMD_PYTHON": "1",
        "IMPORTD_JOURNAL_SOCKET": "/nonexistent/journal/socket",
    }


def test_prefixed_lines_carry_the_syslog_priority(journal_file: tuple[io.TextIOWrapper, str]) -> None:
    stream, journal_stream = journal_file
    assert setup_logging("debug", stream=stream, environ=without_socket(journal_stream)) is LogMode.PREFIXED
    logger = logging.getLogger("importd.pipeline")
    logger.debug("d")
    logger.info("settled", extra={"root": "/srv/legacy", "path": ODD_PATH, "hash": "af13"})
    logger.warning("w")
    logger.error("e")
    logger.critical("c")
    stream.flush()
    lines = Path(stream.name).read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith(UNREACHABLE), "the operator is told why the fields are missing"
    assert lines[0].endswith("the IMPORTD_* fields are in the message text only")
    assert lines[1:] == [
        "<7>importd.pipeline: d",
        f'<6>importd.pipeline: settled root=/srv/legacy path="{ODD_PATH_SHOWN}" hash=af13',
        "<4>importd.pipeline: w",
        "<3>importd.pipeline: e",
        "<2>importd.pipeline: c",
    ]


def test_every_traceback_line_keeps_the_priority(journal_file: tuple[io.TextIOWrapper, str]) -> None:
    stream, journal_stream = journal_file
    setup_logging("info", stream=stream, environ=without_socket(journal_stream))
    try:
        raise OSError(f"cannot read {ODD_PATH}")
    except OSError:
        logging.getLogger("importd.service").exception("crashed")
    stream.flush()
    lines = Path(stream.name).read_text(encoding="utf-8").splitlines()
    assert lines[1] == "<3>importd.service: crashed"
    assert lines[2] == "<3>Traceback (most recent call last):"
    # journald makes each line an entry: even the exception text's own newline keeps the priority.
    assert lines[-2:] == ["<3>OSError: cannot read /srv/legacy/Clip 01\\xff", "<3>final.mov"]


def test_real_stderr_on_the_journal_stream_is_detected(tmp_path: Path) -> None:
    """The default stream is the process's own stderr, fd 2, as systemd hands it over."""
    stderr_file = tmp_path / "stderr"
    stderr_file.touch()
    status = stderr_file.stat()
    env = {**os.environ, **without_socket(f"{status.st_dev}:{status.st_ino}")}
    code = (
        "import logging; from importd.journal import setup_logging; "
        "print(setup_logging('info').value); logging.getLogger('importd.x').warning('hello')"
    )
    with open(stderr_file, "a") as stderr:
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            stderr=stderr,
            stdout=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    assert done.returncode == 0
    assert done.stdout.strip() == "prefixed"
    lines = stderr_file.read_text().splitlines()
    assert lines[0].startswith(UNREACHABLE)
    assert lines[1:] == ["<4>importd.x: hello"]


# ---------------------------------------------------------------------------------------------
# The native journal (systemd-python; journald's socket itself is faked)


@pytest.fixture
def journal_entries(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str | bytes]]:
    """What reaches journald: the real JournalHandler and `send`, with `sendv` recording."""
    journal = pytest.importorskip("systemd.journal")
    entries: list[dict[str, str | bytes]] = []

    def sendv(*lines: str | bytes) -> None:
        entry: dict[str, str | bytes] = {}
        for line in lines:
            if isinstance(line, bytes):
                name, _, value_bytes = line.partition(b"=")
                entry[name.decode()] = value_bytes
            else:
                line.encode("utf-8")  # what the C side does; a surrogate here would raise
                name_text, _, value_text = line.partition("=")
                entry[name_text] = value_text
        entries.append(entry)

    monkeypatch.setattr(journal, "sendv", sendv)
    assert setup_logging("info", environ={"INVOCATION_ID": "0f", "JOURNAL_STREAM": "1:2"}) is LogMode.JOURNAL
    return entries


def test_extra_fields_become_importd_journal_fields(journal_entries: list[dict[str, str | bytes]]) -> None:
    log_settled(root="/srv/legacy", path=ODD_PATH, hash="af1349b9")
    [entry] = journal_entries
    assert entry["IMPORTD_ROOT"] == b"/srv/legacy"
    assert entry["IMPORTD_PATH"] == b"/srv/legacy/Clip 01\xff\nfinal.mov"  # the bytes on disk
    assert entry["IMPORTD_HASH"] == b"af1349b9"
    assert entry["SYSLOG_IDENTIFIER"] == "importd"
    assert entry["PRIORITY"] == "6"
    assert entry["LOGGER"] == "importd.pipeline"
    assert entry["MESSAGE"] == (
        f'settled {ODD_PATH_SHOWN} root=/srv/legacy path="{ODD_PATH_SHOWN}" hash=af1349b9'
    )
    # The stock handler would also send every LogRecord attribute under a lowercase name.
    assert all(re.fullmatch(r"[A-Z0-9_]+", name) for name in entry)


def test_a_subset_of_fields_and_a_lone_surrogate(journal_entries: list[dict[str, str | bytes]]) -> None:
    logging.getLogger("importd.pipeline").warning("gone", extra={"path": Path("/srv/\ud800")})
    [entry] = journal_entries
    assert entry["IMPORTD_PATH"] == b"/srv/\\ud800"
    assert "IMPORTD_ROOT" not in entry and "IMPORTD_HASH" not in entry
    assert entry["PRIORITY"] == "4"


def test_an_exception_goes_to_the_journal_in_one_entry(journal_entries: list[dict[str, str | bytes]]) -> None:
    try:
        raise OSError(f"cannot read {ODD_PATH}")
    except OSError:
        logging.getLogger("importd.pipeline").exception("hash failed")
    [entry] = journal_entries
    assert entry["PRIORITY"] == "3"
    assert str(entry["MESSAGE"]).startswith("hash failed\nTraceback")
    assert str(entry["EXCEPTION_TEXT"]).endswith("OSError: cannot read /srv/legacy/Clip 01\\xff\nfinal.mov")


# ---------------------------------------------------------------------------------------------
# The native journal without systemd-python: a datagram socket stands in for journald's


def parse_entry(data: bytes) -> dict[str, bytes]:
    """journald's native format: ``NAME=value\\n``, or ``NAME\\n`` + le64 length + value + ``\\n``."""
    entry: dict[str, bytes] = {}
    at = 0
    while at < len(data):
        end = data.index(b"\n", at)
        line = data[at:end]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            at = end + 1
        else:
            name, (size,) = line, struct.unpack_from("<Q", data, end + 1)
            value = data[end + 9 : end + 9 + size]
            assert data[end + 9 + size : end + 10 + size] == b"\n"
            at = end + 10 + size
        assert re.fullmatch(rb"[A-Z0-9_]+", name), name
        entry[name.decode()] = value
    return entry


class FakeJournald:
    """A bound AF_UNIX datagram socket at journald's place; reads entries as journald would."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.settimeout(2.0)
        self.via_memfd = 0

    def entry(self) -> dict[str, bytes]:
        data, ancillary, _, _ = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(array.array("i").itemsize))
        for level, kind, payload in ancillary:
            assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
            [fd] = array.array("i", payload)
            try:
                # journald refuses a memfd the sender could still change.
                seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
                assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SHRINK
                data = os.pread(fd, os.fstat(fd).st_size, 0)
            finally:
                os.close(fd)
            self.via_memfd += 1
        return parse_entry(data)

    def restart(self) -> None:
        """journald restarted: a new socket at the same path."""
        self.sock.close()
        self.path.unlink()
        self.__init__(self.path)  # type: ignore[misc]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[FakeJournald]:
    fake = FakeJournald(tmp_path / "journal.sock")
    environ = {
        "INVOCATION_ID": "0f",
        "JOURNAL_STREAM": "1:2",
        "IMPORTD_NO_SYSTEMD_PYTHON": "1",
        "IMPORTD_JOURNAL_SOCKET": str(fake.path),
    }
    assert setup_logging("info", environ=environ) is LogMode.JOURNAL
    yield fake
    fake.close()


def test_native_entries_carry_the_importd_fields_as_bytes(journald: FakeJournald) -> None:
    log_settled(root="/srv/legacy", path=ODD_PATH, hash="af1349b9")
    entry = journald.entry()
    assert entry["IMPORTD_ROOT"] == b"/srv/legacy"
    assert entry["IMPORTD_PATH"] == b"/srv/legacy/Clip 01\xff\nfinal.mov"  # newline and all, exact
    assert entry["IMPORTD_HASH"] == b"af1349b9"
    assert entry["SYSLOG_IDENTIFIER"] == b"importd"
    assert entry["PRIORITY"] == b"6"
    assert entry["LOGGER"] == b"importd.pipeline"
    assert entry["CODE_FUNC"] == b"log_settled"
    assert int(entry["CODE_LINE"]) > 0
    assert entry["MESSAGE"] == (
        f'settled {ODD_PATH_SHOWN} root=/srv/legacy path="{ODD_PATH_SHOWN}" hash=af1349b9'.encode()
    )
    logging.getLogger("importd.pipeline").warning("no fields")
    plain = journald.entry()
    assert plain["PRIORITY"] == b"4"
    assert not any(name.startswith("IMPORTD_") for name in plain)
    assert journald.via_memfd == 0


def test_native_and_systemd_python_send_the_same_fields(
    journald: FakeJournald, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_settled(root="/srv/legacy", path="/srv/legacy/a.mov", hash="af13")
    native = journald.entry()
    journal = pytest.importorskip("systemd.journal")
    sent: list[tuple[str | bytes, ...]] = []
    monkeypatch.setattr(journal, "sendv", lambda *lines: sent.append(lines))
    monkeypatch.delenv("IMPORTD_NO_SYSTEMD_PYTHON", raising=False)
    setup_logging("info", environ={"INVOCATION_ID": "0f", "JOURNAL_STREAM": "1:2"})
    log_settled(root="/srv/legacy", path="/srv/legacy/a.mov", hash="af13")
    names = {
        (line if isinstance(line, bytes) else line.encode()).partition(b"=")[0].decode() for line in sent[0]
    }
    assert names == set(native)


def test_a_traceback_is_one_native_entry(journald: FakeJournald) -> None:
    try:
        raise OSError(f"cannot read {ODD_PATH}")
    except OSError:
        logging.getLogger("importd.pipeline").exception("hash failed", extra={"path": ODD_PATH})
    entry = journald.entry()
    assert entry["PRIORITY"] == b"3"
    message = entry["MESSAGE"].decode()
    assert message.splitlines()[0] == f'hash failed path="{ODD_PATH_SHOWN}"'
    assert "Traceback (most recent call last):" in message
    assert (
        entry["EXCEPTION_TEXT"].decode().endswith("OSError: cannot read /srv/legacy/Clip 01\\xff\nfinal.mov")
    )


def test_an_entry_too_big_for_a_datagram_goes_as_a_sealed_memfd(journald: FakeJournald) -> None:
    big = "x" * (1 << 20)  # above the 208 KiB a datagram may carry by default
    logging.getLogger("importd.pipeline").info("%s", big, extra={"path": ODD_PATH})
    entry = journald.entry()
    assert journald.via_memfd == 1
    assert entry["MESSAGE"].startswith(big.encode())
    assert entry["IMPORTD_PATH"] == os.fsencode(ODD_PATH)


def test_a_restarted_journald_gets_the_next_entry(journald: FakeJournald) -> None:
    logging.getLogger("importd.pipeline").info("before")
    assert journald.entry()["MESSAGE"] == b"before"
    journald.restart()
    logging.getLogger("importd.pipeline").info("after")
    assert journald.entry()["MESSAGE"] == b"after"


def test_a_real_process_under_journald_sends_native_entries(tmp_path: Path) -> None:
    """stderr is the journal stream (fd 2, as systemd hands it over); no systemd-python."""
    fake = FakeJournald(tmp_path / "journal.sock")
    stderr_file = tmp_path / "stderr"
    stderr_file.touch()
    status = stderr_file.stat()
    env = {
        **os.environ,
        "JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}",
        "IMPORTD_NO_SYSTEMD_PYTHON": "1",
        "IMPORTD_JOURNAL_SOCKET": str(fake.path),
    }
    code = (
        "import logging; from importd.journal import setup_logging; print(setup_logging('info').value); "
        "logging.getLogger('importd.x').warning('hello', extra={'root': '/srv/legacy'})"
    )
    try:
        with open(stderr_file, "a") as stderr:
            done = subprocess.run(
                [sys.executable, "-c", code],
                env=env,
                stderr=stderr,
                stdout=subprocess.PIPE,
                text=True,
                timeout=30,
            )
        assert done.returncode == 0
        assert done.stdout.strip() == "journal"
        entry = fake.entry()
        assert (entry["MESSAGE"], entry["IMPORTD_ROOT"]) == (b"hello root=/srv/legacy", b"/srv/legacy")
        assert stderr_file.read_text() == "", "nothing on the stream: the entry went to the socket"
    finally:
        fake.close()


# ---------------------------------------------------------------------------------------------
# Escaping


def unquote(shown: str) -> str:
    """The inverse of format_fields' quoting, to prove field values can be read back exactly."""
    if not shown.startswith('"'):
        return shown

    def one(match: re.Match[str]) -> str:
        token = match[0]
        if token[1] in '"\\':
            return token[1]
        if token[1] in "nrt":
            return {"n": "\n", "r": "\r", "t": "\t"}[token[1]]
        code = int(token[2:], 16)
        return chr(0xDC00 + code) if token[1] == "x" and code >= 0x80 else chr(code)

    return re.sub(r'\\(?:["\\nrt]|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})', one, shown[1:-1])


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("/srv/a.mov", "/srv/a.mov"),
        ("/srv/My Clip.mov", '"/srv/My Clip.mov"'),
        ('a"b\\c=d', '"a\\"b\\\\c=d"'),
        ("", '""'),
        (b"/srv/\xff", '"/srv/\\xff"'),
        (Path("/srv/é\u00a0x"), '"/srv/é\\u00a0x"'),
        (42, "42"),
    ],
)
def test_format_fields_quotes_only_when_needed(value: object, shown: str) -> None:
    assert format_fields({"path": value}) == f" path={shown}"


text_with_odd_characters = st.text(
    st.one_of(
        st.characters(exclude_categories=[]),
        st.sampled_from(
            ["\n", "\r", "\\", '"', " ", "=", "\u2028", "\x85", *map(chr, range(0xDC80, 0xDD00))]
        ),
    )
)


@given(text_with_odd_characters)
def test_escape_gives_one_printable_encodable_line(text: str) -> None:
    shown = escape(text)
    assert shown.isprintable()
    shown.encode("utf-8")
    assert len(shown.splitlines()) <= 1


@given(text_with_odd_characters)
def test_field_values_read_back_exactly(text: str) -> None:
    shown = format_fields({"path": text})
    assert shown.isprintable()
    assert unquote(shown.removeprefix(" path=")) == text


@given(st.binary())
def test_any_file_name_read_back_to_its_bytes(name: bytes) -> None:
    shown = format_fields({"path": os.fsdecode(name)}).removeprefix(" path=")
    assert os.fsencode(unquote(shown)) == name


# ---------------------------------------------------------------------------------------------
# The unit file


def run_verify(*units: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    return subprocess.run(
        ["bash", str(VERIFY), *map(str, units)], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_shipped_unit_verifies() -> None:
    done = run_verify()
    assert done.returncode == 0, done.stderr
    assert "ok   importd.service" in done.stdout


def test_the_commented_examples_verify_once_enabled(tmp_path: Path) -> None:
    hardened = re.sub(r"(?m)^#([A-Z][A-Za-z]+=)", r"\1", UNIT.read_text())
    assert "\nProtectSystem=strict\n" in hardened
    (tmp_path / "importd.service").write_text(hardened)
    done = run_verify(tmp_path / "importd.service")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (("Nice=5", "Nice=5\nNicety=yes"), "Unknown key"),  # systemd-analyze itself exits 0 on this
        (("WatchdogSec=30", "WatchdogSec=half a minute"), "half a minute"),
        (("/bin/kill", "/bin/kil"), "/bin/kil"),  # only importd itself is stubbed
    ],
)
def test_verify_fails_on_a_real_problem(tmp_path: Path, change: tuple[str, str], complaint: str) -> None:
    old, new = change
    (tmp_path / "importd.service").write_text(UNIT.read_text().replace(old, new, 1))
    done = run_verify(tmp_path / "importd.service")
    assert done.returncode == 1
    assert complaint in done.stderr
