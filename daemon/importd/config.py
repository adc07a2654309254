"""TOML configuration -> one frozen, validated `Config`, loaded once and passed down.

Every problem is a `ConfigError` naming the file, the key and what is wrong; `importd` prints it
on one line and exits 78 (EX_CONFIG) so systemd's RestartPreventExitStatus= stops a restart loop.
"""

from __future__ import annotations

import fnmatch
import grp
import importlib.util
import math
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from importctl.protocol import default_socket_path
from importd.enrich.provider import Secret
from importd.enrich.scoring import DEFAULT_MIN_CONFIDENCE
from importd.entities import (
    ExpectationError,
    Expectations,
    FieldError,
    FieldRules,
    PatternError,
    RuleError,
    RuleSet,
    parse_expectations,
    parse_fields,
    rule_set_for_root,
)

EX_CONFIG = 78
SYSTEM_CONFIG = Path("/etc/importd/importd.toml")
SYSTEM_STATE = Path("/var/lib/importd")
DEFAULT_BASE_URL = "https://api.themoviedb.org/3"  # [enrich] base_url

# Files that are still being written or that belong to a tool, not to the library.
DEFAULT_IGNORES: tuple[str, ...] = (
    "*.part",
    "*.tmp",
    "*.crdownload",
    "*.partial",
    "*.swp",
    "*.swx",
    "*~",
    ".#*",
    "#*#",
    ".~lock.*#",
    ".DS_Store",
    "._*",
    "@eaDir",
    "#recycle",
    "#snapshot",
    ".Trash-*",
    ".importd-*",
)
WATCH_MODES = ("inotify", "poll")
# Upper bounds: a value past these is a typo or a unit mix-up, never a wish, and some (1e300) do
# not survive the conversions the pipeline makes (seconds to an int of milliseconds).
DAY_S = 86_400.0
MAX_SETTLE_S = DAY_S
MAX_RECONCILE_INTERVAL_S = 30 * DAY_S
# Hashing is bound by the disks and the cores, not by threads: the big-file path already spreads
# one file over every core, and each worker keeps its own read buffers (a 1 MiB chunk, up to an
# 8 MiB batch of small files), so 32 workers can hold ~300 MiB and 100,000 held 788 MB of RSS
# while hashing no faster. 32 is more than any disk array here keeps busy.
MAX_HASH_WORKERS = 32
# Media workers are processes of 100 MB and more each (decoders, onnxruntime).
MAX_MEDIA_WORKERS = 32
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class ConfigError(Exception):
    def __init__(self, source: Path | str | None, key: str, problem: str) -> None:
        self.source = str(source) if source else "<defaults>"
        self.key = key
        self.problem = problem
        super().__init__(f"{self.source}: {key}: {problem}" if key else f"{self.source}: {problem}")


class IgnoreRules:
    """Globs without a slash match any single path component (so `@eaDir` hides a whole
    subtree); globs with a slash match the whole path relative to the root. All globs of a kind
    are compiled into one regular expression: the walk asks once per directory entry."""

    def __init__(self, globs: tuple[str, ...]) -> None:
        self.globs = globs
        names = [fnmatch.translate(g) for g in globs if "/" not in g]
        paths = [fnmatch.translate(g) for g in globs if "/" in g]
        self._names = re.compile("|".join(names)) if names else None
        self._paths = re.compile("|".join(paths)) if paths else None
        self.name_ignored_bytes = self._bytes_matcher([g for g in globs if "/" not in g], names)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IgnoreRules) and other.globs == self.globs

    def __hash__(self) -> int:
        return hash(self.globs)

    def __repr__(self) -> str:
        return f"IgnoreRules({self.globs!r})"

    def _bytes_matcher(self, globs: list[str], patterns: list[str]) -> Callable[[bytes], object] | None:
        """The name test on raw bytes, for the walk's hot loop (no decoding per file). Exact only
        when every glob is ASCII without `?` or `[...]` (those match one character, which is not
        one byte in UTF-8); otherwise it decodes like `name_ignored`."""
        if not globs:
            return None
        if all(g.isascii() and "?" not in g and "[" not in g for g in globs):
            return re.compile("|".join(patterns).encode("ascii")).match
        return lambda name: self.name_ignored(os.fsdecode(name))

    def name_ignored(self, name: str) -> bool:
        return self._names is not None and self._names.match(name) is not None

    def path_ignored(self, relpath: str) -> bool:
        if self._paths is not None and self._paths.match(relpath) is not None:
            return True
        return any(self.name_ignored(part) for part in relpath.split("/"))

    @property
    def has_path_globs(self) -> bool:
        return self._paths is not None


