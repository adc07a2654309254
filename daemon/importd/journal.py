"""journald logging and sd_notify for importd, with plain fallbacks when systemd is not there.

Logging has three destinations, chosen once by `setup_logging`:

- ``JOURNAL``: stderr is journald's stream ($JOURNAL_STREAM names it), so entries go to journald's
  native socket instead, with the ``extra`` keys ``root``, ``path`` and ``hash`` as the journal
  fields ``IMPORTD_ROOT``, ``IMPORTD_PATH`` and ``IMPORTD_HASH`` (raw bytes, so
  ``journalctl IMPORTD_PATH=...`` matches the name on disk). systemd-python sends them where it is
  built; elsewhere logging-journald, pure Python, speaks the same protocol (see `_NativeJournalHandler`);
- ``PREFIXED``: stderr is journald's stream but its socket cannot be reached: ``<6>`` priority
  prefixes (sd-daemon(3)) and ``root=... path=...`` appended to the line;
- ``PLAIN``: run by hand: timestamped lines on stderr.

Paths are data from the outside world: undecodable bytes (surrogate-escaped ``str``) and newlines
are escaped, so a record is one line on stderr, never splits, and never crashes an encoder.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, TextIO

import anyio
from logging_journald import JournaldTransport

try:
    from systemd import daemon as _sd_daemon
    from systemd import journal as _sd_journal
except ImportError:  # systemd-python is optional: it builds only against libsystemd's headers.
    _sd_daemon = None
    _sd_journal = None

__all__ = [
    "FIELDS",
    "LOGGER_NAME",
    "LogMode",
    "Notifier",
    "choose_log_mode",
    "escape",
    "format_fields",
    "journal_fields",
    "parse_log_level",
    "run_watchdog",
    "setup_logging",
    "syslog_priority",
]

LOGGER_NAME: Final = "importd"
SYSLOG_IDENTIFIER: Final = "importd"
# `extra=` keys a log call may carry, and the journal field each becomes.
FIELDS: Final[Mapping[str, str]] = {"root": "IMPORTD_ROOT", "path": "IMPORTD_PATH", "hash": "IMPORTD_HASH"}
# Set to 1 to behave as if systemd-python were not installed (tests, or a broken libsystemd).
NO_SYSTEMD_PYTHON_ENV: Final = "IMPORTD_NO_SYSTEMD_PYTHON"
# journald's native socket, for the pure-Python sender; the variable points it elsewhere (tests).
JOURNAL_SOCKET: Final = "/run/systemd/journal/socket"
JOURNAL_SOCKET_ENV: Final = "IMPORTD_JOURNAL_SOCKET"

_LEVELS: Final[Mapping[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_HANDLER_NAME: Final = "importd.journal"
_NOTIFY_TIMEOUT_S: Final = 1.0

log = logging.getLogger(__name__)


class LogMode(enum.Enum):
    JOURNAL = "journal"
    PREFIXED = "prefixed"
    PLAIN = "plain"


def parse_log_level(name: str) -> int:
    """``"info"`` -> ``logging.INFO``; case does not matter; anything else is a ValueError."""
    level = _LEVELS.get(name.strip().lower())
    if level is None:
        raise ValueError(f"invalid log level {name!r}: expected one of {', '.join(_LEVELS)}")
    return level


def syslog_priority(levelno: int) -> int:
    """The syslog priority for a logging level; levels between the named ones round down."""
    if levelno <= logging.DEBUG:
        return 7
    if levelno <= logging.INFO:
        return 6
    if levelno <= logging.WARNING:
        return 4
    if levelno <= logging.ERROR:
        return 3
    return 2


# ---------------------------------------------------------------------------------------------
# Escaping


_NAMED_ESCAPES: Final[Mapping[str, str]] = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(char: str) -> str:
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        # An undecodable byte smuggled in by surrogateescape: show the byte itself.
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x80:
        return f"\\x{code:02x}"
    # \u, not \x, above ASCII so that U+00A0 never reads like the raw byte 0xa0.
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def escape(text: str) -> str:
    """One printable, UTF-8-encodable line: ``\\n``, ``\\t``, ``\\xff`` (raw byte), ``\\u2028``.

    Backslashes are left alone: this is for prose. Field values go through `format_fields`,
    which quotes and escapes them so they can be read back exactly.
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape_char(char) for char in text)


