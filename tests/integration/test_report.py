"""`importctl report --html`: the real daemon builds the page, importctl writes it, and a real
headless Chromium loads it: sections, counts and thumbnails are in the DOM, nothing is fetched,
and a screenshot is kept as a test artefact (copied to $IMPORTD_TEST_ARTIFACTS when set)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import Daemon, new_catalog, wait_for
from tests.integration.test_entities import EXPECT, character
from tests.integration.test_media import media_idle, photo
from tests.unit.importd.report.test_html import outside_links
from tests.videos import run_ffmpeg

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium; CI installs it)"
)
SECTIONS = (
    "roots",
    "completeness",
    "checklist",
    "orphaned",
    "dupes-exact",
    "dupes-near-image",
    "dupes-near-video",
    "integrity",
)


def video(path: Path, size: str, codec: str = "libx264") -> None:
    run_ffmpeg(
        "-f", "lavfi", "-i", f"testsrc=duration=4:size={size}:rate=25",
        "-c:v", codec, "-pix_fmt", "yuv420p", str(path),
    )  # fmt: skip


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """A studio root (characters: gaps, an orphan) and a photos root (copies, near copies, videos,
    names that need escaping or are not UTF-8), fully registered and analysed, and a sweep; one
    daemon for the module's tests, which only read."""
    stack = contextlib.ExitStack()
    tmp_path = tmp_path_factory.mktemp("report")
    studio, photos = tmp_path / "studio", tmp_path / "photos"
    studio.mkdir()
    photos.mkdir()
    url = stack.enter_context(new_catalog(request))
    d = Daemon(tmp_path / "d", {"studio": studio, "photos": photos}, extra=EXPECT, catalog_url=url)
    d.write_config(
        f'\n[[roots]]\nname = "studio"\npath = "{studio}"\nrules = "characters"\n'
        f'\n[[roots]]\nname = "photos"\npath = "{photos}"\n'
    )
    character(studio, "Alice")
    character(studio, "Bob <b>", age=None, scenes=("intro",))
    character(studio, "Carol")
    a, b = photo(1), photo(2)
    a.save(photos / "a.jpg", quality=92)
    shutil.copy(photos / "a.jpg", photos / "a copy.jpg")
    a.resize((320, 240)).save(photos / "a small.jpg", quality=80)
    b.save(photos / "b.jpg", quality=92)
    shutil.copy(photos / "b.jpg", os.fsdecode(bytes(photos) + b"/b \xff<script>.jpg"))
    video(photos / "clip.mp4", "640x360")
    video(photos / "clip small.mkv", "320x180", "mpeg4")
    on_disk = sum(len(names) for _, _, names in os.walk(tmp_path / "studio")) + 7
    try:
        d.start()
        wait_for(lambda: d.status()["files"]["present"] == on_disk, timeout=60, what="registered")
        wait_for(lambda: media_idle(d) and d.status()["media"]["done"] >= 7, timeout=120, what="analysed")
        for name in os.listdir(studio / "Carol"):
            os.unlink(studio / "Carol" / name)
        wait_for(lambda: d.ctl_json("gaps").get("orphaned"), what="Carol orphaned")
        os.symlink("nowhere", photos / "dangling")
        d.wait_idle()
        assert d.ctl("check").returncode & 32  # the broken link
        yield d
    finally:
        d.kill()
        stack.close()


def test_the_report_file_has_the_figures_of_gaps_dupes_and_check(catalog: Daemon, tmp_path: Path) -> None:
    d = catalog
    out = tmp_path / "report.html"
    summary = d.ctl_json("report", "--html", str(out))
    page = out.read_bytes()
    assert summary["path"] == str(out) and summary["bytes"] == len(page)
    s = summary["sections"]
    gaps, dupes = d.ctl_json("gaps"), d.ctl_json("dupes")
    c = gaps["completeness"]
    assert s["completeness"] == {"shown": c["satisfied"], "total": c["required"]}
    assert s["checklist"]["total"] == len(gaps["entities"]) >= 1
    assert s["orphaned"]["total"] == len(gaps["orphaned"]) == 1
    assert s["dupes_exact"]["total"] == sum(g["kind"] == "exact" for g in dupes["groups"]) == 2
    near = [g for g in dupes["groups"] if g["kind"] == "near"]
    assert s["dupes_near_image"]["total"] == sum(g["media"] == "image" for g in near) == 1
    assert s["dupes_near_video"]["total"] == sum(g["media"] == "video" for g in near) == 1
    assert s["integrity"]["total"] >= 1 and s["roots"]["total"] == 2
    assert s["thumbnails"]["shown"] == s["thumbnails"]["total"] >= 4

    text = page.decode("utf-8")
    # Self-contained: nothing to fetch, and what came from the tree is escaped.
    assert outside_links(text) == []
    assert "<script" not in text.lower()
    assert "Bob &lt;b&gt;" in text and "b \\xff&lt;script&gt;.jpg" in text
    # The text summary says the same.
    res = d.ctl("report", "--html", str(tmp_path / "again.html"), check=True)
    assert b"wrote" in res.stdout and b"dupes exact" in res.stdout