@dataclass(frozen=True)
class RootConfig:
    name: str
    path: Path
    watch: str = "inotify"
    poll_interval: float = 60.0
    ignore: IgnoreRules = field(default_factory=lambda: IgnoreRules(DEFAULT_IGNORES))
    marker: str | None = None
    # Path rules mapping files to entities (None: the root's files are catalogued, not mapped).
    rule_set: RuleSet | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MediaConfig:
    """[media] and [faces]: what the extract stage runs and how hard it may work."""

    enabled: bool = True
    workers: int = 1
    timeout_seconds: float = 120.0
    max_pixels: int = 178_956_970
    near_threshold: int = 10
    faces_enabled: bool = True
    faces_pack: Path | None = None
    face_min_score: float = 0.7
    face_min_px: int = 40
    same_person_similarity: float = 0.5


@dataclass(frozen=True)
class SafetyConfig:
    """[safety]: the brake on a mass disappearance (see `importd.brake`). A reconcile or a burst
    of watcher events that would mark more than `max_vanish_files` files, or more than
    `max_vanish_percent` % of a root's live files, missing is held until the operator confirms."""

    max_vanish_files: int = 1000
    max_vanish_percent: float = 20.0


ENRICH_ORDERS = ("newest", "oldest", "name")
ENRICH_PROVIDERS = ("tmdb",)


@dataclass(frozen=True)
class EnrichConfig:
    """[enrich]: the metadata provider (off unless the section names one and its key). The key
    is a `Secret` (it prints as ***), read once from `key` or `key_file`."""

    provider: str
    base_url: str
    key: Secret
    rate_limit: int = 40
    rate_window_seconds: float = 10.0
    cache_dir: Path = Path("enrich-cache")
    cache_ttl_seconds: float = 30 * 86400.0
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    order: str = "newest"
    automatic: bool = False
    workers: int = 4
    timeout_seconds: float = 10.0
    retry_base_seconds: float = 1.0
    language: str | None = None
    movie_types: tuple[str, ...] = ("film",)
    tv_types: tuple[str, ...] = ("series",)


