"""Handlers for duplicates and per-file media information (part of the one handler table)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from importctl.protocol import DUPE_KINDS, ErrorCode, Method
from importd.api.server import ApiError, Handler
from importd.catalog import media as catalog_media
from importd.paths import wire

if TYPE_CHECKING:
    from importd.media.nearindex import NearGroup
    from importd.service import Service

RowsFor = Callable[[dict[str, Any]], Awaitable[list[dict[str, Any]]]]


def build_media_handlers(service: Service, rows_for: RowsFor) -> dict[str, Handler]:
    pipeline = service.pipeline
    media = pipeline.media

    def absolute(rid: int, rel: bytes) -> str:
        state = pipeline.roots.get(rid)
        return wire(state.raw_path + b"/" + rel) if state else wire(rel)

    async def paths_of(digests: Iterable[str]) -> dict[str, list[str]]:
        async with service.engine.connect() as conn:
            found = await conn.run_sync(catalog_media.present_paths, list(digests))
        return {d: [absolute(rid, rel) for rid, rel in places] for d, places in found.items()}

    async def near_groups(
        groups: list[NearGroup[Any]], kind: str, measure: str, label: str
    ) -> list[dict[str, Any]]:
        digest_of: Callable[[Any], str] = (lambda k: k[0]) if kind == "face" else (lambda k: k)
        paths = await paths_of(digest_of(key) for g in groups for key, _ in g.members)
        out = []
        for g in groups:
            members: list[dict[str, Any]] = []
            for key, value in g.members:
                for path in paths.get(digest_of(key), []):
                    member = {"path": path, "blake3": digest_of(key), measure: round(float(value), 4)}
                    if kind == "face":
                        member["face"] = key[1]
                    members.append(member)
            if len({m["path"] for m in members}) < 2:
                continue  # every member's content is gone from the roots
            out.append(
                {
                    "kind": kind,
                    "media": label,
                    "blake3": digest_of(g.anchor),
                    "paths": sorted({str(m["path"]) for m in members}),
                    "members": members,
                }
            )
        return out

    async def dupes(params: dict[str, Any]) -> dict[str, Any]:
        kind = params.get("kind")
        if kind is not None and kind not in DUPE_KINDS:
            raise ApiError(ErrorCode.INVALID, f"kind must be one of {', '.join(DUPE_KINDS)}")
        threshold = params.get("threshold")
        groups: list[dict[str, Any]] = []
        if media.config.enabled and kind != "exact":
            await media.ensure_loaded()
        from importd.media.nearindex import video_groups

        if kind in (None, "exact"):
            async with service.engine.connect() as conn:
                exact = await conn.run_sync(catalog_media.exact_duplicates)
            for digest, places in sorted(exact.items(), key=lambda kv: (-len(kv[1]), kv[0])):
                paths = [absolute(rid, rel) for rid, rel in places]
                groups.append(
                    {
                        "kind": "exact",
                        "blake3": digest,
                        "paths": paths,
                        "members": [{"path": p, "blake3": digest, "distance": 0} for p in paths],
                    }
                )
        if kind in (None, "near"):
            if threshold is not None and not (0 <= threshold <= 32):
                raise ApiError(ErrorCode.INVALID, "a near threshold is a Hamming distance from 0 to 32 bits")
            bits = int(threshold if threshold is not None else service.config.media.near_threshold)
            if media.images is not None:
                groups += await near_groups(media.images.groups(bits), "near", "distance", "image")
            vids = (
                video_groups(media.videos.items())
                if threshold is None
                else video_groups(media.videos.items(), float(threshold))
            )
            groups += await near_groups(vids, "near", "distance", "video")
        if kind in (None, "face"):
            if threshold is not None and not (-1 <= threshold <= 1):
                raise ApiError(ErrorCode.INVALID, "a face threshold is a cosine similarity from -1 to 1")
            sim = float(threshold if threshold is not None else service.config.media.same_person_similarity)
            if media.faces is not None:
                groups += await near_groups(media.faces.groups(sim), "face", "similarity", "image")
        return {"groups": groups, "faces": media.status()["faces"]}

    async def info(params: dict[str, Any]) -> dict[str, Any]:
        rows = await rows_for(params)
        if media.config.enabled:
            await media.ensure_loaded()
        from importd.media.hashes import to_unsigned64

        row = rows[0]
        digest = row["blake3"]
        out: dict[str, Any] = {"file": row, "paths": [r["path"] for r in rows], "media": None, "hashes": {}}
        out["extractions"] = []
        out["faces"] = []
        out["duplicates"] = []
        if not digest:
            return out
        async with service.engine.connect() as conn:
            facts = await conn.run_sync(catalog_media.content_media, digest)
        by_extractor = {}
        for ex in facts["extractions"]:
            by_extractor[ex["extractor"]] = json.loads(ex["facts"]) if ex["facts"] else None
            out["extractions"].append(
                {
                    "extractor": ex["extractor"],
                    "version": ex["version"],
                    "status": ex["status"],
                    "error": ex["error"],
                    "cpu_s": ex["cpu_s"],
                }
            )
        image = by_extractor.get("image")
        av = by_extractor.get("av")
        if image:
            out["media"] = {
                "kind": "image",
                "width": image["width"],
                "height": image["height"],
                "format": image["format"],
                "mode": image["mode"],
                "phash": f"{to_unsigned64(image['phash']):016x}",
                "dhash": f"{to_unsigned64(image['dhash']):016x}",
                "taken_at": image["taken_at"],
                "camera": image["camera"],
                "warnings": image["warnings"],
            }
        elif av:
            out["media"] = {
                "kind": "video" if av.get("video_codec") else "audio",
                "container": av["container"],
                "duration_s": av["duration_s"],
                "width": av["width"],
                "height": av["height"],
                "frame_rate": av["frame_rate"],
                "frame_count": av["frame_count"],
                "video_codec": av["video_codec"],
                "bit_rate": av["bit_rate"],
                "audio": av["audio"],
                "created_at": av["created_at"],
                "warnings": av["warnings"],
            }
        if facts["image"]:
            out["hashes"] = {
                "phash": f"{to_unsigned64(facts['image']['phash']):016x}",
                "dhash": f"{to_unsigned64(facts['image']['dhash']):016x}",
            }
        out["faces"] = [
            {
                "index": f["idx"],
                "bbox": [f["x1"], f["y1"], f["x2"], f["y2"]],
                "det_score": f["det_score"],
            }
            for f in facts["faces"]
        ]
        # The groups this content belongs to.
        exact = await paths_of([digest])
        if len(exact.get(digest, [])) > 1:
            out["duplicates"].append({"kind": "exact", "blake3": digest, "paths": exact[digest]})
        if facts["image"] and not facts["image"]["low_detail"] and media.images is not None:
            near = media.images.query(facts["image"]["phash"], service.config.media.near_threshold)
            others = [(d, dist) for d, dist in near if d != digest]
            if others:
                paths = await paths_of(d for d, _ in others)
                out["duplicates"].append(
                    {
                        "kind": "near",
                        "members": [
                            {"path": p, "blake3": d, "distance": dist}
                            for d, dist in others
                            for p in paths.get(d, [])
                        ],
                    }
                )
        if facts["faces"] and media.faces is not None:
            import numpy as np

            sim = service.config.media.same_person_similarity
            for f in facts["faces"]:
                emb = np.frombuffer(f["embedding"], dtype=np.float32)
                hits = [(k, s) for k, s in media.faces.query(emb, sim) if k[0] != digest]
                if hits:
                    paths = await paths_of(k[0] for k, _ in hits)
                    out["duplicates"].append(
                        {
                            "kind": "face",
                            "face": f["idx"],
                            "members": [
                                {"path": p, "blake3": k[0], "face": k[1], "similarity": round(float(s), 4)}
                                for k, s in hits
                                for p in paths.get(k[0], [])
                            ],
                        }
                    )
        return out

    return {Method.DUPES: dupes, Method.INFO: info}
