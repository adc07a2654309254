"""Media understanding: technical metadata, perceptual hashes, face embeddings, near-duplicates.

Pure stage functions: each takes a path and returns facts or an `ExtractionFailure`, never raising,
and is meant to run in `ExtractionPool` workers. The indexes group the stored results.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Submodules load on first use: numpy, scipy and Pillow cost tens of MB and a second of
# start-up, which a daemon cataloguing no media (or `importctl`) should not pay.
_WHERE: dict[str, str] = {
    "AVFacts": "video",
    "AudioStream": "video",
    "DEFAULT_MAX_PIXELS": "image",
    "EXTRACTOR_VERSIONS": "versions",
    "EmbeddingIndex": "embedding_index",
    "ExtractionFailure": "failure",
    "ExtractionPool": "pool",
    "Face": "faces",
    "FaceModel": "faces",
    "FaceSettings": "faces",
    "FacesDisabled": "pack",
    "check_pack_files": "pack",
    "HashIndex": "hash_index",
    "ImageFacts": "image",
    "Measured": "pool",
    "MediaKind": "versions",
    "NEAR_DUPLICATE_MAX_DISTANCE": "hash_index",
    "NearGroup": "near_groups",
    "Priority": "pool",
    "SAME_PERSON_MIN_SIMILARITY": "faces",
    "VIDEO_NEAR_MAX_DISTANCE": "video",
    "VideoFingerprint": "video",
    "WorkKey": "versions",
    "check_pack": "faces",
    "default_pool_size": "pool",
    "extract_av": "video",
    "extract_image": "image",
    "faces_in_file": "faces",
    "fingerprint_distance": "video",
    "hamming": "hashes",
    "measured": "pool",
    "media_kind": "versions",
    "pending_work": "versions",
    "to_signed64": "hashes",
    "to_unsigned64": "hashes",
    "video_fingerprint": "video",
    "video_groups": "video_groups",
}

if TYPE_CHECKING:
    from importd.media.embedding_index import (
        EmbeddingIndex,
    )
    from importd.media.faces import (
        SAME_PERSON_MIN_SIMILARITY,
        Face,
        FaceModel,
        FaceSettings,
        check_pack,
        faces_in_file,
    )
    from importd.media.failure import (
        ExtractionFailure,
    )
    from importd.media.hash_index import (
        NEAR_DUPLICATE_MAX_DISTANCE,
        HashIndex,
    )
    from importd.media.hashes import (
        hamming,
        to_signed64,
        to_unsigned64,
    )
    from importd.media.image import (
        DEFAULT_MAX_PIXELS,
        ImageFacts,
        extract_image,
    )
    from importd.media.near_groups import (
        NearGroup,
    )
    from importd.media.pack import (
        FacesDisabled,
        check_pack_files,
    )
    from importd.media.pool import (
        ExtractionPool,
        Measured,
        Priority,
        default_pool_size,
        measured,
    )
    from importd.media.versions import (
        EXTRACTOR_VERSIONS,
        MediaKind,
        WorkKey,
        media_kind,
        pending_work,
    )
    from importd.media.video import (
        VIDEO_NEAR_MAX_DISTANCE,
        AudioStream,
        AVFacts,
        VideoFingerprint,
        extract_av,
        fingerprint_distance,
        video_fingerprint,
    )
    from importd.media.video_groups import (
        video_groups,
    )


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "EXTRACTOR_VERSIONS",
    "NEAR_DUPLICATE_MAX_DISTANCE",
    "SAME_PERSON_MIN_SIMILARITY",
    "VIDEO_NEAR_MAX_DISTANCE",
    "AVFacts",
    "AudioStream",
    "EmbeddingIndex",
    "ExtractionFailure",
    "ExtractionPool",
    "Face",
    "FaceModel",
    "FaceSettings",
    "FacesDisabled",
    "HashIndex",
    "ImageFacts",
    "Measured",
    "MediaKind",
    "NearGroup",
    "Priority",
    "VideoFingerprint",
    "WorkKey",
    "check_pack",
    "check_pack_files",
    "default_pool_size",
    "extract_av",
    "extract_image",
    "faces_in_file",
    "fingerprint_distance",
    "hamming",
    "measured",
    "media_kind",
    "pending_work",
    "to_signed64",
    "to_unsigned64",
    "video_fingerprint",
    "video_groups",
]
