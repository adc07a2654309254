"""Handlers for media: duplicate groups (`dupes`) and everything known of one file (`info`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from importctl.protocol import (
    DUPE_KINDS,
    DupeGroup,
    DupeMember,
    DupesReply,
    ErrorCode,
    ExtractionReply,
    FileReply,
    InfoDuplicates,
    InfoReply,
    MediaFacts,
    iso_utc,
)
from importd.api.files import HEX, find
from importd.api.server import ApiError, Params
from importd.api.site import roots_by_id
from importd.catalog import media as catalog_media
from importd.catalog.legacy import attributes_at
from importd.core import Core
from importd.paths import wire

if TYPE_CHECKING:
    from importd.media.near_groups import NearGroup


async def dupes(core: Core, params: Params) -> DupesReply:
    kind = params.get("kind")
    if kind is not None and kind not in DUPE_KINDS:
        raise ApiError(ErrorCode.INVALID, f"kind must be one of {', '.join(DUPE_KINDS)}")
    threshold = params.get("threshold")
    media = core.media
    groups: list[DupeGroup] = []
    if media.config.enabled and kind != "exact":
        await media.ensure_loaded()
    from importd.media.video_groups import video_groups

    site = bool(params.get("site"))  # `--site`: every server's files, not only this one's
    if kind in (None, "exact"):
        async with core.engine.connect() as conn:
            exact = await conn.run_sync(catalog_media.exact_duplicates)
        roots = await _root_places(core, site)
        found = []
        for digest, places in exact.items():
            mine = [(roots[rid][0], wire(roots[rid][1] + b"/" + rel)) for rid, rel in places if rid in roots]
            if len(mine) > 1:
                found.append((digest, mine))
        for digest, mine in sorted(found, key=lambda kv: (-len(kv[1]), kv[0])):
            groups.append(
                {
                    "kind": "exact",
                    "blake3": digest,
                    "paths": [p for _, p in mine],
                    "members": [{"path": p, "host": h, "blake3": digest, "distance": 0} for h, p in mine],
                }
            )
    if kind in (None, "near"):
        if threshold is not None and not (0 <= threshold <= 32):
            raise ApiError(ErrorCode.INVALID, "a near threshold is a Hamming distance from 0 to 32 bits")
        bits = int(threshold if threshold is not None else core.media_config().near_threshold)
        if media.images is not None:
            groups += await _near_groups(core, media.images.groups(bits), "near", "distance", "image", site)
        vids = (
            video_groups(media.videos.items())
            if threshold is None
            else video_groups(media.videos.items(), float(threshold))
        )
        groups += await _near_groups(core, vids, "near", "distance", "video", site)
    if kind in (None, "face"):
        if threshold is not None and not (-1 <= threshold <= 1):
            raise ApiError(ErrorCode.INVALID, "a face threshold is a cosine similarity from -1 to 1")
        sim = float(threshold if threshold is not None else core.media_config().same_person_similarity)
        if media.faces is not None:
            groups += await _near_groups(core, media.faces.groups(sim), "face", "similarity", "image", site)
    return {"groups": groups, "faces": core.media_status()["faces"]}


async def info(core: Core, params: Params) -> InfoReply:
    rows = await _one_file(core, params)
    media = core.media
    if media.config.enabled:
        await media.ensure_loaded()
    from importd.media.hashes import to_unsigned64

    row = rows[0]
    digest = row["blake3"]
    extractions: list[ExtractionReply] = []
    duplicates: list[InfoDuplicates] = []
    out: InfoReply = {
        "file": row,
        "paths": [r["path"] for r in rows],
        "media": None,
        "hashes": {},
        "extractions": extractions,
        "faces": [],
        "duplicates": duplicates,
        "attributes": {},
    }
    async with core.engine.connect() as conn:
        values = await conn.run_sync(attributes_at, row["root"], os.fsencode(row["relpath"]))
    out["attributes"] = {
        name: {"value": value, "source": kind, "detail": source, "at": iso_utc(at)}
        for name, (value, kind, source, at) in values.items()
    }
    if not digest:
        return out
    async with core.engine.connect() as conn:
        facts = await conn.run_sync(catalog_media.content_media, digest)
    by_extractor = {}
    for ex in facts["extractions"]:
        by_extractor[ex["extractor"]] = json.loads(ex["facts"]) if ex["facts"] else None
        extractions.append(
            {
                "extractor": ex["extractor"],
                "version": ex["version"],
                "status": ex["status"],
                "error": ex["error"],
                "cpu_s": ex["cpu_s"],
            }
        )
    out["media"] = _media_facts(by_extractor.get("image"), by_extractor.get("av"))
    if facts["image"]:
        out["hashes"] = {
            "phash": f"{to_unsigned64(facts['image']['phash']):016x}",
            "dhash": f"{to_unsigned64(facts['image']['dhash']):016x}",
        }
    out["faces"] = [
        {"index": f["idx"], "bbox": [f["x1"], f["y1"], f["x2"], f["y2"]], "det_score": f["det_score"]}
        for f in facts["faces"]
    ]
    # The groups this content belongs to.
    exact = await _paths_of(core, [digest])
    if len(exact.get(digest, [])) > 1:
        duplicates.append({"kind": "exact", "blake3": digest, "paths": [p for _, p in exact[digest]]})
    config = core.media_config()
    if facts["image"] and not facts["image"]["low_detail"] and media.images is not None:
        near = media.images.query(facts["image"]["phash"], config.near_threshold)
        others = [(d, dist) for d, dist in near if d != digest]
        if others:
            paths = await _paths_of(core, (d for d, _ in others))
            duplicates.append(
                {
                    "kind": "near",
                    "members": [
                        {"path": p, "host": h, "blake3": d, "distance": dist}
                        for d, dist in others
                        for h, p in paths.get(d, [])
                    ],
                }
            )
    if facts["faces"] and media.faces is not None:
        import numpy as np

        for f in facts["faces"]:
            emb = np.frombuffer(f["embedding"], dtype=np.float32)
            hits = [
                (k, s) for k, s in media.faces.query(emb, config.same_person_similarity) if k[0] != digest
            ]
            if hits:
                paths = await _paths_of(core, (k[0] for k, _ in hits))
                duplicates.append(
                    {
                        "kind": "face",
                        "face": f["idx"],
                        "members": [
                            {
                                "path": p,
                                "host": h,
                                "blake3": k[0],
                                "face": k[1],
                                "similarity": round(float(s), 4),
                            }
                            for k, s in hits
                            for h, p in paths.get(k[0], [])
                        ],
                    }
                )
    return out


async def _one_file(core: Core, params: Params) -> list[FileReply]:
    """`find`'s rows for one file (all its paths when asked by hash); a folder is refused."""
    rows = await find(core, params)
    if len({r["blake3"] for r in rows}) > 1 or (
        not HEX.fullmatch(params["query"]) and len(rows) > 1 and rows[0]["relpath"] != rows[1]["relpath"]
    ):
        raise ApiError(ErrorCode.INVALID, "info takes one file (or one content hash), not a folder")
    return rows