@needs_chromium
def test_chromium_renders_the_report_offline(catalog: Daemon, tmp_path: Path) -> None:
    d = catalog
    out = tmp_path / "report.html"
    summary = d.ctl_json("report", "--html", str(out))
    dom = chromium(tmp_path, "--dump-dom", f"file://{out}").stdout.decode("utf-8")
    for section in SECTIONS:
        found = re.search(rf'<section id="{section}"[^>]*data-shown="(\d+)" data-total="(\d+)"', dom)
        assert found, f"section {section} missing from the DOM"
        key = section.replace("-", "_")
        assert (int(found[1]), int(found[2])) == tuple(summary["sections"][key].values())
    assert outside_links(dom) == []
    images = re.findall(r'<img class="thumb" alt="" src="data:image/jpeg;base64,([^"]+)"', dom)
    assert len(images) >= summary["sections"]["thumbnails"]["shown"]
    for data in images:
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            assert im.format == "JPEG" and max(im.size) <= 640
    assert 'data-kind="broken_link"' in dom and "importctl repair-links" in dom
    assert "importctl forget" in dom and "Carol" in dom
    assert "keep: largest resolution (640×360)" in dom  # the videos
    assert "keep: largest resolution (640×480), then oldest" in dom  # a.jpg and its copy beat the small one

    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,3400", f"file://{out}")
    with Image.open(shot) as im:
        assert im.size == (1280, 3400)
        assert len(im.convert("L").resize((64, 120)).getcolors(4096) or ()) > 20  # drawn, not blank
    artifacts = os.environ.get("IMPORTD_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "report.png")
        shutil.copy(out, Path(artifacts) / "report.html")


def test_a_report_narrowed_to_one_root(catalog: Daemon, tmp_path: Path) -> None:
    d = catalog
    summary = d.ctl_json("report", "--html", str(tmp_path / "photos.html"), "--root", "photos")
    s = summary["sections"]
    assert summary["root"] == "photos" and s["roots"]["total"] == 1
    assert s["checklist"]["total"] == 0 and s["orphaned"]["total"] == 0  # the characters live in studio
    assert s["dupes_exact"]["total"] == 2 and s["integrity"]["total"] == 1
    studio = d.ctl_json("report", "--html", str(tmp_path / "studio.html"), "--root", "studio")["sections"]
    assert studio["dupes_exact"]["total"] == 0 and studio["orphaned"]["total"] == 1
    res = d.ctl("report", "--html", str(tmp_path / "x.html"), "--root", "nope")
    assert res.returncode == 1 and b"no root named 'nope'" in res.stderr
    assert not (tmp_path / "x.html").exists()


def chromium(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Headless, with every network request sent to a proxy that is not there."""
    assert CHROMIUM is not None
    profile = cwd / "chromium-profile"
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--proxy-server=http://127.0.0.1:9",
            "--proxy-bypass-list=<-loopback>",
            *args,
        ],
        capture_output=True,
        timeout=120,
        check=True,
        cwd=cwd,
    )


def test_the_report_json_shape_is_stable(make_daemon: Any, tmp_path: Path) -> None:
    d = make_daemon().start()
    d.wait_idle()
    summary = d.ctl_json("report", "--html", str(tmp_path / "empty.html"))
    assert set(summary) == {"path", "bytes", "root", "generated", "seconds", "sections"}
    assert set(summary["sections"]) == {
        "roots", "completeness", "checklist", "orphaned", "dupes_exact",
        "dupes_near_image", "dupes_near_video", "integrity", "thumbnails",
    }  # fmt: skip
    assert json.loads(json.dumps(summary)) == summary