def _as_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, os.PathLike):
        return _as_text(os.fspath(value))
    return value if isinstance(value, str) else str(value)


def _as_bytes(value: object) -> bytes:
    """What the journal stores: the name's bytes as they are on disk."""
    if isinstance(value, bytes):
        return value
    try:
        return os.fsencode(value) if isinstance(value, str | os.PathLike) else str(value).encode()
    except UnicodeEncodeError:  # a lone surrogate that did not come from surrogateescape
        return escape(_as_text(value)).encode()


def _quote(value: str) -> str:
    if value and value.isprintable() and not any(char in value for char in ' "=\\'):
        return value
    body = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escape(body)}"'


def _record_fields(record: logging.LogRecord) -> dict[str, object]:
    return {key: value for key in FIELDS if (value := getattr(record, key, None)) is not None}


def format_fields(fields: Mapping[str, object]) -> str:
    """`` root=/srv/a path="/srv/a/My Clip.mov"``: logfmt, quoted and escaped when needed."""
    return "".join(f" {key}={_quote(_as_text(value))}" for key, value in fields.items())


# ---------------------------------------------------------------------------------------------
# Formatters and handlers


class _LineFormatter(logging.Formatter):
    """Message and fields on one escaped line; a traceback follows on lines of its own."""

    def body(self, record: logging.LogRecord) -> str:
        return escape(record.getMessage()) + format_fields(_record_fields(record))

    def detail_lines(self, record: logging.LogRecord) -> list[str]:
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        text = "\n".join(part for part in (record.exc_text, record.stack_info) if part)
        return [escape(line) for line in text.splitlines()]


class _PlainFormatter(_LineFormatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        head = f"{stamp}.{int(record.msecs):03d} {record.levelname:<5} {record.name}: {self.body(record)}"
        return "\n".join([head, *self.detail_lines(record)])


class _PrefixedFormatter(_LineFormatter):
    def format(self, record: logging.LogRecord) -> str:
        # journald turns every stderr line into its own entry: each traceback line carries the
        # prefix too, or it would be logged at the default priority.
        prefix = f"<{syslog_priority(record.levelno)}>"
        lines = [f"{record.name}: {self.body(record)}", *self.detail_lines(record)]
        return "\n".join(prefix + line for line in lines)


class _JournalFormatter(_LineFormatter):
    def format(self, record: logging.LogRecord) -> str:
        # The fields are in the MESSAGE as well because plain `journalctl -u importd` shows only
        # MESSAGE; the IMPORTD_* fields are for filtering and exact bytes.
        return "\n".join([self.body(record), *self.detail_lines(record)])


def journal_fields(record: logging.LogRecord) -> dict[str, object]:
    """The journal fields of a record besides MESSAGE: only well-formed names, IMPORTD_* as bytes."""
    fields: dict[str, object] = {
        "PRIORITY": str(syslog_priority(record.levelno)),
        "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER,
        "LOGGER": record.name,
        "THREAD_NAME": record.threadName,
        "CODE_FILE": record.pathname,
        "CODE_LINE": record.lineno,
        "CODE_FUNC": record.funcName,
    }
    for key, value in _record_fields(record).items():
        fields[FIELDS[key]] = _as_bytes(value)
    if record.exc_text:
        fields["EXCEPTION_TEXT"] = "\n".join(map(escape, record.exc_text.splitlines()))
    return fields


class _NativeJournalHandler(logging.Handler):
    """Entries to journald's socket in its native protocol, without libsystemd.

    logging-journald's transport writes each field as ``NAME=value`` or, for values that may hold
    a newline or any byte, ``NAME``, a 64-bit length and the raw value; an entry too big for one
    datagram goes as a sealed memfd passed with SCM_RIGHTS, as journald expects. Every value here
    goes in the length-prefixed form: paths are bytes from the disk. (The transport packs the
    length in the machine's byte order; journald reads little-endian, which x86-64 and arm64 are.
    A big-endian machine needs systemd-python.)
    """

    def __init__(self, transport: JournaldTransport) -> None:
        super().__init__()
        self.transport = transport

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            fields = {"MESSAGE": message, **journal_fields(record)}
            self.transport.send([(name, _as_bytes(value)) for name, value in fields.items()])
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self.transport.socket.close()
        super().close()


def _native_handler(environ: Mapping[str, str]) -> _NativeJournalHandler | OSError:
    path = environ.get(JOURNAL_SOCKET_ENV) or JOURNAL_SOCKET
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
            probe.connect(path)
    except OSError as error:  # no journald here (a container), or the socket is not ours to use
        return error
    # Not connected: each entry is addressed to the path, as libsystemd's sd_journal_sendv does,
    # so a restarted journald (a new socket at the same path) gets the next entry.
    return _NativeJournalHandler(JournaldTransport(path, connected=False))


if _sd_journal is not None:

    class _FieldJournalHandler(_sd_journal.JournalHandler):  # type: ignore[misc]
        """JournalHandler that sends only well-formed fields.

        The stock `emit` sends the whole ``record.__dict__`` as fields: lowercase names that
        journald drops, so ``extra={"path": ...}`` never shows, and any surrogate-escaped path
        among them makes `sendv` raise while encoding. This one sends the standard fields plus
        IMPORTD_* as bytes.
        """

        def emit(self, record: logging.LogRecord) -> None:
            try:
                message = self.format(record)
                self.send(message, **{**self._extra, **journal_fields(record)})
            except Exception:
                self.handleError(record)


def _stream_is_journal(stream: TextIO, journal_stream: str) -> bool:
    """Whether `stream` is the journald stream systemd named in $JOURNAL_STREAM (``dev:ino``)."""
    try:
        device, inode = (int(part) for part in journal_stream.split(":"))
        status = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):  # io.UnsupportedOperation is both
        return False
    return (status.st_dev, status.st_ino) == (device, inode)


