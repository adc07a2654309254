"""Sidecar files: what the JSON files beside a video, an entity's `.artifacts/scenes.json` and a
Kodi NFO say, as one shape (`SidecarFacts`) whatever the role that read them.

Roles (a rule's `role`; see the shipped rule sets):
- `video_json`: `<video>.json` beside a video (`Amélie.json` beside `Amélie.mkv`): a JSON object
  whose keys are attributes of the entity the video maps to, like `metadata.json`; a `tags` key
  (a list) is not an attribute: its tags go on the video file.
- `video_tags`: `<video>.tags.json`: either a list of tags for the video file, or an object
  `{"tags": [...], "entity_tags": [...]}` (the video's tags, the entity's). A tag is a name or
  `{"name": "...", "color": "#2a9d8f"}`.
- `scenes`: `.artifacts/scenes.json` in an entity's folder: `{"scenes": [SCENE, ...]}` (or the
  bare list), each SCENE `{"type": "intro", "start": 0, "end": "00:01:30.5", "video":
  "intro.mp4", "title": "..."}`: `type` required; `start`/`end` in seconds or `[HH:]MM:SS[.mmm]`,
  `end` after `start`; `video` a file name in the folder; `title` free text. The list, with times
  in seconds, becomes the entity's attribute `scenes`.
- `nfo`: a Kodi/Jellyfin NFO (see `nfo.py`).
- `metadata` and `sidecar`: `metadata.json` and a text file (see `metadata.py`), read here too
  so every file-backed attribute is read one way (`read_facts`).

Every reader takes the file's bytes and returns the facts or a `MetadataFailure` with the reason.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from importd.entities.metadata import (
    Attributes,
    JsonValue,
    MetadataFailure,
    read_metadata_json,
    read_sidecar,
)
from importd.entities.nfo import Nfo, read_nfo

__all__ = [
    "FILE_ROLES",
    "ROLE_NFO",
    "ROLE_SCENES",
    "ROLE_VIDEO_JSON",
    "ROLE_VIDEO_TAGS",
    "SIDECAR_ROLES",
    "TARGET_ROLES",
    "SidecarFacts",
    "TagName",
    "read_facts",
    "read_scenes_json",
    "read_tags_json",
    "read_video_json",
    "sidecar_stem",
    "sidecar_stem_of_path",
    "source_kind",
]

ROLE_VIDEO_JSON: Final = "video_json"
ROLE_VIDEO_TAGS: Final = "video_tags"
ROLE_SCENES: Final = "scenes"
ROLE_NFO: Final = "nfo"
# The roles this module reads (the mapper reads their files' bytes).
SIDECAR_ROLES: Final = (ROLE_VIDEO_JSON, ROLE_VIDEO_TAGS, ROLE_SCENES, ROLE_NFO)
# Every role whose file holds attribute values (what `importctl drift` compares).
FILE_ROLES: Final = ("metadata", "sidecar", *SIDECAR_ROLES)
# Roles whose tags can be for the video beside them (found by the sidecar's stem).
TARGET_ROLES: Final = (ROLE_VIDEO_JSON, ROLE_VIDEO_TAGS, ROLE_NFO)
_SUFFIXES: Final = (".tags.json", ".json", ".nfo")
_MAX_TAGS: Final = 1000
_MAX_SCENES: Final = 10_000
_COLOR = re.compile(r"#?[0-9A-Fa-f]{6}|[A-Za-z]{3,20}")
_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)")

TagName = tuple[str, str | None]  # name, colour


@dataclass(frozen=True)
class SidecarFacts:
    """Attributes for the entity, tags for the entity, and tags for the file the sidecar
    describes (the video sharing its stem)."""

    attributes: dict[str, JsonValue]
    entity_tags: tuple[TagName, ...] = ()
    file_tags: tuple[TagName, ...] = ()


def source_kind(role: str) -> str:
    """The `attribute_sources.kind` of a value read from a file in this role."""
    return {ROLE_NFO: "nfo", "metadata": "metadata", "sidecar": "sidecar"}.get(role, "sidecar")


def sidecar_stem(name: str) -> str:
    """The name of the video a sidecar describes, without extension: `Amélie` for
    `Amélie.tags.json`, `Amélie.json` and `Amélie.nfo`."""
    lowered = name.lower()
    for suffix in _SUFFIXES:
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return name


def sidecar_stem_of_path(relpath: bytes) -> bytes | None:
    """`sidecar_stem` of a raw path (None when it is no sidecar by name): what a media file's
    path, with or without its extension, must equal to be the file the sidecar describes."""
    lowered = relpath.lower()
    for suffix in _SUFFIXES:
        if lowered.endswith(suffix.encode()):
            return relpath[: -len(suffix)]
    return None


def read_facts(
    role: str, data: bytes, file_name: str, attribute: str | None = None
) -> SidecarFacts | MetadataFailure:
    """The facts in a file of `role` (one of FILE_ROLES); `file_name` gives an episode NFO its
    number when the XML has none; `attribute` is a `sidecar` rule's."""
    if role == ROLE_NFO:
        nfo = read_nfo(data, file_name)
        if isinstance(nfo, MetadataFailure):
            return nfo
        return _nfo_facts(nfo)
    if role == ROLE_VIDEO_TAGS:
        return read_tags_json(data)
    if role == ROLE_SCENES:
        return read_scenes_json(data)
    if role == ROLE_VIDEO_JSON:
        return read_video_json(data)
    parsed = read_sidecar(data, attribute or "notes") if role == "sidecar" else read_metadata_json(data)
    if isinstance(parsed, MetadataFailure):
        return parsed
    return SidecarFacts(parsed.values)


