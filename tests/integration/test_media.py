"""Media understanding through the real daemon: facts, near-duplicates, faces, failures."""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
import zlib
from typing import Any

import pytest
from PIL import Image

from importd.media.hashes import to_unsigned64
from importd.media.image import DEFAULT_MAX_PIXELS, ImageFacts, extract_image
from tests import media_models
from tests.camera_photos import camera_picture, save_camera_jpeg
from tests.conftest import CORPUS, Daemon, blake3_of, wait_for
from tests.videos import run_ffmpeg as ffmpeg


def media_idle(d: Daemon) -> bool:
    s = d.status()
    m = s["media"]
    return d.idle() and m["ready"] and m["intake"] == 0 and m["queued"] == 0 and m["running"] == 0


def photo(seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A picture with structure (gradients and shapes), different for each seed."""
    import numpy as np

    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    y, x = np.mgrid[:h, :w]
    img = np.zeros((h, w, 3), np.uint8)
    for c in range(3):
        fx, fy = rng.uniform(0.5, 4, 2).tolist()
        phase = rng.uniform(0, 6)
        img[..., c] = (127 + 120 * np.sin(x / w * fx * 6 + phase) * np.cos(y / h * fy * 6)).astype(np.uint8)
    for _ in range(6):
        cx, cy, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(20, 120))
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.integers(0, 255, 3)
    return Image.fromarray(img)


def groups_of(data: dict[str, Any], kind: str) -> list[set[str]]:
    return [{os.path.basename(p) for p in g["paths"]} for g in data["groups"] if g["kind"] == kind]


def test_photos_dropped_in_a_root_show_their_copies(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon().start()
    root = d.roots["legacy"]
    a, b = photo(1), photo(2)
    a.save(root / "a.jpg", quality=92)
    a.save(root / "a copy.jpg", quality=92)  # same bytes: exact duplicate
    a.resize((320, 240)).save(root / "a small.jpg", quality=80)  # resized
    a.save(root / "a.png")  # re-encoded losslessly
    a.crop((8, 6, 632, 474)).save(root / "a cropped.jpg", quality=85)  # slightly cropped
    b.save(root / "b.jpg", quality=92)  # a different picture
    wait_for(lambda: d.status()["files"]["present"] == 6, what="registered")
    wait_for(lambda: media_idle(d) and d.status()["media"]["done"] >= 5, timeout=60, what="analysed")
    data = d.ctl_json("dupes")
    assert {"a.jpg", "a copy.jpg"} in groups_of(data, "exact")
    near = groups_of(data, "near")
    assert any({"a.jpg", "a small.jpg", "a.png", "a cropped.jpg"} <= g for g in near), near
    assert not any("b.jpg" in g for g in near), "a different picture must not match"
    exact_only = d.ctl_json("dupes", "--kind", "exact")
    assert {g["kind"] for g in exact_only["groups"]} == {"exact"}
    assert exact_only["groups"][0]["blake3"] == blake3_of((root / "a.jpg").read_bytes())
    near_group = next(g for g in data["groups"] if g["kind"] == "near")
    assert all("distance" in m for m in near_group["members"])
    text = d.ctl("dupes").stdout.decode()
    assert "a copy.jpg" in text and "near image" in text
    # The threshold is honoured: at 0 bits only identical hashes group.
    strict = d.ctl_json("dupes", "--kind", "near", "--threshold", "0")["groups"]
    assert all(m["distance"] == 0 for g in strict for m in g["members"])
    assert len(strict) <= len([g for g in data["groups"] if g["kind"] == "near"]) + 1
    info = d.ctl_json("info", str(root / "a small.jpg"))
    assert (
        info["media"]["width"] == 320 and info["media"]["height"] == 240 and info["media"]["format"] == "JPEG"
    )
    assert len(info["media"]["phash"]) == 16
    assert any(g["kind"] == "near" for g in info["duplicates"])


def test_corrupt_garbage_empty_and_bomb_files_are_registered_with_reasons(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon().start()
    root = d.roots["legacy"]
    buf = io.BytesIO()
    photo(3).save(buf, "JPEG")
    (root / "truncated.jpg").write_bytes(buf.getvalue()[:2000])
    (root / "garbage.png").write_bytes(os.urandom(5000))
    (root / "empty.jpg").write_bytes(b"")
    (root / "not a video.mp4").write_bytes(b"hello, I am text\n" * 100)
    # A PNG declaring 100000 x 100000 pixels: Pillow's decompression-bomb guard must refuse it.
    Image.new("L", (1, 1)).save(root / "tiny.png")
    bomb = bytearray((root / "tiny.png").read_bytes())
    bomb[16:24] = (100000).to_bytes(4, "big") + (100000).to_bytes(4, "big")
    bomb[29:33] = zlib.crc32(bytes(bomb[12:29])).to_bytes(4, "big")  # a valid IHDR, lying about its size
    (root / "bomb.png").write_bytes(bytes(bomb))
    (root / "tiny.png").unlink()
    wait_for(lambda: d.status()["files"]["present"] == 5, what="all registered")
    wait_for(lambda: media_idle(d) and d.status()["media"]["failed"] >= 4, timeout=60, what="analysed")
    errors = {os.path.basename(e["path"]): e["error"] for e in d.ctl_json("errors") if e["kind"] == "extract"}
    assert set(errors) >= {"truncated.jpg", "garbage.png", "empty.jpg", "not a video.mp4", "bomb.png"}, errors
    assert "bomb" in errors["bomb.png"].lower() or "pixels" in errors["bomb.png"].lower()
    for name in errors:
        row = d.ctl_json("find", str(root / name))[0]
        assert row["status"] == "present" and row["blake3"], "a failed extraction never unregisters a file"
    assert d.proc is not None and d.proc.poll() is None


# Default: the system's ffmpeg where there is one (CI installs Debian's), else the imageio-ffmpeg
# wheel's; forced: the wheel's, even beside the system's, so both paths run wherever the suite does.
@pytest.mark.parametrize("forced", [None, "imageio-ffmpeg"], ids=["resolved", "wheel"])
def test_videos_with_a_shared_intro_do_not_match_and_a_reencode_does(  # type: ignore[no-untyped-def]
    make_daemon, tmp_path, monkeypatch, forced
) -> None:
    if forced:
        monkeypatch.setenv("IMPORTD_FFMPEG", forced)
    work = tmp_path / "work"
    work.mkdir()
    x264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    intro = "color=black:s=320x240:r=25,trim=duration=2.5,format=yuv420p"
    for name, body in (("a", "testsrc2=s=320x240:r=25"), ("b", "mandelbrot=s=320x240:r=25")):
        graph = f"{intro}[i];{body},trim=duration=4.5,format=yuv420p[m];[i][m]concat=n=2:v=1:a=0[v]"
        ffmpeg("-filter_complex", graph, "-map", "[v]", *x264, str(work / f"{name}.mp4"))
    ffmpeg(
        "-i", str(work / "a.mp4"), "-c:v", "mpeg4", "-q:v", "8", "-s", "240x180", str(work / "a again.avi")
    )
    d = make_daemon().start()
    used = d.status()["media"]["ffmpeg"]
    assert used["path"] and os.access(used["path"], os.X_OK), used
    assert used["source"] == (forced or ("path" if shutil.which("ffmpeg") else "imageio-ffmpeg"))
    assert f"ffmpeg: {used['path']}" in d.ctl("status").stdout.decode()
    root = d.roots["legacy"]
    for f in work.iterdir():
        shutil.copy(f, root / f.name)
    wait_for(lambda: d.status()["files"]["present"] == 3, what="registered")
    wait_for(lambda: media_idle(d) and d.status()["media"]["done"] >= 6, timeout=90, what="analysed")
    near = [g for g in d.ctl_json("dupes", "--kind", "near")["groups"] if g["media"] == "video"]
    names = [{os.path.basename(p) for p in g["paths"]} for g in near]
    assert {"a.mp4", "a again.avi"} in names
    assert not any("b.mp4" in g for g in names), "a shared black intro must not make two videos duplicates"
    info = d.ctl_json("info", str(root / "a.mp4"))
    media = info["media"]
    assert media["kind"] == "video" and media["width"] == 320 and media["height"] == 240
    assert 6.5 < media["duration_s"] < 7.5 and media["video_codec"]


def test_faces_with_a_model_pack(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pack = media_models.build_pack(tmp_path / "pack")
    d = make_daemon(extra=f'[faces]\npack = "{pack}"\n')
    root = d.roots["legacy"]
    Image.fromarray(media_models.picture_with_faces([("checker", 160, 160)])).save(root / "alice 1.png")
    Image.fromarray(media_models.picture_with_faces([("checker", 448, 320)], background=40)).save(
        root / "alice 2.jpg", quality=95
    )
    Image.fromarray(media_models.picture_with_faces([("hstripes", 160, 160)])).save(root / "bob.png")
    d.start()
    assert d.status()["media"]["faces"]["state"] == "enabled"
    wait_for(lambda: media_idle(d) and d.status()["media"]["done"] >= 6, timeout=90, what="analysed")
    face_groups = groups_of(d.ctl_json("dupes", "--kind", "face"), "face")
    assert face_groups == [{"alice 1.png", "alice 2.jpg"}]
    info = d.ctl_json("info", str(root / "alice 1.png"))
    assert len(info["faces"]) == 1 and info["faces"][0]["det_score"] >= 0.7
    assert any(g["kind"] == "face" for g in info["duplicates"])


def test_missing_face_pack_disables_faces_and_nothing_else(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon(extra=f'[faces]\npack = "{tmp_path / "no-pack-here"}"\n').start()
    root = d.roots["legacy"]
    photo(5).save(root / "p.jpg")
    faces = d.status()["media"]["faces"]
    assert (
        faces["state"] == "disabled"
        and "not found" in faces["reason"]
        and faces["path"].endswith("no-pack-here")
    )
    wait_for(lambda: media_idle(d) and d.status()["media"]["done"] >= 1, timeout=60, what="image analysed")
    assert "faces disabled" in d.ctl("status").stdout.decode()


def test_restart_does_not_analyse_again(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon()
    root = d.roots["legacy"]
    for i in range(4):
        photo(10 + i).save(root / f"p{i}.jpg")
    d.start()
    wait_for(lambda: media_idle(d) and d.status()["media"]["done"] >= 4, timeout=60, what="analysed")
    d.stop()
    d.start()
    time.sleep(2)
    wait_for(lambda: media_idle(d), timeout=30)
    assert d.status()["media"]["done"] == 0, "work is keyed by content and version: nothing runs twice"


@pytest.mark.slow
def test_the_pillow_corpus(make_daemon) -> None:  # type: ignore[no-untyped-def]
    corpus = CORPUS / "pillow-images"
    if not corpus.is_dir():
        pytest.skip("../shared/corpus is not beside the project")
    d = make_daemon()
    root = d.roots["legacy"]
    shutil.copytree(corpus, root / "pillow")
    expected = {
        p.relative_to(root).as_posix().encode(): blake3_of(p.read_bytes())
        for p in root.rglob("*")
        if p.is_file()
    }
    d.start()
    answered: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            d.client(timeout=10).status()
            answered.append(time.monotonic() - t0)
            time.sleep(0.2)

    t = threading.Thread(target=poll)
    t.start()
    try:
        wait_for(lambda: d.status()["files"]["present"] == len(expected), timeout=120, what="all registered")
        wait_for(lambda: media_idle(d), timeout=400, interval=1.0, what="all analysed")
    finally:
        stop.set()
        t.join()
    assert max(answered) < 5, "status must answer throughout"
    rows = {bytes(r["relpath"]): r["blake3"] for r in d.rows("status = 'present'")}
    assert rows == expected
    from importd.media import media_kind

    analysed = {r[0]: r[1] for r in d.sql("SELECT blake3, status FROM extractions WHERE extractor = 'image'")}
    images = {h for p, h in expected.items() if media_kind(os.path.splitext(p)[1].decode()) == "image"}
    assert images and images <= set(analysed), "every image content is analysed or has a recorded failure"
    failed = sum(1 for status in analysed.values() if status == "failed")
    assert failed > 10, "the corpus holds corrupt and fuzzed files"
    failures = [e for e in d.ctl_json("errors", "--limit", "5000") if e["kind"] == "extract"]
    assert failures and all(e["error"].strip() for e in failures), "every failure has a reason"


def test_a_12_megapixel_camera_jpeg(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """A camera's 4000×3000 JPEG, taken upright (EXIF orientation 6): the daemon stores its facts as
    displayed, its EXIF date and camera, and the hashes extract_image gives in this process."""
    d = make_daemon()
    path = save_camera_jpeg(camera_picture(7), d.roots["legacy"] / "IMG_0007.JPG", orientation=6)
    d.start()
    wait_for(lambda: media_idle(d) and d.status()["media"]["done"] >= 1, timeout=60, what="analysed")
    info = d.ctl_json("info", str(path))
    media = info["media"]
    assert (media["kind"], media["format"], media["width"], media["height"]) == ("image", "JPEG", 3000, 4000)
    assert media["camera"] == "Canon EOS 450D"
    assert media["taken_at"].startswith("2019-07-14T16:20:05") and media["taken_at"].endswith("+02:00")
    here = extract_image(str(path), max_pixels=DEFAULT_MAX_PIXELS)
    assert isinstance(here, ImageFacts)
    hashes = (f"{to_unsigned64(here.phash):016x}", f"{to_unsigned64(here.dhash):016x}")
    assert (media["phash"], media["dhash"]) == hashes, media
    assert [e["status"] for e in info["extractions"] if e["extractor"] == "image"] == ["ok"], info[
        "extractions"
    ]
