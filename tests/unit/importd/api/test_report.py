"""`report` over the real socket against the service in this process (media off): the reply in
its declared shape, the figures of `status`, `dupes` and `check`, and its refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from importctl.client import Client
from importctl.protocol import ErrorCode, Method
from importd.service import Service
from tests.unit.importd.api.test_table import conforms, daemon_error, wait_until
from tests.unit.importd.inprocess import config_for, run_service, started_up


def test_the_report_over_the_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IMPORTD_CATALOG_URL", "IMPORTD_SOCKET", "IMPORTD_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    root, other = tmp_path / "media", tmp_path / "other"
    root.mkdir()
    other.mkdir()
    (root / "a.txt").write_bytes(b"same")
    (root / "b \xe9.txt").write_bytes(b"same")
    (other / "c.txt").write_bytes(b"other")
    (root / "dangling").symlink_to("gone.txt")
    config = config_for(tmp_path / "daemon", {"media": root, "other": other})

    def body(service: Service) -> None:
        client = Client(config.socket_path, timeout=10)
        wait_until(lambda: client.status()["files"]["present"] == 3)
        started = client.check(None, False, None)
        wait_until(lambda: client.check_result(started["run_id"])["state"] != "running")

        whole = client.report()
        conforms(Method.REPORT, whole)
        s = whole["sections"]
        assert whole["root"] is None and whole["bytes"] == len(whole["html"].encode())
        assert s["roots"] == {"shown": 2, "total": 2}
        assert s["dupes_exact"] == {"shown": 1, "total": 1}  # the two copies
        assert s["dupes_near_image"]["total"] == s["dupes_near_video"]["total"] == 0
        assert s["integrity"] == {"shown": 1, "total": 1}  # the dangling link
        assert s["thumbnails"] == {"shown": 0, "total": 0}  # media is off: nothing is known a picture
        assert "b \xe9.txt" in whole["html"] and "importctl repair-links" in whole["html"]

        narrowed = client.report("other", groups=5)
        conforms(Method.REPORT, narrowed)
        assert narrowed["root"] == "other" and narrowed["sections"]["roots"]["total"] == 1
        assert narrowed["sections"]["dupes_exact"]["total"] == narrowed["sections"]["integrity"]["total"] == 0
        assert daemon_error(lambda: client.report("nope")).code is ErrorCode.NOT_FOUND
        assert daemon_error(lambda: client.call(Method.REPORT, {"groups": 0})).code is ErrorCode.INVALID

    run_service(config, body, started_up)


def test_thumbnails_are_kept_by_content_least_recently_used_out() -> None:
    from importd.api.report import ThumbnailCache

    cache = ThumbnailCache(2)
    cache.put("a", b"1")
    cache.put("b", b"2")
    assert cache.get("a") == b"1"  # now the most recent
    cache.put("c", b"3")
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (b"1", None, b"3")
