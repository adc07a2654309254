"""Media benchmarks (issue 3): extraction throughput, near-duplicate queries, face embedding.

Called by `python -m bench` through its `bench_*` functions; each returns a dict of figures with a
`checks` list for the table. `calibrate_phash` reproduces the measurements behind
`importd.media.hash_index.NEAR_DUPLICATE_MAX_DISTANCE` (not part of `make bench`).
"""

from __future__ import annotations

import io
import itertools
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import numpy.typing as npt
from PIL import Image

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


# -- near-duplicate queries ------------------------------------------------------------------------


def bench_near_duplicates(quick: bool = False) -> dict[str, Any]:
    """Queries over 100,000 pHashes: the index against a numpy popcount scan, in three conditions.

    Judged: each method answers its queries back to back, the usual way to time a query, as
    `groups()`, `importctl dupes` and a batch of new images query; the two alternate in blocks, so
    that both see the same phases of a shared machine. Printed beside it, two conditions with cold
    caches: the same 8 MB write stream before every query of either method, and the layout judged
    until November 2026, a scan before each index query, which leaves the scan's data warm and the
    index's evicted.
    """
    n, queries = (20_000, 500) if quick else (100_000, 2000)
    radius = NEAR_DUPLICATE_MAX_DISTANCE
    rng = np.random.default_rng(11)
    hashes = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    # One in ten is a near copy of another (1 to 12 bits changed), as re-encodes and resizes would be.
    for i in range(0, n, 10):
        flips = rng.choice(64, int(rng.integers(1, 13)), replace=False)
        hashes[i + 1] = hashes[i] ^ np.uint64(sum(1 << int(b) for b in flips))
    index: HashIndex[int] = HashIndex()
    started = time.perf_counter()
    index.add_many(enumerate(hashes.tolist()))
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    index.query(0, radius)  # numba compiles the search loop on first use
    compile_s = time.perf_counter() - started

    def search(value: int) -> object:
        return index.query(value, radius)

    def scan(value: int) -> npt.NDArray[np.intp]:
        return np.flatnonzero(np.bitwise_count(hashes ^ np.uint64(value)) <= radius)

    # Each condition queries hashes of its own, so that none replays lines another has just read.
    values = [int(hashes[q]) for q in rng.integers(0, n, 2 * queries).tolist()]
    steady, cold, after = values[:queries], values[queries : 3 * queries // 2], values[3 * queries // 2 :]

    index_us, scan_us = _alternating_blocks(search, scan, steady, block=250)

    churn = np.zeros(8 << 17, np.uint64)  # 8 MB: more than this machine's caches keep for one core
    cold_index_us, cold_scan_us, after_scan_us, scan_before_us = [], [], [], []
    for value in cold:
        churn += np.uint64(1)
        cold_index_us.append(_timed_us(search, value))
        churn += np.uint64(1)
        cold_scan_us.append(_timed_us(scan, value))
    for value in after:
        scan_before_us.append(_timed_us(scan, value))
        after_scan_us.append(_timed_us(search, value))
    started = time.perf_counter()
    groups = index.groups(radius)
    groups_s = time.perf_counter() - started
    # Exactness, untimed and last.
    mismatches = sum(sorted(k for k, _ in index.query(v, radius)) != scan(v).tolist() for v in values)

    p50, p99 = _pct(index_us, 50), _pct(index_us, 99)
    b50, b99 = _pct(scan_us, 50), _pct(scan_us, 99)
    cold50, cold_scan50 = _pct(cold_index_us, 50), _pct(cold_scan_us, 50)
    after50, before50 = _pct(after_scan_us, 50), _pct(scan_before_us, 50)
    figures: dict[str, Any] = {
        "hashes": n,
        "queries": queries,
        "radius": radius,
        "index_p50_us": p50,
        "index_p99_us": p99,
        "scan_p50_us": b50,
        "scan_p99_us": b99,
        "speedup_p50": round(b50 / p50, 1),
        "speedup_p99": round(b99 / p99, 1),
        "result_mismatches": mismatches,
        "cold_index_p50_us": cold50,
        "cold_scan_p50_us": cold_scan50,
        "cold_speedup_p50": round(cold_scan50 / cold50, 1),
        "after_scan_index_p50_us": after50,
        "after_scan_scan_p50_us": before50,
        "after_scan_speedup_p50": round(before50 / after50, 1),
        "build_s": round(build_s, 3),
        "first_query_compile_s": round(compile_s, 2),
        "groups_all_s": round(groups_s, 3),
        "groups_found": len(groups),
    }
    figures["checks"] = [
        Check(
            f"near-dup query p50 ({n:,} pHashes, d<={radius})",
            p50,
            "us",
            Target("ratio_at_most", 1 / 20),
            baseline=b50,
            baseline_name="numpy popcount scan",
            note="target: 20x faster; each method's queries back to back, in alternating blocks",
        ).as_dict(),
        Check("near-dup query p99", p99, "us", baseline=b99, baseline_name="numpy popcount scan").as_dict(),
        Check(
            "  near-dup query p50, cold caches",
            cold50,
            "us",
            INFO,
            baseline=cold_scan50,
            baseline_name="numpy popcount scan, cold",
            note="an 8 MB write stream before every query of either method",
        ).as_dict(),
        Check(
            "  near-dup query p50, each after a scan",
            after50,
            "us",
            INFO,
            baseline=before50,
            baseline_name="numpy popcount scan",
            note="the scan's data stays warm, the index's is evicted",
        ).as_dict(),
        Check(f"all near-dup groups over {n:,}", round(groups_s, 3), "s").as_dict(),
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
