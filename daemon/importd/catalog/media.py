"""Media writes and reads: what extraction found per content (`extractions`), perceptual
hashes, video fingerprints and faces, and the reads behind `importctl dupes`, `info` and the
media stage's catch-up (`pipeline/extract.py` plans and runs the work; it stores through here).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Connection

from importd.catalog.engine import dialect_insert
from importd.catalog.models import STATUS_PRESENT
from importd.catalog.tables import chunks, extractions, faces, files, image_hashes, video_fingerprints
from importd.media.failure import ExtractionFailure
from importd.media.versions import WorkKey

if TYPE_CHECKING:
    from importd.media.video import VideoFingerprint


def to_jsonable(value: Any) -> Any:
    import numpy as np

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


@dataclass
class ExtractOutcome:
    key: WorkKey
    result: Any  # facts, list[Face], or ExtractionFailure
    cpu_s: float | None = None


def store_outcome(conn: Connection, outcome: ExtractOutcome, now: float) -> None:
    key = outcome.key
    result = outcome.result
    failed = isinstance(result, ExtractionFailure)
    values = {
        "blake3": key.content_hash,
        "extractor": key.extractor,
        "version": key.version,
        "status": "failed" if failed else "ok",
        "facts": None if failed else json.dumps(to_jsonable(_facts_of(key.extractor, result))),
        "error": result.reason[:2000] if failed else None,
        "at": now,
        "cpu_s": outcome.cpu_s,
    }
    stmt = dialect_insert(conn, extractions).values(values)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["blake3", "extractor"],
            set_={k: v for k, v in values.items() if k not in ("blake3", "extractor")},
        )
    )
    if failed:
        return
    import numpy as np

    from importd.media.image import ImageFacts
    from importd.media.video import VideoFingerprint

    if key.extractor == "image" and isinstance(result, ImageFacts):
        conn.execute(delete(image_hashes).where(image_hashes.c.blake3 == key.content_hash))
        conn.execute(
            image_hashes.insert().values(
                blake3=key.content_hash, phash=result.phash, dhash=result.dhash, low_detail=result.low_detail
            )
        )
    elif key.extractor == "video_fp" and isinstance(result, VideoFingerprint):
        conn.execute(delete(video_fingerprints).where(video_fingerprints.c.blake3 == key.content_hash))
        conn.execute(
            video_fingerprints.insert().values(
                blake3=key.content_hash,
                duration_s=result.duration_s,
                frames=json.dumps(list(result.frames)),
                blank=json.dumps(list(result.blank)),
            )
        )
    elif key.extractor == "faces":
        conn.execute(delete(faces).where(faces.c.blake3 == key.content_hash))
        for i, face in enumerate(result):
            x1, y1, x2, y2 = (float(v) for v in face.bbox)
            conn.execute(
                faces.insert().values(
                    blake3=key.content_hash,
                    idx=i,
                    x1=x1,
                    y1=y1,
                    x2=x2,
                    y2=y2,
                    det_score=float(face.det_score),
                    embedding=np.asarray(face.embedding, dtype=np.float32).tobytes(),
                )
            )


def _facts_of(extractor: str, result: Any) -> Any:
    if extractor == "faces":
        return {
            "count": len(result),
            "faces": [{"bbox": [float(v) for v in f.bbox], "det_score": float(f.det_score)} for f in result],
        }
    if extractor == "video_fp":
        return {"duration_s": result.duration_s, "frames": len(result.frames), "blank": sum(result.blank)}
    return result


def done_versions(conn: Connection, hashes: Sequence[str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for part in chunks(sorted(set(hashes))):
        rows = conn.execute(
            select(extractions.c.blake3, extractions.c.extractor, extractions.c.version).where(
                extractions.c.blake3.in_(part)
            )
        )
        for digest, extractor, version in rows:
            out.setdefault(digest, {})[extractor] = version
    return out


def last_file_id(conn: Connection) -> int:
    return int(conn.execute(select(func.max(files.c.id))).scalar() or 0)


def outdated_contents(
    conn: Connection, limit: int, root_ids: Sequence[int], up_to_id: int | None = None
) -> list[tuple[str, int, bytes]]:
    """(blake3, root_id, relpath) of one present path per content under these roots (this
    server's: it extracts what it can read), for the start-up catch-up; with `up_to_id`, only
    rows that existed then (later ones were planned as they committed)."""
    cond = [
        files.c.status == STATUS_PRESENT,
        files.c.blake3.is_not(None),
        files.c.root_id.in_(list(root_ids)),
    ]
    if up_to_id is not None:
        cond.append(files.c.id <= up_to_id)
    columns = select(files.c.blake3, files.c.root_id, files.c.relpath)
    if conn.dialect.name == "postgresql":
        # SQLite fills the bare columns of a GROUP BY from one row of the group; PostgreSQL
        # refuses them: there, the group's first row by id.
        first = select(func.min(files.c.id)).where(*cond).group_by(files.c.blake3).limit(limit)
        rows = conn.execute(columns.where(files.c.id.in_(first)))
    else:
        rows = conn.execute(columns.where(*cond).group_by(files.c.blake3).limit(limit))
    return [(d, r, bytes(p)) for d, r, p in rows]


Indexes = tuple[list[tuple[str, int]], dict[str, "VideoFingerprint"], list[tuple[tuple[str, int], bytes]]]


def load_indexes(conn: Connection) -> Indexes:
    from importd.media.video import VideoFingerprint

    rows = conn.execute(select(image_hashes.c.blake3, image_hashes.c.phash, image_hashes.c.low_detail))
    images = [(d, int(p)) for d, p, low in rows if not low]
    videos = {
        d: VideoFingerprint(dur, tuple(json.loads(frames)), tuple(json.loads(blank)))
        for d, dur, frames, blank in conn.execute(
            select(
                video_fingerprints.c.blake3,
                video_fingerprints.c.duration_s,
                video_fingerprints.c.frames,
                video_fingerprints.c.blank,
            )
        )
    }
    embeddings = [
        ((d, i), bytes(e)) for d, i, e in conn.execute(select(faces.c.blake3, faces.c.idx, faces.c.embedding))
    ]
    return images, videos, embeddings


def present_paths(conn: Connection, digests: list[str]) -> dict[str, list[tuple[int, bytes]]]:
    out: dict[str, list[tuple[int, bytes]]] = {}
    for part in chunks(sorted(set(digests))):
        # The status is checked here, not in SQL: without ANALYZE's statistics SQLite reads
        # `status = ? AND blake3 IN (...)` through the status index, every present row once per
        # chunk (minutes for `dupes` over a million files); alone, the IN list takes the blake3 index.
        rows = conn.execute(
            select(files.c.blake3, files.c.root_id, files.c.relpath, files.c.status)
            .where(files.c.blake3.in_(part))
            .order_by(files.c.root_id, files.c.relpath)
        )
        for digest, rid, rel, status in rows:
            if status == STATUS_PRESENT:
                out.setdefault(digest, []).append((rid, bytes(rel)))
    return out


def exact_duplicates(conn: Connection) -> dict[str, list[tuple[int, bytes]]]:
    """Contents present at two paths or more."""
    dup = (
        select(files.c.blake3)
        .where(files.c.status == STATUS_PRESENT, files.c.blake3.is_not(None))
        .group_by(files.c.blake3)
        .having(func.count() > 1)
    )
    digests = [d for (d,) in conn.execute(dup)]
    return present_paths(conn, digests)


def content_media(conn: Connection, digest: str) -> dict[str, Any]:
    """Everything extracted from one content: facts per extractor, hashes, faces."""
    done = [dict(r._mapping) for r in conn.execute(select(extractions).where(extractions.c.blake3 == digest))]
    image = conn.execute(select(image_hashes).where(image_hashes.c.blake3 == digest)).first()
    video = conn.execute(select(video_fingerprints).where(video_fingerprints.c.blake3 == digest)).first()
    found = conn.execute(select(faces).where(faces.c.blake3 == digest).order_by(faces.c.idx))
    return {
        "extractions": done,
        "image": dict(image._mapping) if image else None,
        "video": dict(video._mapping) if video else None,
        "faces": [dict(r._mapping) for r in found],
    }


def extraction_failures(
    conn: Connection, limit: int, root_ids: Sequence[int]
) -> list[tuple[str, str, str, float, int, bytes]]:
    """(blake3, extractor, error, at, root_id, relpath) of failed extractions of contents present
    under these roots (this server's), each with the path of one file that holds it (the first
    registered: root and path of the same row)."""
    x = extractions.c
    first = (
        select(x.blake3, x.extractor, x.error, x.at, func.min(files.c.id).label("file_id"))
        .join(files, files.c.blake3 == x.blake3)
        .where(x.status == "failed", files.c.status == STATUS_PRESENT, files.c.root_id.in_(list(root_ids)))
        .group_by(x.blake3, x.extractor, x.error, x.at)
        .order_by(x.blake3, x.extractor)
        .limit(limit)
        .subquery()
    )
    rows = conn.execute(
        select(first.c.blake3, first.c.extractor, first.c.error, first.c.at, files.c.root_id, files.c.relpath)
        .join(files, files.c.id == first.c.file_id)
        .order_by(first.c.blake3, first.c.extractor)
    )
    return [(d, e, err or "", at, rid, bytes(rel)) for d, e, err, at, rid, rel in rows]
