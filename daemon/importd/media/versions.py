"""Extractor versions: analysis is keyed by (content hash, extractor, version).

The same content at two paths is analysed once. Bumping one extractor's version here makes only that
extractor run again, for every content it applies to, while the other results stay valid.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

EXTRACTOR_VERSIONS: Mapping[str, int] = MappingProxyType(
    {
        "av": 1,  # video.extract_av: container, duration, size, codecs, creation date
        "image": 1,  # image.extract_image: format, size, EXIF, pHash, dHash
        "video_fp": 1,  # video.video_fingerprint: pHashes of sampled frames
        "faces": 1,  # faces.faces_in_file: boxes, scores, embeddings
    }
)

MediaKind = Literal["image", "video", "audio"]

EXTRACTORS_BY_KIND: Mapping[MediaKind, tuple[str, ...]] = MappingProxyType(
    {
        "image": ("image", "faces"),
        "video": ("av", "video_fp"),
        "audio": ("av",),
    }
)


def _suffixes(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Extractors check the content itself; the suffix only picks which ones to try.
_IMAGE_SUFFIXES = _suffixes(
    ".jpg .jpeg .jpe .jfif .png .apng .gif .webp .tif .tiff .bmp .dib .heic .heif .avif .jp2 .j2k"
    " .jpf .jpx .psd .tga .ico .icns .ppm .pgm .pbm .pnm .pcx .sgi .rgb .dds .qoi .mpo .blp .xbm .xpm"
)
_VIDEO_SUFFIXES = _suffixes(
    ".mp4 .m4v .mov .qt .mkv .webm .avi .wmv .asf .flv .mpg .mpeg .m2v .mts .m2ts .ts .mxf .3gp .3g2"
    " .ogv .dv .vob"
)
_AUDIO_SUFFIXES = _suffixes(
    ".wav .wave .bwf .aif .aiff .aifc .flac .mp3 .m4a .aac .ogg .oga .opus .wma .ape .mka .ac3 .dts .caf"
)


@dataclass(frozen=True, slots=True, order=True)
class WorkKey:
    """One unit of extraction work, and the identity of its stored result."""

    content_hash: str
    extractor: str
    version: int


_KIND_BY_NAME_SUFFIX: dict[bytes, MediaKind | None] = {}


def media_kind_of_path(relpath: bytes) -> MediaKind | None:
    """`media_kind` of a raw path's suffix, as `os.path.splitext` finds it (none for ".profile"
    or "..x"), remembered per suffix: a cold import asks for every file it registers."""
    name = relpath[relpath.rfind(b"/") + 1 :]
    dot = name.rfind(b".")
    if dot <= 0 or not name[:dot].strip(b"."):
        return None
    suffix = name[dot:]
    try:
        return _KIND_BY_NAME_SUFFIX[suffix]
    except KeyError:
        kind = media_kind(suffix.decode("utf-8", "replace"))
        if len(_KIND_BY_NAME_SUFFIX) < 10_000:  # bounded: suffixes are names anyone can make up
            _KIND_BY_NAME_SUFFIX[suffix] = kind
        return kind


def media_kind(suffix: str) -> MediaKind | None:
    """Guess the kind of media from a file suffix (".JPG" and "jpg" both work); None if not media.

    Each extractor then checks the content and records a failure when the file is not what its name
    says.
    """
    normal = suffix.lower() if suffix.startswith(".") else "." + suffix.lower()
    if normal in _IMAGE_SUFFIXES:
        return "image"
    if normal in _VIDEO_SUFFIXES:
        return "video"
    if normal in _AUDIO_SUFFIXES:
        return "audio"
    return None


def pending_work(
    content_hash: str,
    kind: MediaKind,
    done: Mapping[str, int],
    *,
    enabled: Iterable[str] | None = None,
    versions: Mapping[str, int] = EXTRACTOR_VERSIONS,
) -> list[WorkKey]:
    """The extractions still owed for one content.

    `done` maps extractor → the version whose result (facts or recorded failure) is stored. An
    extractor is owed when it applies to `kind`, is enabled (faces can be off), and its stored
    version is missing or older than the current one.
    """
    allowed = set(enabled) if enabled is not None else set(versions)
    return [
        WorkKey(content_hash, extractor, versions[extractor])
        for extractor in EXTRACTORS_BY_KIND[kind]
        if extractor in allowed and done.get(extractor, 0) < versions[extractor]
    ]


def is_rerun(key: WorkKey, done: Mapping[str, int]) -> bool:
    """True when `key` replaces an older version's result: run it in the background, after new files."""
    return key.extractor in done
