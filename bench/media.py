"""Media benchmarks: extraction throughput, `importctl dupes` end to end and near-duplicate queries,
face embedding.

Called by `python -m bench` through its `bench_*` functions; each returns a dict of figures with a
`checks` list for the table. `calibrate_phash` reproduces the measurements behind
`importd.media.hash_index.NEAR_DUPLICATE_MAX_DISTANCE` (not part of `make bench`).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import numpy.typing as npt
from PIL import Image

from bench.core import DaemonRun, RootSpec, find_importd
from bench.report import Check, Target
from importd.media.failure import ExtractionFailure
from importd.media.hash_index import NEAR_DUPLICATE_MAX_DISTANCE, HashIndex
from importd.media.hashes import hamming, perceptual_hashes
from importd.media.image import DEFAULT_MAX_PIXELS, ImageFacts, extract_image
from importd.media.pool import ExtractionPool, Measured, default_pool_size, measured
from importd.media.video import AVFacts, VideoFingerprint, extract_av, video_fingerprint

INFO = Target("info")


# -- extraction throughput -------------------------------------------------------------------------


def bench_extraction(work_dir: Path, quick: bool = False) -> dict[str, Any]:
    """2,000 generated images and 50 short videos through the pool: files/s and CPU time per file."""
    images, videos = (200, 10) if quick else (2000, 50)
    image_dir, video_dir = work_dir / "images", work_dir / "videos"
    image_paths = make_images(image_dir, images)
    video_paths = make_videos(video_dir, videos)
    workers = default_pool_size()

    async def run_all() -> tuple[list[Measured[Any] | ExtractionFailure], list[Any], float, float]:
        with ExtractionPool(workers) as pool:
            started = time.perf_counter()
            image_results: list[Measured[Any] | ExtractionFailure] = []

            async def one_image(path: str) -> None:
                image_results.append(
                    await pool.run(
                        "image",
                        measured,
                        extract_image,
                        path,
                        timeout=60,
                        kwargs={"max_pixels": DEFAULT_MAX_PIXELS},
                    )
                )

            async with anyio.create_task_group() as group:
                for path in image_paths:
                    group.start_soon(one_image, path)
            image_wall = time.perf_counter() - started

            started = time.perf_counter()
            video_results: list[tuple[Any, Any]] = []

            async def one_video(path: str) -> None:
                facts = await pool.run("av", measured, extract_av, path, timeout=60)
                duration = (
                    facts.value.duration_s
                    if isinstance(facts, Measured) and isinstance(facts.value, AVFacts)
                    else 0
                )
                fingerprint = await pool.run(
                    "video_fp", measured, video_fingerprint, path, duration, timeout=120
                )
                video_results.append((facts, fingerprint))

            async with anyio.create_task_group() as group:
                for path in video_paths:
                    group.start_soon(one_video, path)
            video_wall = time.perf_counter() - started
        return image_results, video_results, image_wall, video_wall

    image_results, video_results, image_wall, video_wall = anyio.run(run_all)
    image_cpu = _cpu_ms(image_results, ImageFacts)
    av_cpu = _cpu_ms([f for f, _ in video_results], AVFacts)
    fp_cpu = _cpu_ms([p for _, p in video_results], VideoFingerprint)
    figures: dict[str, Any] = {
        "workers": workers,
        "images": images,
        "videos": videos,
        "image_files_per_s": round(images / image_wall, 1),
        "video_files_per_s": round(videos / video_wall, 2),
        "image_cpu_ms_per_file": image_cpu,
        "av_cpu_ms_per_file": av_cpu,
        "video_fp_cpu_ms_per_file": fp_cpu,
        "image_failures": sum(not _ok(r, ImageFacts) for r in image_results),
        "video_failures": sum(not (_ok(f, AVFacts) and _ok(p, VideoFingerprint)) for f, p in video_results),
    }
    figures["checks"] = [
        Check(
            "image extraction", figures["image_files_per_s"], "files/s", note=f"{workers} workers"
        ).as_dict(),
        Check("video av + fingerprint", figures["video_files_per_s"], "files/s").as_dict(),
        Check("image: CPU per file", image_cpu, "ms").as_dict(),
        Check("av: CPU per file", av_cpu, "ms").as_dict(),
        Check("video_fp: CPU per file (with ffmpeg)", fp_cpu, "ms").as_dict(),
    ]
    return figures


def _ok(result: object, kind: type) -> bool:
    return isinstance(result, Measured) and isinstance(result.value, kind)


def _cpu_ms(results: Sequence[object], kind: type) -> float | None:
    times = [r.cpu_s for r in results if isinstance(r, Measured) and isinstance(r.value, kind)]
    return round(1000 * statistics.fmean(times), 2) if times else None


def photo(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A photograph-like picture: smooth colour fields and shapes drawn small, enlarged, plus noise."""
    width, height = size
    small_w, small_h = max(8, width // 8), max(8, height // 8)
    y, x = np.mgrid[0:small_h, 0:small_w].astype(np.float32)
    channels = []
    for _ in range(3):
        field = np.zeros((small_h, small_w), np.float32)
        for _ in range(5):
            fx, fy = rng.uniform(0.5, 6, 2) * 2 * np.pi / np.array([small_w, small_h])
            field += rng.uniform(20, 60) * np.sin(fx * x + fy * y + rng.uniform(0, 2 * np.pi))
        channels.append(field + rng.uniform(60, 190))
    pixels = np.stack(channels, axis=-1)
    for _ in range(5):
        cx, cy, r = rng.uniform(0, small_w), rng.uniform(0, small_h), rng.uniform(2, small_w / 6)
        pixels[(x - cx) ** 2 + (y - cy) ** 2 < r**2] = rng.uniform(0, 255, 3)
    small = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    big = np.asarray(small.resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
    noisy = big + rng.integers(-4, 5, big.shape, dtype=np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def make_images(directory: Path, count: int, seed: int = 3) -> list[str]:
    """`count` images: 70 % JPEG 1600×1200 (a camera-ish size), 20 % PNG 800×600, 10 % WebP 1024×768."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        kind = "jpg" if i % 10 < 7 else ("png" if i % 10 < 9 else "webp")
        size = {"jpg": (1600, 1200), "png": (800, 600), "webp": (1024, 768)}[kind]
        path = directory / f"img{i:05d}.{kind}"
        picture = photo(rng, size)
        if kind == "png":
            picture.save(path, compress_level=1)
        else:
            picture.save(path, quality=85)
        paths.append(str(path))
    return paths


def make_videos(directory: Path, count: int) -> list[str]:
    """`count` 6-second 640×360 H.264 + AAC clips from varied ffmpeg test sources.

    Keyframes every 2 s, as cameras and web exports have them: fingerprinting seeks to 8 points, and
    each seek decodes from the keyframe before it.
    """
    from importd.media.ffmpeg import current_ffmpeg

    ffmpeg = current_ffmpeg().path  # the one importd fingerprints with: PATH's, else the wheel's
    if ffmpeg is None:
        raise RuntimeError(f"no ffmpeg: {current_ffmpeg().problem}")
    directory.mkdir(parents=True, exist_ok=True)
    sources = ["testsrc2", "mandelbrot", "life", "cellauto", "smptebars", "gradients"]
    paths = []
    for i in range(count):
        source = sources[i % len(sources)]
        extra = f":seed={i}" if source in ("life", "cellauto", "gradients") else ""
        path = directory / f"clip{i:03d}.mp4"
        # fmt: off
        subprocess.run(
            [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", f"{source}=s=640x360:r=25{extra},trim=duration=6,format=yuv420p",
             "-f", "lavfi", "-i", f"sine=frequency={220 + 10 * i}:d=6",
             "-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-c:a", "aac", "-shortest", str(path)],
            check=True,
        )
        # fmt: on
        paths.append(str(path))
    return paths


# -- near-duplicate search ----------------------------------------------------------------------------


def near_duplicate_hashes(n: int, seed: int = 11) -> npt.NDArray[np.uint64]:
    """`n` random pHashes, one in ten a near copy of the one before (1 to 12 bits changed), as
    re-encodes and resizes would be."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    flips = [rng.choice(64, int(rng.integers(1, 13)), replace=False) for _ in range(0, n - 1, 10)]
    masks = np.array([sum(1 << int(b) for b in bits) for bits in flips], np.uint64)
    hashes[1::10][: len(masks)] = hashes[0::10][: len(masks)] ^ masks
    return hashes


def bench_dupes(work_dir: Path, quick: bool = False) -> dict[str, Any]:
    """`importctl dupes --kind near` end to end, the real client against a real daemon whose catalog
    holds 100,000 and 1,000,000 images' pHashes (seeded directly), beside faiss' flat binary index
    (a range search of every hash, the search alone) and a numpy popcount scan of all pairs, over
    the same hashes in the same run. At a million both references take minutes: they search a
    sample of the hashes and are scaled up to all of them, as their labels say."""
    sizes = (20_000,) if quick else (100_000, 1_000_000)
    figures: dict[str, Any] = {}
    checks: list[dict[str, Any]] = []
    for n in sizes:
        found = _dupes_at(work_dir / f"dupes-{n}", n)
        figures[str(n)] = found
        scale = f"{n:,} pHashes"
        faiss_label = "faiss IndexBinaryFlat range_search" + (
            f", {found['faiss_sample']:,} queries scaled" if found["faiss_sample"] < n else ""
        )
        numpy_label = "numpy popcount scan, all pairs" + (
            f", {found['numpy_sample']:,} rows scaled" if found["numpy_sample"] < n else ""
        )
        checks += [
            Check(
                f"importctl dupes --kind near ({scale})",
                found["dupes_s"],
                "s",
                Target("ratio_at_most", 1.0),
                baseline=found["faiss_s"],
                baseline_name=faiss_label,
                note=f"end to end, {found['groups']:,} groups; median of {DUPES_RUNS}",
            ).as_dict(),
            Check(
                "  the same beside numpy",
                found["dupes_s"],
                "s",
                INFO,
                baseline=found["numpy_s"],
                baseline_name=numpy_label,
            ).as_dict(),
            Check(
                "  first dupes after a start",
                found["first_dupes_s"],
                "s",
                INFO,
                note="loads the index from the catalog",
            ).as_dict(),
        ]
    figures["checks"] = checks
    return figures


DUPES_RUNS = 3


def _dupes_at(home: Path, n: int) -> dict[str, Any]:
    from bench.maintenance import find_importctl

    radius = NEAR_DUPLICATE_MAX_DISTANCE
    hashes = near_duplicate_hashes(n)
    empty = home / "root"
    empty.mkdir(parents=True, exist_ok=True)
    roots = [RootSpec("empty", empty)]
    with _daemon(DaemonRun(find_importd(), home, roots, settle_seconds=1.0)) as daemon:
        daemon.wait_ready()  # the catalog is created
    started = time.perf_counter()
    _seed_catalog(daemon.db, hashes)
    seed_s = time.perf_counter() - started
    argv = [str(find_importctl()), "--socket", str(daemon.socket), "--timeout", "900"]
    argv += ["dupes", "--kind", "near"]
    with _daemon(DaemonRun(find_importd(), home, roots, settle_seconds=1.0)) as daemon:
        daemon.wait_ready()
        _wait_media_ready(daemon)
        first = _timed_run(argv)
        runs = sorted(_timed_run(argv) for _ in range(DUPES_RUNS))
        reply = json.loads(subprocess.run([*argv, "--json"], capture_output=True, check=True).stdout)
    groups = [g for g in reply["groups"] if g["kind"] == "near" and g["media"] == "image"]
    faiss_s, faiss_sample, faiss_pairs = _faiss_pairs(hashes, radius, sample=n if n <= 200_000 else 10_000)
    numpy_s, numpy_sample = _numpy_pairs(hashes, radius, sample=n if n <= 200_000 else 2_000)
    figures: dict[str, Any] = {
        "hashes": n,
        "radius": radius,
        "seed_catalog_s": round(seed_s, 1),
        "first_dupes_s": round(first, 3),
        "dupes_s": round(runs[len(runs) // 2], 3),
        "dupes_runs_s": [round(r, 3) for r in runs],
        "groups": len(groups),
        "faiss_s": round(faiss_s, 3),
        "faiss_sample": faiss_sample,
        "numpy_s": round(numpy_s, 3),
        "numpy_sample": numpy_sample,
    }
    if faiss_pairs is not None:  # every pair found: the groups must be its connected components
        figures["groups_match_faiss"] = len(groups) == _component_count(faiss_pairs, n)
    return figures


@contextmanager
def _daemon(daemon: DaemonRun) -> Iterator[DaemonRun]:
    """A daemon run, stopped at the end, with its log pipe closed (DaemonRun leaves it open)."""
    try:
        with daemon:
            yield daemon
    finally:
        if daemon.proc is not None and daemon.proc.stderr is not None:
            daemon.proc.stderr.close()


def _timed_run(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.PIPE, check=True)
    return time.perf_counter() - started


def _wait_media_ready(daemon: Any, timeout: float = 600) -> None:
    """The start-up catch-up reads every content once; the timed calls come after it."""
    deadline = time.monotonic() + timeout
    while not (daemon.status().get("media") or {}).get("ready"):
        if time.monotonic() > deadline:
            raise RuntimeError("the extract stage did not get ready")
        time.sleep(0.2)


def _seed_catalog(db: Path, hashes: npt.NDArray[np.uint64]) -> None:
    """One present file per pHash, under a root the daemon does not watch (its rows are left
    alone, and their paths print relative): what extraction would have stored for as many images."""
    import sqlite3

    from importd.media.hashes import to_signed64

    now = time.time()
    digests = [f"{i:064x}" for i in range(len(hashes))]
    with sqlite3.connect(db) as conn:
        root_id = conn.execute("INSERT INTO roots (name, path) VALUES ('archive', '/srv/archive')").lastrowid
        conn.executemany(
            "INSERT INTO contents (blake3, size, first_seen) VALUES (?, 1000, ?)", ((d, now) for d in digests)
        )
        conn.executemany(
            "INSERT INTO files (root_id, relpath, display_path, size, mtime_ns, inode, dev, blake3, status,"
            " first_seen, last_seen, hashed_at) VALUES (?, ?, ?, 1000, 0, ?, 1, ?, 'present', ?, ?, ?)",
            (
                (root_id, f"photos/{i:07d}.jpg".encode(), f"photos/{i:07d}.jpg", i + 1, d, now, now, now)
                for i, d in enumerate(digests)
            ),
        )
        conn.executemany(
            "INSERT INTO image_hashes (blake3, phash, dhash, low_detail) VALUES (?, ?, 0, 0)",
            zip(digests, (to_signed64(h) for h in hashes.tolist()), strict=True),
        )


def _faiss_pairs(
    hashes: npt.NDArray[np.uint64], radius: int, sample: int
) -> tuple[float, int, npt.NDArray[np.int64] | None]:
    """Seconds for faiss' flat binary index to find every hash's neighbours within `radius` (a
    range search: distances below radius + 1), scaled up from `sample` queries when fewer than all;
    with all, the pairs (i < j) it found."""
    import faiss  # type: ignore[import-untyped]

    codes = np.ascontiguousarray(hashes).view(np.uint8).reshape(-1, 8)
    started = time.perf_counter()
    index = faiss.IndexBinaryFlat(64)
    index.add(codes)
    lims, _, found = index.range_search(codes[:sample], radius + 1)
    seconds = (time.perf_counter() - started) * len(hashes) / sample
    if sample < len(hashes):
        return seconds, sample, None
    rows = np.repeat(np.arange(sample, dtype=np.int64), np.diff(lims).astype(np.int64))
    keep = rows < found
    return seconds, sample, np.stack([rows[keep], found[keep].astype(np.int64)])


def _numpy_pairs(hashes: npt.NDArray[np.uint64], radius: int, sample: int) -> tuple[float, int]:
    """Seconds for numpy to compare every hash with every other (blocks of rows), scaled up from the
    first `sample` rows when fewer than all."""
    started = time.perf_counter()
    pairs = 0
    for start in range(0, sample, 64):
        block = hashes[start : min(start + 64, sample), None]
        pairs += int(np.count_nonzero(np.bitwise_count(block ^ hashes[None, :]) <= radius))
    return (time.perf_counter() - started) * len(hashes) / sample, sample


def _component_count(pairs: npt.NDArray[np.int64], n: int) -> int:
    from importd.media.near_groups import components

    return len(components(pairs[0], pairs[1], n)[1])


def bench_near_duplicates(quick: bool = False) -> dict[str, Any]:
    """Single queries over 100,000 pHashes: the index against a numpy popcount scan, each method's
    queries back to back, in alternating blocks so that both see the same phases of a shared
    machine. Informational: a lookup (`importctl info`) sits inside a round trip of about a
    millisecond; the figure that counts is `bench_dupes`."""
    n, queries = (20_000, 500) if quick else (100_000, 2000)
    radius = NEAR_DUPLICATE_MAX_DISTANCE
    rng = np.random.default_rng(12)
    hashes = near_duplicate_hashes(n)
    index: HashIndex[int] = HashIndex()
    started = time.perf_counter()
    index.add_many(enumerate(hashes.tolist()))
    build_s = time.perf_counter() - started

    def search(value: int) -> object:
        return index.query(value, radius)

    def scan(value: int) -> npt.NDArray[np.intp]:
        return np.flatnonzero(np.bitwise_count(hashes ^ np.uint64(value)) <= radius)

    values = [int(hashes[q]) for q in rng.integers(0, n, queries).tolist()]
    index_us, scan_us = _alternating_blocks(search, scan, values, block=250)
    started = time.perf_counter()
    groups = index.groups(radius)
    groups_s = time.perf_counter() - started
    # Exactness, untimed and last.
    mismatches = sum(sorted(k for k, _ in index.query(v, radius)) != scan(v).tolist() for v in values)

    p50, p99 = _pct(index_us, 50), _pct(index_us, 99)
    b50, b99 = _pct(scan_us, 50), _pct(scan_us, 99)
    figures: dict[str, Any] = {
        "hashes": n,
        "queries": queries,
        "radius": radius,
        "index_p50_us": p50,
        "index_p99_us": p99,
        "scan_p50_us": b50,
        "scan_p99_us": b99,
        "speedup_p50": round(b50 / p50, 1),
        "result_mismatches": mismatches,
        "build_s": round(build_s, 3),
        "groups_all_s": round(groups_s, 3),
        "groups_found": len(groups),
    }
    figures["checks"] = [
        Check(
            f"near-dup query p50 ({n:,} pHashes, d<={radius})",
            p50,
            "us",
            INFO,
            baseline=b50,
            baseline_name="numpy popcount scan",
            note="informational: a lookup sits in a ~1 ms round trip",
        ).as_dict(),
        Check(
            "near-dup query p99", p99, "us", INFO, baseline=b99, baseline_name="numpy popcount scan"
        ).as_dict(),
        Check(f"all near-dup groups over {n:,}, in process", round(groups_s, 3), "s").as_dict(),
    ]
    return figures


def _timed_us(function: Callable[[int], object], value: int) -> float:
    started = time.perf_counter()
    function(value)
    return (time.perf_counter() - started) * 1e6


def _alternating_blocks(
    first: Callable[[int], object], second: Callable[[int], object], values: Sequence[int], block: int
) -> tuple[list[float], list[float]]:
    """Per-call µs of `first` and of `second` over `values`: each runs a block of calls back to back,
    then the other runs the same block."""
    first_us: list[float] = []
    second_us: list[float] = []
    for start in range(0, len(values), block):
        chunk = values[start : start + block]
        first_us.extend(_timed_us(first, value) for value in chunk)
        second_us.extend(_timed_us(second, value) for value in chunk)
    return first_us, second_us


def _pct(values: Sequence[float], pct: float) -> float:
    return round(float(np.percentile(values, pct)), 2)


# -- faces ------------------------------------------------------------------------------------------


def bench_faces(work_dir: Path, quick: bool = False) -> dict[str, Any]:
    """Face detection + embedding per image with the synthetic test models, and what the pipeline
    (decode, resize, anchors, NMS, alignment, normalisation) adds over the bare onnxruntime calls."""
    import cv2
    import onnxruntime  # type: ignore[import-untyped]

    from importd.media.faces import FaceModel, FaceSettings
    from tests import media_models

    images = 20 if quick else 100
    pack = media_models.build_pack(work_dir / "buffalo_l")
    model = FaceModel.load(pack, FaceSettings())
    if not isinstance(model, FaceModel):
        return {"error": model.reason}
    kinds = ["checker", "hstripes", "vstripes", "rings", "diagonal"]
    paths = []
    for i in range(images):
        # Drawn at 640 px (the detector's grid) and enlarged to 1280 px, so it sees them at 640 again.
        layout = [(kinds[(i + k) % len(kinds)], 32 + 192 * k, 96 + 32 * (i % 8)) for k in range(3)]
        small = Image.fromarray(media_models.picture_with_faces(layout, size=(640, 480)))
        target = work_dir / f"faces{i:03d}.jpg"
        small.resize((1280, 960), Image.Resampling.NEAREST).save(target, quality=90)
        paths.append(str(target))

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    detector = onnxruntime.InferenceSession(
        str(pack / media_models.DETECTOR_FILE), options, ["CPUExecutionProvider"]
    )
    recogniser = onnxruntime.InferenceSession(
        str(pack / media_models.RECOGNISER_FILE), options, ["CPUExecutionProvider"]
    )

    pipeline_ms, direct_ms, found = [], [], 0
    model.detect(paths[0])  # warm-up: per-size sessions are built on first use
    for path in paths:
        started = time.perf_counter()
        faces = model.detect(path)
        pipeline_ms.append((time.perf_counter() - started) * 1000)
        assert not isinstance(faces, ExtractionFailure), faces
        found += len(faces)
        # The same inference with onnxruntime alone: inputs prepared outside the timed part.
        picture = np.asarray(Image.open(path).convert("RGB"))[..., ::-1]
        canvas = np.zeros((640, 640, 3), np.uint8)
        canvas[:480, :640] = cv2.resize(picture, (640, 480))
        blob = cv2.dnn.blobFromImage(canvas, 1 / 128, (640, 640), (127.5,) * 3, swapRB=True)
        crops = np.random.default_rng(0).standard_normal((max(1, len(faces)), 3, 112, 112)).astype(np.float32)
        started = time.perf_counter()
        detector.run(None, {detector.get_inputs()[0].name: blob})
        recogniser.run(None, {recogniser.get_inputs()[0].name: crops})
        direct_ms.append((time.perf_counter() - started) * 1000)
    pipeline, direct = statistics.median(pipeline_ms), statistics.median(direct_ms)
    figures: dict[str, Any] = {
        "images": images,
        "faces_found": found,
        "picture": "1280x960 JPEG, 3 faces",
        "pipeline_ms_per_image": round(pipeline, 2),
        "onnxruntime_ms_per_image": round(direct, 2),
        "overhead_ms_per_image": round(pipeline - direct, 2),
    }
    figures["checks"] = [
        Check(
            "faces per image (test models)", round(pipeline, 2), "ms", note="decode to embeddings"
        ).as_dict(),
        Check("  bare onnxruntime calls", round(direct, 2), "ms").as_dict(),
        Check("  pipeline overhead", round(pipeline - direct, 2), "ms").as_dict(),
    ]
    return figures


# -- calibration (not run by make bench) -----------------------------------------------------------


def calibrate_phash(corpus: Path, *, min_colours: int = 1500) -> dict[str, Any]:
    """pHash distances of edited copies and of different pictures, over the decodable corpus images.

    Copies: resized, re-encoded, cropped. Different pictures: pairs whose 16×16 grey thumbnails are
    uncorrelated (r < 0.5) and far apart (mean difference > 20 levels). `photo_like` restricts to
    pictures with at least `min_colours` distinct colours at 64×64 (photographs, not drawings).
    """
    bases: list[tuple[Image.Image, int, bool]] = []
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        facts = extract_image(str(path), max_pixels=DEFAULT_MAX_PIXELS)
        if not isinstance(facts, ImageFacts) or facts.low_detail or min(facts.width, facts.height) < 64:
            continue
        try:
            with Image.open(path) as im:
                im.load()
                picture = im.convert("RGB")
        except Exception:
            continue
        picture.thumbnail((512, 512))
        colours = len(set(picture.resize((64, 64)).getdata()))
        bases.append((picture, perceptual_hashes(picture)[0], colours >= min_colours))

    def jpeg(im: Image.Image, quality: int) -> Image.Image:
        buffer = io.BytesIO()
        im.save(buffer, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")

    def crop(im: Image.Image, share: float) -> Image.Image:
        dx, dy = int(im.width * share), int(im.height * share)
        return im.crop((dx, dy, im.width - dx, im.height - dy))

    def half(im: Image.Image) -> Image.Image:
        return im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.Resampling.LANCZOS)

    edits: dict[str, Callable[[Image.Image], Image.Image]] = {
        "half": half,
        "quarter": lambda im: half(half(im)),
        "jpeg75": lambda im: jpeg(im, 75),
        "jpeg40": lambda im: jpeg(im, 40),
        "half+jpeg60": lambda im: jpeg(half(im), 60),
        "crop2%": lambda im: crop(im, 0.02),
        "crop5%": lambda im: crop(im, 0.05),
        "crop10%": lambda im: crop(im, 0.10),
    }
    result: dict[str, Any] = {"images": len(bases), "photo_like": sum(p for _, _, p in bases)}
    for name, edit in edits.items():
        for subset, rows in (("all", bases), ("photo_like", [b for b in bases if b[2]])):
            d = np.array([hamming(h, perceptual_hashes(edit(im))[0]) for im, h, _ in rows])
            result[f"{name}/{subset}"] = {
                "p50": float(np.percentile(d, 50)),
                "p95": float(np.percentile(d, 95)),
                "p99": float(np.percentile(d, 99)),
                "max": int(d.max()),
                "share_within_threshold": round(float(np.mean(d <= NEAR_DUPLICATE_MAX_DISTANCE)), 3),
            }
    thumbs = np.array(
        [np.asarray(im.convert("L").resize((16, 16)), np.float32).ravel() for im, _, _ in bases]
    )
    centred = thumbs - thumbs.mean(1, keepdims=True)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True) + 1e-6
    correlation = centred @ centred.T
    for subset, wanted in (("all", None), ("photo_like", True)):
        distances = [
            hamming(bases[i][1], bases[j][1])
            for i, j in itertools.combinations(range(len(bases)), 2)
            if correlation[i, j] < 0.5
            and float(np.abs(thumbs[i] - thumbs[j]).mean()) > 20
            and (wanted is None or (bases[i][2] and bases[j][2]))
        ]
        d = np.array(distances)
        result[f"different/{subset}"] = {
            "pairs": len(d),
            "min": int(d.min()),
            "p0.1": float(np.percentile(d, 0.1)),
            "p1": float(np.percentile(d, 1)),
            "within_threshold": int((d <= NEAR_DUPLICATE_MAX_DISTANCE).sum()),
        }
    return result


if __name__ == "__main__":  # pragma: no cover - manual calibration run
    print(calibrate_phash(Path(os.environ.get("CORPUS", "../shared/corpus/pillow-images"))))