def _systemd_python_usable(environ: Mapping[str, str]) -> bool:
    return _sd_journal is not None and environ.get(NO_SYSTEMD_PYTHON_ENV) != "1"


def choose_log_mode(environ: Mapping[str, str], stream: TextIO) -> LogMode:
    """JOURNAL under journald, else PLAIN; `setup_logging` falls back to PREFIXED when journald's
    socket cannot be reached."""
    journal_stream = environ.get("JOURNAL_STREAM", "")
    # A service whose stderr was redirected elsewhere (stdout still on the journal) keeps
    # JOURNAL_STREAM and INVOCATION_ID: the native protocol still reaches journald.
    if _stream_is_journal(stream, journal_stream) or (environ.get("INVOCATION_ID") and journal_stream):
        return LogMode.JOURNAL
    return LogMode.PLAIN


def setup_logging(
    level: str, *, stream: TextIO | None = None, environ: Mapping[str, str] | None = None
) -> LogMode:
    """Send the ``importd`` loggers to the journal or stderr; safe to call again on reload.

    `stream` and `environ` default to ``sys.stderr`` and ``os.environ`` at call time.
    """
    levelno = parse_log_level(level)
    stream = sys.stderr if stream is None else stream
    environ = os.environ if environ is None else environ
    mode = choose_log_mode(environ, stream)
    handler: logging.Handler | None = None
    unreachable: OSError | None = None
    if mode is LogMode.JOURNAL:
        if _systemd_python_usable(environ):
            handler = _FieldJournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)
        else:
            native = _native_handler(environ)
            if isinstance(native, OSError):
                unreachable = native
            else:
                handler = native
        if handler is not None:
            handler.setFormatter(_JournalFormatter())
        else:
            on_journal = _stream_is_journal(stream, environ.get("JOURNAL_STREAM", ""))
            mode = LogMode.PREFIXED if on_journal else LogMode.PLAIN
    if handler is None:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(_PrefixedFormatter() if mode is LogMode.PREFIXED else _PlainFormatter())
    handler.set_name(_HANDLER_NAME)

    logger = logging.getLogger(LOGGER_NAME)
    for old in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
        logger.removeHandler(old)
        old.close()
    logger.addHandler(handler)
    logger.setLevel(levelno)
    if unreachable is not None:
        log.warning(
            "journald's socket cannot be reached (%s): the IMPORTD_* fields are in the message text only",
            unreachable,
        )
    return mode


# ---------------------------------------------------------------------------------------------
# sd_notify


