import tomllib
from pathlib import Path

import pytest

from importd.config import ConfigError, IgnoreRules, SafetyConfig, check_runnable, load_config, parse_config


def test_minimal_contract_config(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'settle_seconds = 1\n[catalog]\nurl = "sqlite:////var/lib/importd/catalog.db"\n'
        '[control]\nsocket = "/run/importd/control.sock"\n[[roots]]\nname = "legacy"\npath = "/srv/legacy"\n'
    )
    c = load_config(cfg)
    assert c.settle_seconds == 1.0
    assert c.catalog_url == "sqlite:////var/lib/importd/catalog.db"
    assert str(c.socket_path) == "/run/importd/control.sock"
    assert c.roots[0].name == "legacy" and c.roots[0].watch == "inotify"
    assert c.roots[0].ignore.name_ignored("movie.mkv.part")


def test_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMPORTD_CATALOG_URL", "sqlite:////tmp/x.db")
    monkeypatch.setenv("IMPORTD_SOCKET", "/tmp/s.sock")
    c = parse_config({"catalog": {"url": "sqlite:////elsewhere.db"}})
    assert c.catalog_url == "sqlite:////tmp/x.db"
    assert str(c.socket_path) == "/tmp/s.sock"


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"settle_seconds": -1}, "settle_seconds"),
        ({"settle_seconds": True}, "settle_seconds"),
        ({"hash_workers": 1.5}, "hash_workers"),
        ({"log_level": "loud"}, "log_level"),
        ({"catalog": {"url": "mysql://x"}}, "catalog.url"),
        ({"control": {"socket": "relative.sock"}}, "control.socket"),
        ({"control": {"socket": "/" + "x" * 200}}, "control.socket"),
        ({"roots": [{"path": "/a"}]}, "roots[0].name"),
        ({"roots": [{"name": "a"}]}, "roots[0].path"),
        ({"roots": [{"name": "a", "path": "/a", "watch": "fsevents"}]}, "roots[0].watch"),
        ({"roots": [{"name": "a", "path": "/a", "ignore": "*.tmp"}]}, "roots[0].ignore"),
        ({"roots": [{"name": "a", "path": "/a", "marker": "/abs"}]}, "roots[0].marker"),
        ({"roots": [{"name": "a", "path": "/a", "typo": 1}]}, "roots[0].typo"),
        ({"roots": [{"name": "a", "path": "/a"}, {"name": "a", "path": "/b"}]}, "roots[1].name"),
        ({"roots": [{"name": "a", "path": "/a"}, {"name": "b", "path": "/a/sub"}]}, "roots[1].path"),
        ({"roots": {"name": "a"}}, "roots"),
        ({"frobnicate": 1}, "frobnicate"),
        ({"safety": 5}, "safety"),
        ({"safety": {"max_vanish_files": 0}}, "safety.max_vanish_files"),
        ({"safety": {"max_vanish_files": 10.5}}, "safety.max_vanish_files"),
        ({"safety": {"max_vanish_files": "many"}}, "safety.max_vanish_files"),
        ({"safety": {"max_vanish_percent": 0}}, "safety.max_vanish_percent"),
        ({"safety": {"max_vanish_percent": 101}}, "safety.max_vanish_percent"),
        ({"safety": {"max_vanish_percent": True}}, "safety.max_vanish_percent"),
        ({"safety": {"max_vanish": 1}}, "safety.max_vanish"),
    ],
)
def test_invalid_values_name_the_key(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(data, Path("/etc/importd/importd.toml"))
    assert err.value.key == key
    assert str(err.value).startswith("/etc/importd/importd.toml: " + key)


def test_a_postgresql_url_without_its_driver_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a traceback from deep in SQLAlchemy at start-up: one line naming the key and the fix."""
    monkeypatch.setattr("importd.config.driver_installed", lambda module: module != "asyncpg")
    with pytest.raises(ConfigError) as err:
        parse_config(
            {"catalog": {"url": "postgresql://importd@db/catalog"}}, Path("/etc/importd/importd.toml")
        )
    assert err.value.key == "catalog.url"
    assert "asyncpg" in str(err.value) and "importd[postgresql]" in str(err.value)
    monkeypatch.setattr("importd.config.driver_installed", lambda module: True)
    assert parse_config({"catalog": {"url": "postgresql://importd@db/catalog"}}).catalog_url.startswith(
        "postgresql"
    )


def test_unreadable_or_malformed_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"a = \xff\n")
    with pytest.raises(ConfigError, match=r"invalid TOML|not UTF-8"):
        load_config(bad)


def test_ignore_rules_components_and_paths() -> None:
    rules = IgnoreRules(("@eaDir", "*.tmp", "renders/cache/*"))
    assert rules.path_ignored("a/@eaDir/thumb.jpg")
    assert rules.path_ignored("x.tmp")
    assert rules.path_ignored("renders/cache/frame1.exr")
    assert not rules.path_ignored("renders/final.exr")
    assert not rules.path_ignored("@eaDirectory/x")
    assert rules.name_ignored("caf\udce9.tmp")  # surrogate-escaped bytes match too


def test_the_safety_section_and_its_defaults() -> None:
    assert parse_config({}).safety == SafetyConfig(max_vanish_files=1000, max_vanish_percent=20.0)
    got = parse_config({"safety": {"max_vanish_files": 50, "max_vanish_percent": 2.5}}).safety
    assert got == SafetyConfig(max_vanish_files=50, max_vanish_percent=2.5)


def test_the_example_config_is_valid_and_states_the_default_limits() -> None:
    example = Path(__file__).parents[3] / "config" / "importd.example.toml"
    data = tomllib.loads(example.read_text(encoding="utf-8"))
    assert data["safety"] == {"max_vanish_files": 1000, "max_vanish_percent": 20}


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"settle_seconds": float("nan")}, "settle_seconds", "finite"),
        ({"settle_seconds": float("inf")}, "settle_seconds", "finite"),
        ({"settle_seconds": 1e300}, "settle_seconds", "at most 86400"),
        ({"hash_workers": 100_000}, "hash_workers", "at most 32"),
        ({"reconcile_interval_seconds": float("-inf")}, "reconcile_interval_seconds", "finite"),
        ({"safety": {"max_vanish_files": float("inf")}}, "safety.max_vanish_files", "finite"),
        ({"safety": {"max_vanish_percent": float("nan")}}, "safety.max_vanish_percent", "finite"),
        ({"media": {"workers": 10**18}}, "media.workers", "at most"),
        ({"faces": {"min_score": 2}}, "faces.min_score", "at most 1"),
        (
            {"roots": [{"name": "a", "path": "/a", "poll_interval_seconds": 1e300}]},
            "roots[0].poll_interval_seconds",
            "at most",
        ),
        (
            {"fields": {"character": {"age": {"type": "int", "min": float("nan")}}}},
            "fields.character.age.min",
            "nan",
        ),
    ],
)
def test_non_finite_and_absurd_numbers_name_the_key(data: dict[str, object], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(data, Path("/etc/importd/importd.toml"))
    assert err.value.key == key and problem in err.value.problem


def runnable(tmp_path: Path, roots: list[dict[str, object]], **top: object) -> list[str]:
    data: dict[str, object] = {"state_dir": str(tmp_path / "state"), "roots": roots, **top}
    return check_runnable(parse_config(data, tmp_path / "c.toml"))


def test_check_runnable_refuses_what_would_never_work(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tmp_path / "via").symlink_to(tree)
    (tmp_path / "file").write_bytes(b"")
    assert runnable(tmp_path, [{"name": "a", "path": str(tree)}]) == []
    for roots, top, key in (
        ([], {}, "roots"),
        ([{"name": "a", "path": str(tree)}], {"state_dir": str(tmp_path / "file")}, "state_dir"),
        ([{"name": "a", "path": str(tmp_path / "none")}], {}, "roots[0].path"),
        ([{"name": "a", "path": str(tmp_path / "file")}], {}, "roots[0].path"),
        (
            [{"name": "a", "path": str(tree)}, {"name": "b", "path": str(tmp_path / "via")}],
            {},
            "roots[1].path",
        ),
        (
            [{"name": "a", "path": str(tmp_path / "via" / "sub")}, {"name": "b", "path": str(tree)}],
            {},
            "roots[1].path",
        ),
    ):
        with pytest.raises(ConfigError) as err:
            runnable(tmp_path, roots, **top)
        assert err.value.key == key, err.value


def test_a_missing_root_with_a_marker_is_a_warning(tmp_path: Path) -> None:
    warnings = runnable(tmp_path, [{"name": "nas", "path": str(tmp_path / "nas"), "marker": ".online"}])
    assert len(warnings) == 1 and "roots[0].path" in warnings[0] and "not mounted yet" in warnings[0]


def test_host_defaults_to_the_machine_and_a_bad_one_is_refused() -> None:
    import socket

    assert parse_config({}).host == socket.gethostname()
    assert parse_config({"host": "storage-2"}).host == "storage-2"
    for bad in ("x" * 256, "a\nb", " padded", 5):
        with pytest.raises(ConfigError) as err:
            parse_config({"host": bad}, Path("/etc/importd/importd.toml"))
        assert "host" in str(err.value)