def _media_facts(image: dict[str, Any] | None, av: dict[str, Any] | None) -> MediaFacts | None:
    from importd.media.hashes import to_unsigned64

    if image:
        return {
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
    if av:
        return {
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
    return None


async def _root_places(core: Core, site: bool) -> dict[int, tuple[str, bytes]]:
    """{root_id: (host, path)} of this server's roots, or of every server's with `site`."""
    roots = await roots_by_id(core)
    return {rid: (r.host, os.fsencode(r.path)) for rid, r in roots.items() if site or r.host == core.host}


async def _paths_of(
    core: Core, digests: Iterable[str], site: bool = False
) -> dict[str, list[tuple[str, str]]]:
    """{digest: [(host, path)]} of the present files with these contents (this server's, or
    the site's)."""
    async with core.engine.connect() as conn:
        found = await conn.run_sync(catalog_media.present_paths, list(digests))
    roots = await _root_places(core, site)
    out: dict[str, list[tuple[str, str]]] = {}
    for digest, places in found.items():
        mine = [(roots[rid][0], wire(roots[rid][1] + b"/" + rel)) for rid, rel in places if rid in roots]
        if mine:
            out[digest] = mine
    return out


async def _near_groups(
    core: Core, groups: list[NearGroup[Any]], kind: str, measure: str, label: str, site: bool
) -> list[DupeGroup]:
    digest_of: Callable[[Any], str] = (lambda k: k[0]) if kind == "face" else (lambda k: k)
    paths = await _paths_of(core, (digest_of(key) for g in groups for key, _ in g.members), site)
    out: list[DupeGroup] = []
    for g in groups:
        members: list[DupeMember] = []
        for key, value in g.members:
            for host, path in paths.get(digest_of(key), []):
                member: DupeMember = {"path": path, "host": host, "blake3": digest_of(key)}
                if measure == "similarity":
                    member["similarity"] = round(float(value), 4)
                else:
                    member["distance"] = round(float(value), 4)
                if kind == "face":
                    member["face"] = key[1]
                members.append(member)
        if len({(m["host"], m["path"]) for m in members}) < 2:
            continue  # every member's content but one is gone from the roots (or elsewhere)
        out.append(
            {
                "kind": kind,
                "media": label,
                "blake3": digest_of(g.anchor),
                "paths": sorted({m["path"] for m in members}),
                "members": members,
            }
        )
    return out