@dataclass(frozen=True)
class Config:
    source: Path | None
    roots: tuple[RootConfig, ...]
    catalog_url: str
    socket_path: Path
    state_dir: Path
    settle_seconds: float = 5.0
    hash_workers: int = 2
    log_level: str = "info"
    reconcile_interval: float = 3600.0
    expectations: Expectations = field(default_factory=lambda: parse_expectations(None))
    fields: FieldRules = field(default_factory=FieldRules)
    media: MediaConfig = field(default_factory=MediaConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    # [control] write_group: the group whose members (and root) may call the methods that write
    # under a root (api/access.py); None: whoever may open the socket.
    write_group: str | None = None
    enrich: EnrichConfig | None = None
    # Sections owned by later stages (entities, media, …), kept verbatim for them to validate.
    extra: Mapping[str, Any] = field(default_factory=dict)
    # This server's name in a catalog several servers share: its roots are (host, name).
    host: str = field(default_factory=socket.gethostname)

    def root(self, name: str) -> RootConfig | None:
        return next((r for r in self.roots if r.name == name), None)


def default_config_path() -> Path:
    env = os.environ.get("IMPORTD_CONFIG")
    if env:
        return Path(env)
    if os.environ.get("CONFIGURATION_DIRECTORY"):
        return Path(os.environ["CONFIGURATION_DIRECTORY"].split(":")[0]) / "importd.toml"
    if SYSTEM_CONFIG.exists() or os.getuid() == 0:
        return SYSTEM_CONFIG
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / "importd" / "importd.toml"


def default_state_dir() -> Path:
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    if os.getuid() == 0:
        return SYSTEM_STATE
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "importd"


def load_config(path: Path | None = None) -> Config:
    source = path or default_config_path()
    try:
        with open(source, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found (pass --config or set IMPORTD_CONFIG)") from None
    except PermissionError:
        raise ConfigError(source, "", "permission denied reading the file") from None
    except IsADirectoryError:
        raise ConfigError(source, "", "is a directory, not a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(source, "", f"not UTF-8: {exc}") from None
    return parse_config(data, source)


_TOP_KEYS = {
    "settle_seconds",
    "hash_workers",
    "log_level",
    "reconcile_interval_seconds",
    "state_dir",
    "catalog",
    "control",
    "roots",
    "host",
    "safety",
    "enrich",
}
# Sections that later pipeline stages validate themselves.
_EXTRA_SECTIONS = {"expect", "fields", "media", "faces", "maintenance", "events"}
_ROOT_KEYS = {"name", "path", "watch", "poll_interval_seconds", "ignore", "use_default_ignores", "marker"}
_ROOT_EXTRA = {"rules", "match_key"}


class _Reader:
    def __init__(self, source: Path | None) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.source, key, problem)

    def number(
        self,
        table: Mapping[str, Any],
        key: str,
        where: str,
        default: float,
        minimum: float,
        maximum: float | None = None,
    ) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(where + key, f"must be a number, not {type(value).__name__}")
        # TOML has nan and inf: no setting means either, and int() of them raises deep inside.
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(where + key, f"must be a finite number, not {value!r}")
        if value < minimum:
            raise self.fail(where + key, f"must be at least {minimum:g}, not {value!r}")
        if maximum is not None and value > maximum:
            raise self.fail(where + key, f"must be at most {maximum:g}, not {value:g}")
        return float(value)

    def string(self, table: Mapping[str, Any], key: str, where: str, default: str | None) -> str | None:
        value = table.get(key, default)
        if value is not None and not isinstance(value, str):
            raise self.fail(where + key, f"must be a string, not {type(value).__name__}")
        return value

    def unknown(self, table: Mapping[str, Any], allowed: set[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(where + key, f"unknown key (allowed: {', '.join(sorted(allowed))})")


def driver_installed(module: str) -> bool:
    """Is a database driver importable? (Checked without importing it.)"""
    return importlib.util.find_spec(module) is not None


def parse_config(data: Mapping[str, Any], source: Path | None = None) -> Config:
    r = _Reader(source)
    r.unknown(data, _TOP_KEYS | _EXTRA_SECTIONS, "")

    settle = r.number(data, "settle_seconds", "", 5.0, 0.0, MAX_SETTLE_S)
    workers = r.number(data, "hash_workers", "", max(1, min(4, os.cpu_count() or 1)), 1, MAX_HASH_WORKERS)
    if workers != int(workers):
        raise r.fail("hash_workers", "must be a whole number")
    reconcile = r.number(data, "reconcile_interval_seconds", "", 3600.0, 10.0, MAX_RECONCILE_INTERVAL_S)
    level = (r.string(data, "log_level", "", "info") or "info").lower()
    if level not in LOG_LEVELS:
        raise r.fail("log_level", f"must be one of {', '.join(LOG_LEVELS)}, not {level!r}")

    state_dir = Path(
        r.string(data, "state_dir", "", None) or os.environ.get("IMPORTD_STATE_DIR") or default_state_dir()
    )

    catalog = data.get("catalog", {})
    if not isinstance(catalog, dict):
        raise r.fail("catalog", "must be a table")
    r.unknown(catalog, {"url"}, "catalog.")
    url = os.environ.get("IMPORTD_CATALOG_URL") or r.string(catalog, "url", "catalog.", None)
    if url is None:
        url = f"sqlite:///{state_dir / 'catalog.db'}"
    if not (url.startswith("sqlite:") or url.startswith("postgresql")):
        raise r.fail("catalog.url", f"must be a sqlite:/// or postgresql:// URL, not {url!r}")
    if url.startswith("postgresql") and not driver_installed("asyncpg"):
        raise r.fail(
            "catalog.url",
            "a PostgreSQL catalog needs the asyncpg driver, which is not installed "
            "(pip install 'importd[postgresql]')",
        )

    control = data.get("control", {})
    if not isinstance(control, dict):
        raise r.fail("control", "must be a table")
    r.unknown(control, {"socket", "write_group"}, "control.")
    write_group = r.string(control, "write_group", "control.", None)
    if write_group is not None and not write_group:
        raise r.fail("control.write_group", "must be a group name, not empty")
    socket_env = os.environ.get("IMPORTD_SOCKET")
    socket_conf = r.string(control, "socket", "control.", None)
    socket_path = Path(socket_env or socket_conf or default_socket_path(for_daemon=True))
    if not socket_path.is_absolute():
        raise r.fail("control.socket", f"must be an absolute path, not {str(socket_path)!r}")
    # sockaddr_un.sun_path is 108 bytes including the terminating NUL.
    if len(os.fsencode(str(socket_path))) > 107:
        raise r.fail("control.socket", "path is longer than the 107 bytes a unix socket allows")

    host = r.string(data, "host", "", None) or socket.gethostname()
    if len(host) > 255 or not host.isprintable() or host != host.strip():
        raise r.fail("host", f"must be a printable name of at most 255 characters, not {host[:300]!r}")

    roots_data = data.get("roots", [])
    if not isinstance(roots_data, list):
        raise r.fail("roots", "must be an array of tables ([[roots]])")
    roots: list[RootConfig] = []
    seen_names: set[str] = set()
    seen_paths: dict[Path, str] = {}
    for i, raw in enumerate(roots_data):
        roots.append(_parse_root(r, raw, i))
        root = roots[-1]
        if root.name in seen_names:
            raise r.fail(f"roots[{i}].name", f"duplicate root name {root.name!r}")
        seen_names.add(root.name)
        for other_path, other_name in seen_paths.items():
            if (
                root.path == other_path
                or root.path.is_relative_to(other_path)
                or other_path.is_relative_to(root.path)
            ):
                raise r.fail(f"roots[{i}].path", f"overlaps root {other_name!r} ({other_path})")
        seen_paths[root.path] = root.name

    extra = {k: v for k, v in data.items() if k in _EXTRA_SECTIONS}
    try:
        expectations = parse_expectations(data.get("expect"))
    except ExpectationError as exc:
        raise r.fail(exc.key, exc.problem) from None
    try:
        fields = parse_fields(data.get("fields"))
    except FieldError as exc:
        raise r.fail(exc.key, exc.problem) from None
    media = _parse_media(r, data.get("media", {}), data.get("faces", {}), state_dir)
    safety = _parse_safety(r, data.get("safety", {}))
    enrich = _parse_enrich(r, data.get("enrich"), state_dir)
    return Config(
        enrich=enrich,
        safety=safety,
        media=media,
        expectations=expectations,
        fields=fields,
        source=source,
        roots=tuple(roots),
        catalog_url=url,
        socket_path=socket_path,
        state_dir=state_dir,
        settle_seconds=settle,
        hash_workers=int(workers),
        log_level=level,
        reconcile_interval=reconcile,
        write_group=write_group,
        extra=extra,
        host=host,
    )


_ENRICH_KEYS = {
    "provider", "base_url", "key", "key_file", "rate_limit", "rate_window_seconds", "cache_dir",
    "cache_ttl_seconds", "min_confidence", "order", "automatic", "workers", "timeout_seconds",
    "retry_base_seconds", "language", "movie_types", "tv_types",
}  # fmt: skip


def _parse_enrich(r: _Reader, enrich: Any, state_dir: Path) -> EnrichConfig | None:
    if enrich is None:
        return None
    if not isinstance(enrich, dict):
        raise r.fail("enrich", "must be a table")
    w = "enrich."
    r.unknown(enrich, _ENRICH_KEYS, w)
    provider = r.string(enrich, "provider", w, None)
    if provider is None:
        return None  # the section without a provider: enrichment stays off
    if provider not in ENRICH_PROVIDERS:
        raise r.fail(w + "provider", f"must be one of {', '.join(ENRICH_PROVIDERS)}, not {provider!r}")
    base_url = r.string(enrich, "base_url", w, DEFAULT_BASE_URL) or DEFAULT_BASE_URL
    if not re.match(r"https?://[^/\s]+", base_url):
        raise r.fail(w + "base_url", f"must be an http:// or https:// URL, not {base_url!r}")
    key = _enrich_key(r, enrich)
    limit = r.number(enrich, "rate_limit", w, 40, 1)
    workers = r.number(enrich, "workers", w, 4, 1)
    for name, value in (("rate_limit", limit), ("workers", workers)):
        if value != int(value):
            raise r.fail(w + name, "must be a whole number")
    order = r.string(enrich, "order", w, "newest")
    if order not in ENRICH_ORDERS:
        raise r.fail(w + "order", f"must be one of {', '.join(ENRICH_ORDERS)}, not {order!r}")
    confidence = r.number(enrich, "min_confidence", w, DEFAULT_MIN_CONFIDENCE, 0.0)
    if confidence > 1:
        raise r.fail(w + "min_confidence", f"must be from 0 to 1, not {confidence:g}")
    automatic = enrich.get("automatic", False)
    if not isinstance(automatic, bool):
        raise r.fail(w + "automatic", "must be true or false")
    cache = r.string(enrich, "cache_dir", w, None)
    types: dict[str, tuple[str, ...]] = {}
    for name, default in (("movie_types", ("film",)), ("tv_types", ("series",))):
        value = enrich.get(name, list(default))
        if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
            raise r.fail(w + name, "must be an array of entity type names")
        types[name] = tuple(value)
    both = set(types["movie_types"]) & set(types["tv_types"])
    if both:
        raise r.fail(w + "tv_types", f"{', '.join(sorted(both))} is in movie_types too")
    return EnrichConfig(
        provider=provider,
        base_url=base_url,
        key=key,
        rate_limit=int(limit),
        rate_window_seconds=r.number(enrich, "rate_window_seconds", w, 10.0, 0.001),
        cache_dir=Path(cache) if cache else state_dir / "enrich-cache",
        cache_ttl_seconds=r.number(enrich, "cache_ttl_seconds", w, 30 * 86400.0, 0.0),
        min_confidence=confidence,
        order=order,
        automatic=automatic,
        workers=int(workers),
        timeout_seconds=r.number(enrich, "timeout_seconds", w, 10.0, 0.1),
        retry_base_seconds=r.number(enrich, "retry_base_seconds", w, 1.0, 0.0),
        language=r.string(enrich, "language", w, None),
        movie_types=types["movie_types"],
        tv_types=types["tv_types"],
    )


def _enrich_key(r: _Reader, enrich: Mapping[str, Any]) -> Secret:
    """`key`, or `key_file`: a relative name is looked up in systemd's $CREDENTIALS_DIRECTORY
    (LoadCredential=). Never part of an error's text."""
    key = r.string(enrich, "key", "enrich.", None)
    key_file = r.string(enrich, "key_file", "enrich.", None)
    if (key is None) == (key_file is None):
        raise r.fail("enrich.key", "give exactly one of key and key_file")
    if key is None:
        assert key_file is not None
        path = Path(key_file)
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if not path.is_absolute():
            if not creds:
                raise r.fail(
                    "enrich.key_file", "a relative name needs $CREDENTIALS_DIRECTORY (LoadCredential=)"
                )
            path = Path(creds) / path
        try:
            key = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise r.fail("enrich.key_file", f"{path}: no such file") from None
        except PermissionError:
            raise r.fail("enrich.key_file", f"{path}: permission denied") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise r.fail("enrich.key_file", f"{path}: cannot read it ({type(exc).__name__})") from None
    if not key or any(c.isspace() for c in key):
        raise r.fail("enrich.key_file" if key_file else "enrich.key", "is empty or holds spaces")
    return Secret(key)


def _parse_safety(r: _Reader, safety: Any) -> SafetyConfig:
    if not isinstance(safety, dict):
        raise r.fail("safety", "must be a table")
    r.unknown(safety, {"max_vanish_files", "max_vanish_percent"}, "safety.")
    files = r.number(safety, "max_vanish_files", "safety.", 1000, 1, 2**62)
    if files != int(files):
        raise r.fail("safety.max_vanish_files", "must be a whole number")
    percent = r.number(safety, "max_vanish_percent", "safety.", 20.0, 0.0)
    if not 0 < percent <= 100:
        raise r.fail("safety.max_vanish_percent", f"must be above 0 and at most 100, not {percent:g}")
    return SafetyConfig(max_vanish_files=int(files), max_vanish_percent=percent)


def _parse_media(r: _Reader, media: Any, faces: Any, state_dir: Path) -> MediaConfig:
    if not isinstance(media, dict):
        raise r.fail("media", "must be a table")
    if not isinstance(faces, dict):
        raise r.fail("faces", "must be a table")
    r.unknown(media, {"enabled", "workers", "timeout_seconds", "max_pixels", "near_threshold"}, "media.")
    r.unknown(faces, {"enabled", "pack", "min_score", "min_face_px", "same_person_similarity"}, "faces.")
    for table, key, where in ((media, "enabled", "media."), (faces, "enabled", "faces.")):
        if not isinstance(table.get(key, True), bool):
            raise r.fail(where + key, "must be true or false")
    # Leave a core for hashing and the control socket.
    workers = r.number(media, "workers", "media.", max(1, (os.cpu_count() or 2) - 1), 1, MAX_MEDIA_WORKERS)
    threshold = r.number(media, "near_threshold", "media.", 10, 0)
    if threshold > 32 or threshold != int(threshold):
        raise r.fail("media.near_threshold", "must be a whole number of bits from 0 to 32")
    pack = r.string(faces, "pack", "faces.", None)
    similarity = r.number(faces, "same_person_similarity", "faces.", 0.5, -1.0)
    if similarity > 1:
        raise r.fail("faces.same_person_similarity", "is a cosine similarity: at most 1")
    return MediaConfig(
        enabled=media.get("enabled", True),
        workers=int(workers),
        timeout_seconds=r.number(media, "timeout_seconds", "media.", 120.0, 1.0, DAY_S),
        max_pixels=int(r.number(media, "max_pixels", "media.", 178_956_970, 1, 2**40)),
        near_threshold=int(threshold),
        faces_enabled=faces.get("enabled", True),
        faces_pack=Path(pack) if pack else state_dir / "models" / "buffalo_l",
        face_min_score=r.number(faces, "min_score", "faces.", 0.7, 0.0, 1.0),
        face_min_px=int(r.number(faces, "min_face_px", "faces.", 40, 1, 1 << 20)),
        same_person_similarity=similarity,
    )


def _parse_root(r: _Reader, raw: Any, i: int) -> RootConfig:
    where = f"roots[{i}]."
    if not isinstance(raw, dict):
        raise r.fail(f"roots[{i}]", "must be a table")
    r.unknown(raw, _ROOT_KEYS | _ROOT_EXTRA, where)
    name = r.string(raw, "name", where, None)
    if not name:
        raise r.fail(where + "name", "is required")
    if "/" in name or name.strip() != name:
        raise r.fail(where + "name", f"must not contain '/' or surrounding spaces: {name!r}")
    path_s = r.string(raw, "path", where, None)
    if not path_s:
        raise r.fail(where + "path", "is required")
    path = Path(os.path.normpath(path_s))
    if not path.is_absolute():
        raise r.fail(where + "path", f"must be an absolute path, not {path_s!r}")
    watch = r.string(raw, "watch", where, "inotify")
    if watch not in WATCH_MODES:
        raise r.fail(where + "watch", f'must be "inotify" or "poll", not {watch!r}')
    interval = r.number(raw, "poll_interval_seconds", where, 60.0, 1.0, DAY_S)
    ignore = raw.get("ignore", [])
    if not isinstance(ignore, list) or not all(isinstance(g, str) and g for g in ignore):
        raise r.fail(where + "ignore", "must be an array of non-empty glob strings")
    defaults = raw.get("use_default_ignores", True)
    if not isinstance(defaults, bool):
        raise r.fail(where + "use_default_ignores", "must be true or false")
    globs = (DEFAULT_IGNORES if defaults else ()) + tuple(ignore)
    marker = r.string(raw, "marker", where, None)
    if marker is not None and (not marker or os.path.isabs(marker) or ".." in Path(marker).parts):
        raise r.fail(where + "marker", f"must be a file name relative to the root, not {marker!r}")
    extra = {k: v for k, v in raw.items() if k in _ROOT_EXTRA}
    rule_set = None
    if "rules" in raw:
        try:
            rule_set = rule_set_for_root(raw["rules"], match_key=raw.get("match_key"))
        except RuleError as exc:
            raise r.fail(where + (exc.where or "rules"), exc.problem) from None
        except PatternError as exc:
            raise r.fail(where + "rules", str(exc)) from None
    elif "match_key" in raw:
        raise r.fail(where + "match_key", "needs rules")
    return RootConfig(
        rule_set=rule_set,
        name=name,
        path=path,
        watch=watch or "inotify",
        poll_interval=interval,
        ignore=IgnoreRules(globs),
        marker=marker,
        extra=extra,
    )


def check_runnable(config: Config) -> list[str]:
    """What a daemon needs of the disk before it can run on `config`; the parse alone cannot say
    (the same file may be checked on another machine). Raises `ConfigError` for what would never
    work; returns warnings for what may work later (a share with a marker, not mounted yet).
    `importd check-config`, `importd run` and a reload (SIGHUP) all ask it."""
    r = _Reader(config.source)
    if not config.roots:
        raise r.fail("roots", "no roots configured: add a [[roots]] table with a name and a path")
    if config.state_dir.exists() and not config.state_dir.is_dir():
        raise r.fail("state_dir", f"{config.state_dir} is a file, not a directory")
    if config.write_group is not None:
        try:
            grp.getgrnam(config.write_group)
        except KeyError:
            raise r.fail("control.write_group", f"no group {config.write_group!r} on this system") from None
    warnings: list[str] = []
    resolved: list[tuple[int, RootConfig, Path]] = []
    for i, root in enumerate(config.roots):
        key = f"roots[{i}].path"
        if root.path.is_dir():
            pass
        elif root.path.exists():
            raise r.fail(key, f"{root.path} is not a directory")
        elif root.marker:
            warnings.append(
                f"{config.source or '<defaults>'}: {key}: {root.path} does not exist (not mounted yet?): "
                f"the root stays offline until it and its marker {root.marker!r} appear"
            )
        else:
            raise r.fail(
                key,
                f"{root.path} does not exist (a share mounted later needs a marker: "
                f'roots[{i}].marker = ".importd-online", a file in the mounted share)',
            )
        # Paths compared as written miss two names for one folder (a symlink, a bind of /srv
        # into /mnt): compare where they lead.
        real = Path(os.path.realpath(root.path))
        for j, other, other_real in resolved:
            if real == other_real or real.is_relative_to(other_real) or other_real.is_relative_to(real):
                raise r.fail(
                    key,
                    f"overlaps root {other.name!r} (roots[{j}]): {root.path} leads to {real}, "
                    f"{other.path} to {other_real}",
                )
        resolved.append((i, root, real))
    return warnings
