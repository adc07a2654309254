"""Media understanding: technical metadata, perceptual hashes, face embeddings, near-duplicates.

Pure stage functions: each takes a path and returns facts or an `ExtractionFailure`, never raising,
and is meant to run in `ExtractionPool` workers. The indexes group the stored results.
"""

from importd.media.faces import (
    SAME_PERSON_MIN_SIMILARITY,
    Face,
    FaceModel,
    FacesDisabled,
    FaceSettings,
    check_pack,
    faces_in_file,
)
from importd.media.failure import ExtractionFailure
from importd.media.hashes import hamming, to_signed64, to_unsigned64
from importd.media.image import DEFAULT_MAX_PIXELS, ImageFacts, extract_image
from importd.media.nearindex import (
    NEAR_DUPLICATE_MAX_DISTANCE,
    EmbeddingIndex,
    HashIndex,
    NearGroup,
    compile_search,
    video_groups,
)
from importd.media.pool import ExtractionPool, Measured, Priority, default_pool_size, measured
from importd.media.versions import EXTRACTOR_VERSIONS, MediaKind, WorkKey, media_kind, pending_work
from importd.media.video import (
    VIDEO_NEAR_MAX_DISTANCE,
    AudioStream,
    AVFacts,
    VideoFingerprint,
    extract_av,
    fingerprint_distance,
    video_fingerprint,
)

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
    "compile_search",
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