def _nfo_facts(nfo: Nfo) -> SidecarFacts:
    tags = tuple((t, None) for t in nfo.tags)
    if nfo.kind == "episode":
        return SidecarFacts(nfo.attributes, file_tags=tags)
    return SidecarFacts(nfo.attributes, entity_tags=tags)


def read_video_json(data: bytes) -> SidecarFacts | MetadataFailure:
    parsed = read_metadata_json(data)
    if isinstance(parsed, MetadataFailure):
        return parsed
    assert isinstance(parsed, Attributes)
    values = dict(parsed.values)
    raw_tags = values.pop("tags", None)
    tags = _tags(raw_tags, "tags") if raw_tags is not None else ()
    if isinstance(tags, MetadataFailure):
        return tags
    return SidecarFacts(values, file_tags=tags)


def read_tags_json(data: bytes) -> SidecarFacts | MetadataFailure:
    parsed = _json(data)
    if isinstance(parsed, MetadataFailure):
        return parsed
    if isinstance(parsed, list):
        tags = _tags(parsed, "the list")
        return tags if isinstance(tags, MetadataFailure) else SidecarFacts({}, file_tags=tags)
    if not isinstance(parsed, dict):
        return MetadataFailure(f"expected a list of tags or an object, got {type(parsed).__name__}")
    unknown = sorted(set(parsed) - {"tags", "entity_tags"})
    if unknown:
        return MetadataFailure(f"unknown key {unknown[0]!r} (expected 'tags', 'entity_tags')")
    file_tags = _tags(parsed.get("tags", []), "tags")
    if isinstance(file_tags, MetadataFailure):
        return file_tags
    entity_tags = _tags(parsed.get("entity_tags", []), "entity_tags")
    if isinstance(entity_tags, MetadataFailure):
        return entity_tags
    return SidecarFacts({}, entity_tags=entity_tags, file_tags=file_tags)


def read_scenes_json(data: bytes) -> SidecarFacts | MetadataFailure:
    parsed = _json(data)
    if isinstance(parsed, MetadataFailure):
        return parsed
    if isinstance(parsed, dict):
        unknown = sorted(set(parsed) - {"scenes"})
        if unknown or "scenes" not in parsed:
            return MetadataFailure('expected {"scenes": [...]} or a list of scenes')
        parsed = parsed["scenes"]
    if not isinstance(parsed, list):
        return MetadataFailure(f"expected a list of scenes, got {type(parsed).__name__}")
    if len(parsed) > _MAX_SCENES:
        return MetadataFailure(f"more than {_MAX_SCENES} scenes")
    scenes: list[JsonValue] = []
    for index, raw in enumerate(parsed, start=1):
        scene = _scene(raw)
        if isinstance(scene, MetadataFailure):
            return MetadataFailure(f"scene {index}: {scene.reason}")
        scenes.append(scene)
    return SidecarFacts({"scenes": scenes} if scenes else {})


def _scene(raw: object) -> dict[str, JsonValue] | MetadataFailure:
    if not isinstance(raw, dict):
        return MetadataFailure(f"expected an object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - {"type", "start", "end", "video", "title"})
    if unknown:
        return MetadataFailure(f"unknown key {unknown[0]!r} (type, start, end, video, title)")
    kind = raw.get("type")
    if not isinstance(kind, str) or not kind.strip():
        return MetadataFailure("'type' is required (the scene type, e.g. \"intro\")")
    scene: dict[str, JsonValue] = {"type": unicodedata.normalize("NFC", kind).strip()}
    for key in ("start", "end"):
        if raw.get(key) is None:
            continue
        seconds = _seconds(raw[key])
        if seconds is None:
            return MetadataFailure(f"{key} {raw[key]!r} is not seconds nor [HH:]MM:SS[.mmm]")
        scene[key] = seconds
    start, end = scene.get("start"), scene.get("end")
    if isinstance(start, float) and isinstance(end, float) and end < start:
        return MetadataFailure(f"end ({end:g} s) is before start ({start:g} s)")
    for key in ("video", "title"):
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or (key == "video" and ("/" in value or value in (".", ".."))):
            return MetadataFailure(
                f"{key} must be {'a file name in the folder' if key == 'video' else 'text'}"
            )
        scene[key] = unicodedata.normalize("NFC", value).strip()
    return scene


def _seconds(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if 0 <= value < 1e7 else None
    if isinstance(value, str):
        found = _TIME.fullmatch(value.strip())
        if found:
            hours, minutes, seconds = found.groups()
            return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    return None


def _tags(raw: object, where: str) -> tuple[TagName, ...] | MetadataFailure:
    if not isinstance(raw, list):
        return MetadataFailure(f"{where} must be a list of tags")
    if len(raw) > _MAX_TAGS:
        return MetadataFailure(f"{where}: more than {_MAX_TAGS} tags")
    out: dict[str, TagName] = {}
    for item in raw:
        if isinstance(item, str):
            name, color = item, None
        elif isinstance(item, Mapping) and isinstance(item.get("name"), str):
            name, color = item["name"], item.get("color")
            if color is not None and not (isinstance(color, str) and _COLOR.fullmatch(color)):
                return MetadataFailure(f"{where}: colour {color!r} of {name!r} is not #rrggbb nor a name")
        else:
            return MetadataFailure(f'{where}: a tag is a name or {{"name": ..., "color": ...}}, not {item!r}')
        name = unicodedata.normalize("NFC", name).strip()
        if name:
            out.setdefault(name.casefold(), (name, color))
    return tuple(out.values())


def _json(data: bytes) -> object | MetadataFailure:
    try:
        parsed: object = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        return MetadataFailure(f"not UTF-8 text (byte {exc.start})")
    except (json.JSONDecodeError, RecursionError) as exc:
        return MetadataFailure(f"invalid JSON: {exc}")
    return parsed
