"""The HTML report (issue 18): `importctl report --html` on a 100,000-file catalog, beside what it
replaces, `importctl dupes --json` and `importctl gaps --json` run one after the other.

The catalog: a root of real pictures and videos (each picture with an exact copy and a smaller
re-encode, each video with a smaller re-encode), registered and analysed by the daemon, so the
page has real thumbnails and keyframe strips to make; and an archive root seeded straight into the
catalog with 100,000 rows (2 % of them in exact-duplicate pairs) whose folder is not mounted, so
the daemon keeps the rows as they are (an offline root is never marked missing). Every figure is
end to end: the importctl process, the socket, the daemon building the page, the file written.

The first report makes every thumbnail and keyframe strip; the daemon keeps them by content, so
the next ones (judged apart) reuse them. Called by `python -m bench` through `bench_html_report`.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.core import DaemonRun, RootSpec, find_importd, wait_registered
from bench.maintenance import find_importctl, wait_media_idle
from bench.media import make_videos, photo
from bench.report import Check, Target, median

SETTLE_SECONDS = 0.5
RUNS = 3
PAIR_SHARE = 50  # one row in 50 is half of an exact-duplicate pair


def make_media(root: Path, pictures: int, videos: int) -> int:
    """Pictures with an exact copy and a half-size re-encode each; videos with a smaller re-encode.
    Returns the number of files made."""
    import numpy as np

    from importd.media.ffmpeg import current_ffmpeg

    rng = np.random.default_rng(18)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(pictures):
        picture = photo(rng, (1600, 1200))
        picture.save(root / f"img{i:04d}.jpg", quality=88)
        picture.save(root / f"img{i:04d} copy.jpg", quality=88)
        picture.resize((800, 600)).save(root / f"img{i:04d} small.jpg", quality=80)
    ffmpeg = current_ffmpeg().path
    assert ffmpeg is not None
    for path in make_videos(root / "clips", videos):
        small = path.replace(".mp4", " small.mkv")
        subprocess.run(
            [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", path,
             "-vf", "scale=320:180", "-c:v", "mpeg4", "-q:v", "5", "-an", small],
            check=True,
        )  # fmt: skip
    return pictures * 3 + videos * 2


def seed_archive(db: Path, root_name: str, rows: int) -> int:
    """`rows` present files under the root named `root_name`, straight into the catalog; one in
    PAIR_SHARE shares its content with the next. Returns the number of exact-duplicate pairs."""
    conn = sqlite3.connect(db)
    try:
        (root_id,) = conn.execute("SELECT id FROM roots WHERE name = ?", (root_name,)).fetchone()
        now = time.time()
        contents: list[tuple[str, int, float]] = []
        files: list[tuple[Any, ...]] = []
        pairs = 0
        i = 0
        while i < rows:
            digest = f"{i:064x}"
            contents.append((digest, 4096, now))
            copies = 2 if i % PAIR_SHARE == 0 and i + 1 < rows else 1
            pairs += copies == 2
            for j in range(copies):
                rel = f"show{(i + j) % 100:02d}/ep{(i + j) // 100:04d}/clip{i + j:06d}.bin"
                files.append(
                    (root_id, rel.encode(), rel, 4096, int(now * 1e9), 10_000_000 + i + j, 99, digest,
                     "present", now, now, now)
                )  # fmt: skip
            i += copies
        conn.executemany("INSERT INTO contents (blake3, size, first_seen) VALUES (?, ?, ?)", contents)
        conn.executemany(
            "INSERT INTO files (root_id, relpath, display_path, size, mtime_ns, inode, dev, blake3, status,"
            " first_seen, last_seen, hashed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            files,
        )
        conn.commit()
        return pairs
    finally:
        conn.close()


def _timed(*argvs: list[str]) -> tuple[float, list[bytes]]:
    start = time.perf_counter()
    outs = [subprocess.run(argv, capture_output=True, check=True).stdout for argv in argvs]
    return time.perf_counter() - start, outs


def bench_html_report(work_dir: Path, quick: bool = False) -> dict[str, Any]:
    """`importctl report --html` on a 100,000-file catalog (10,000 with --quick) vs dupes + gaps."""
    rows = 10_000 if quick else 100_000
    pictures, videos = (20, 2) if quick else (60, 4)
    photos = work_dir / "photos"
    made = make_media(photos, pictures, videos)
    roots = [RootSpec("photos", photos), RootSpec("archive", work_dir / "archive-not-mounted")]
    daemon = DaemonRun(find_importd(), work_dir / "home", roots, SETTLE_SECONDS)
    daemon.start()
    try:
        daemon.wait_ready()
        wait_registered(daemon, made, timeout=600)
        wait_media_idle(daemon, timeout=900)
    finally:
        daemon.stop()
    pairs = seed_archive(daemon.db, "archive", rows)
    daemon = DaemonRun(find_importd(), work_dir / "home", roots, SETTLE_SECONDS)  # a fresh log to wait on
    daemon.start()
    try:
        daemon.wait_ready()
        wait_registered(daemon, made + rows, timeout=600)
        wait_media_idle(daemon, timeout=900)
        ctl = [str(find_importctl()), "--socket", str(daemon.socket)]
        page = work_dir / "report.html"
        reference = [[*ctl, "dupes", "--json"], [*ctl, "gaps", "--json"]]
        _timed(*reference)  # the first `dupes` loads the media indexes: not part of either figure
        report_s, ref_s, summary = [], [], {}
        for _ in range(RUNS):
            wall, (out,) = _timed([*ctl, "report", "--html", str(page), "--json"])
            report_s.append(wall)
            summary = json.loads(out)
            ref_s.append(_timed(*reference)[0])
    finally:
        daemon.stop()
    size = page.stat().st_size
    sections = {k: f"{v['shown']}/{v['total']}" for k, v in summary["sections"].items()}
    # The first report makes every thumbnail; the next ones find them in the daemon's cache.
    cold, warm, ref = report_s[0], median(report_s[1:]), median(ref_s)
    checks = [
        Check(f"report --html, {rows + made:,} files, end to end (first)", cold, "s",
              Target("value_at_most", 10.0), ref, "dupes --json + gaps --json"),
        Check("  again (thumbnails cached)", warm, "s", Target("value_at_most", 5.0), ref,
              "dupes --json + gaps --json"),
        Check("  its size", size / (1 << 20), "MiB", Target("value_at_most", 8.0)),
    ]  # fmt: skip
    return {
        "files": rows + made,
        "seeded_pairs": pairs,
        "report_s": [round(t, 3) for t in report_s],
        "daemon_s": summary.get("seconds"),
        "reference_s": [round(t, 3) for t in ref_s],
        "bytes": size,
        "sections": sections,
        "checks": checks,
        "notes": [
            f"{pairs:,} seeded exact pairs and {pictures} picture / {videos} video groups on disk; "
            "the page draws 200 groups per kind and counts the rest"
        ],
    }