def _send_datagram(address: str, message: str) -> bool:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET."""
    if address.startswith("@"):
        target = "\0" + address[1:]  # Linux abstract namespace
    elif address.startswith("/"):
        target = address
    else:  # e.g. "vsock:..." (systemd >= 254, in VMs): only libsystemd speaks it
        log.debug("notify: unsupported NOTIFY_SOCKET %r", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            # A full receive queue blocks the sender; the event loop calls this, so bound it.
            sock.settimeout(_NOTIFY_TIMEOUT_S)
            sock.sendto(message.encode(), target)
    except OSError as error:
        log.debug("notify: sending %r to %s failed: %s", message, address, error)
        return False
    return True


@dataclass(frozen=True)
class Notifier:
    """Tells systemd how the service is doing; every method is a no-op returning False outside it.

    `address` is $NOTIFY_SOCKET. With `via_libsystemd`, ``systemd.daemon.notify`` sends, and it
    reads $NOTIFY_SOCKET itself: build such a Notifier with `from_env` only.
    """

    address: str | None = None
    watchdog_usec: int | None = None
    watchdog_pid: int | None = None
    via_libsystemd: bool = False

    @classmethod
    def from_env(cls) -> Notifier:
        environ = os.environ
        address = environ.get("NOTIFY_SOCKET") or None
        watchdog_usec: int | None = None
        watchdog_pid: int | None = None
        try:
            watchdog_usec = int(environ["WATCHDOG_USEC"]) if environ.get("WATCHDOG_USEC") else None
            watchdog_pid = int(environ["WATCHDOG_PID"]) if environ.get("WATCHDOG_PID") else None
        except ValueError:  # sd_watchdog_enabled(3) treats garbage as "no watchdog"
            log.debug("notify: ignoring malformed WATCHDOG_USEC/WATCHDOG_PID")
            watchdog_usec = watchdog_pid = None
        via_libsystemd = _sd_daemon is not None and environ.get(NO_SYSTEMD_PYTHON_ENV) != "1"
        return cls(address, watchdog_usec, watchdog_pid, via_libsystemd)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def _send(self, message: str) -> bool:
        if self.address is None:
            return False
        # libsystemd's sd_notify blocks without limit when the manager's queue is full, and this
        # runs on the event loop: for the usual socket addresses our own sender, which gives up
        # after a second, is the safer path. libsystemd is kept for what only it speaks (vsock:).
        if not self.via_libsystemd or self.address.startswith(("/", "@")):
            return _send_datagram(self.address, message)
        # Unlike _send_datagram, sd_notify (v252) waits without limit while the receiver's queue
        # is full; PID 1 drains its socket promptly, so that wait is theoretical.
        try:
            return bool(_sd_daemon.notify(message))
        except Exception as error:  # OSError from sd_notify, or anything odd in the binding
            log.debug("notify: sending %r failed: %s", message, error)
            return False

    def ready(self) -> bool:
        """Startup, or a reload, is finished."""
        return self._send("READY=1")

    def status(self, text: str) -> bool:
        """Free text for `systemctl status`; one line (newlines would start new assignments)."""
        return self._send(f"STATUS={escape(text)}")

    def reloading(self) -> bool:
        """A reload has begun; send `ready` when it is done.

        Type=notify-reload (systemd >= 253) wants MONOTONIC_USEC with RELOADING=1 to tell this
        reload from an earlier one; older managers ignore the extra field.
        """
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self._send(f"RELOADING=1\nMONOTONIC_USEC={now_usec}")

    def stopping(self) -> bool:
        return self._send("STOPPING=1")

    def watchdog(self) -> bool:
        return self._send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of WatchdogSec=), or None when no watchdog is ours.

        WATCHDOG_PID is compared at call time so that a forked child never pings for us.
        """
        if not self.enabled or self.watchdog_usec is None or self.watchdog_usec <= 0:
            return None
        if self.watchdog_pid is not None and self.watchdog_pid != os.getpid():
            return None
        return self.watchdog_usec / 2 / 1_000_000


async def run_watchdog(notifier: Notifier) -> None:
    """Ping the watchdog forever; returns at once when there is no watchdog.

    It runs as a task on the event loop on purpose, not in a thread: if the loop is stuck
    (a blocking call, a busy coroutine), the pings stop and systemd restarts the service, which
    is the whole point of the watchdog.
    """
    interval = notifier.watchdog_interval()
    if interval is None:
        return
    while True:
        notifier.watchdog()
        await anyio.sleep(interval)
