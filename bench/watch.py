"""The watch section (issue 15): create -> registered latency past `settle_seconds` in a root that
holds 1,000 images with names that are not UTF-8 (Latin-1, CP1252, Shift-JIS) while importd reads
them for media, beside the same figure on the same tree with UTF-8 names; and the watcher
failures in the daemon's log (there must be none).

Each side runs its own daemon on its own tree: the images are imported, the watch is placed, and
files are created one every `SPACING_S` in the root while the media stage works through the
images (the count of extractions done during the measurement is printed beside the figure).
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

from PIL import Image

from bench.core import CatalogPoller, DaemonRun, RootSpec, _dist, find_importd
from bench.report import INFO, Check, Target, percentile

SETTLE_S = 1.0
SPACING_S = 0.05
ODD = ["café {i}", "€uro – draft {i}", "写真 {i}"]
ODD_CODECS = ["latin-1", "cp1252", "shift_jis"]


def name_of(i: int, odd: bool, suffix: str) -> bytes:
    text = ODD[i % 3].format(i=i) + suffix
    return text.encode(ODD_CODECS[i % 3] if odd else "utf-8")


def make_tree(root: bytes, images: int, odd: bool) -> None:
    os.makedirs(root + b"/photos", exist_ok=True)
    # Big enough that reading them for media outlasts the measurement; crops of one noise
    # picture, so writing 1,000 of them takes seconds, not minutes.
    noise = Image.effect_noise((1280, 960), 60).convert("RGB")
    for i in range(images):
        x, y = (i * 37) % 640, (i * 53) % 480
        img = noise.crop((x, y, x + 640, y + 480))
        img.save(os.fsdecode(root + b"/photos/" + name_of(i, odd, ".jpg")), format="JPEG", quality=85)


def extractions(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            # The images' extractions only (the created files are extracted too, and fail).
            row = conn.execute("SELECT count(*) FROM extractions WHERE status = 'ok'").fetchone()
            return int(row[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return -1


def measure(work: Path, images: int, files: int, odd: bool) -> dict[str, Any]:
    side = "non-UTF-8" if odd else "UTF-8"
    root_path = work / ("odd" if odd else "utf8") / "root"
    root = os.fsencode(str(root_path))
    make_tree(root, images, odd)
    os.makedirs(root + b"/incoming", exist_ok=True)
    rng = random.Random(16)
    home = work / ("odd" if odd else "utf8") / "daemon"
    with DaemonRun(find_importd(), home, [RootSpec("names", root_path)], SETTLE_S) as daemon:
        daemon.wait_ready()
        daemon.wait_reconciled("names", timeout=120)
        deadline = time.monotonic() + 30
        while not any(r["state"] == "watching" for r in daemon.status()["roots"]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{side}: the root never reached 'watching'")
            time.sleep(0.05)
        poller = CatalogPoller(daemon.db)
        poller.start()
        try:
            extracted_before = extractions(daemon.db)
            created: dict[bytes, float] = {}
            t0 = time.perf_counter()
            for i in range(files):
                delay = t0 + i * SPACING_S - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                relpath = b"incoming/" + name_of(i, odd, ".wav")
                with open(root + b"/" + relpath, "wb") as fh:
                    fh.write(rng.randbytes(4096))
                created[relpath] = time.time()
            end = time.monotonic() + 20 + 2 * SETTLE_S
            while time.monotonic() < end and not all(k in poller.seen for k in created):
                time.sleep(0.05)
            extracted_after = extractions(daemon.db)
        finally:
            poller.stop()
        log = daemon.log_path.read_text(errors="replace")
    latencies = [(poller.seen[k][0] - t - SETTLE_S) * 1000 for k, t in created.items() if k in poller.seen]
    if not latencies:
        raise RuntimeError(f"{side}: no created file was registered")
    return {
        "side": side,
        "images": images,
        "files": len(created),
        "not_registered": len(created) - len(latencies),
        "visible_ms": _dist(latencies),
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "extractions_during": extracted_after - extracted_before,
        "watcher_failures": log.count("watcher for"),
    }


def bench_watch(work_dir: Path, quick: bool = False) -> dict[str, Any]:
    images, files = (200, 60) if quick else (1000, 200)
    odd = measure(work_dir, images, files, odd=True)
    utf8 = measure(work_dir, images, files, odd=False)
    checks = [
        Check(
            f"create -> registered past settle, {images} non-UTF-8 names, media running: p50",
            odd["p50"],
            "ms",
            Target("value_at_most", 100),
            baseline=utf8["p50"],
            baseline_name="all-UTF-8 tree",
            note=f"{odd['extractions_during']} extractions during the measurement",
        ),
        Check("  p99", odd["p99"], "ms", Target("value_at_most", 500),
              baseline=utf8["p99"], baseline_name="all-UTF-8 tree"),
        Check("  watcher failures in the log", odd["watcher_failures"], "", Target("value_at_most", 1)),
        Check("  created files never registered", odd["not_registered"], "", Target("value_at_most", 1)),
        Check("all-UTF-8 tree: p50", utf8["p50"], "ms", INFO,
              note=f"{utf8['extractions_during']} extractions during the measurement"),
    ]  # fmt: skip
    return {
        "non_utf8": odd,
        "utf8": utf8,
        "spacing_s": SPACING_S,
        "settle_seconds": SETTLE_S,
        "checks": checks,
    }
