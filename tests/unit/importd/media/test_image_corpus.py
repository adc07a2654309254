"""The Pillow project's test images, corrupt and fuzzed ones included, through extract_image in the pool.

Every file must come back as facts or as a failure with a reason, inside its time limit: no decoder
may hang or crash the pool.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

import anyio
import pytest

from importd.media.failure import ExtractionFailure
from importd.media.image import DEFAULT_MAX_PIXELS, ImageFacts, extract_image
from importd.media.pool import ExtractionPool

CORPUS = Path(__file__).resolve().parents[5] / "shared" / "corpus" / "pillow-images"
PER_FILE_TIMEOUT_S = 30.0


@pytest.mark.slow  # 10-20 s on two cores: a few fuzzed files take seconds each to be refused
@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"corpus not found at {CORPUS}")
def test_every_corpus_file_gives_facts_or_a_reason() -> None:
    files = sorted(str(p) for p in CORPUS.rglob("*") if p.is_file())
    assert len(files) > 1000
    results: dict[str, ImageFacts | ExtractionFailure] = {}

    async def main() -> None:
        with ExtractionPool(max(2, os.cpu_count() or 1)) as pool:

            async def one(path: str) -> None:
                results[path] = await pool.run(
                    "image",
                    extract_image,
                    path,
                    timeout=PER_FILE_TIMEOUT_S,
                    kwargs={"max_pixels": DEFAULT_MAX_PIXELS},
                )

            async with anyio.create_task_group() as group:
                for path in files:
                    group.start_soon(one, path)

    anyio.run(main)
    assert set(results) == set(files)
    failures = {p: r for p, r in results.items() if isinstance(r, ExtractionFailure)}
    assert all(isinstance(r, ImageFacts) for p, r in results.items() if p not in failures)
    assert all(f.extractor == "image" and f.reason.strip() for f in failures.values())
    stuck = [p for p, f in failures.items() if "timed out" in f.reason or "worker died" in f.reason]
    assert stuck == []
    # Files the Pillow project made to break decoders are refused; its ordinary pictures are read.
    for name in ("hopper.jpg", "hopper.png", "hopper.gif", "hopper.webp", "hopper.tif", "hopper.bmp"):
        assert isinstance(results[str(CORPUS / name)], ImageFacts), name
    for name in ("oom-8ed3316a4109213ca96fb8a256a0bfefdece1461.icns", "zero_width.gif"):
        path = str(CORPUS / name)
        if path in results:
            assert isinstance(results[path], ExtractionFailure), name
    reasons = collections.Counter(f.reason.split(":")[0] for f in failures.values())
    analysed = len(files) - len(failures)
    print(f"\n{len(files)} files: {analysed} analysed, {len(failures)} failed: {dict(reasons)}")
