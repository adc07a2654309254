"""Faces: detection boxes and 512-d embeddings with insightface's models on onnxruntime.

Only the detector and the recogniser of a buffalo_l-shaped pack are loaded (not the landmark and
gender/age models insightface's `FaceAnalysis` would load for every worker), and run by
`media/face_onnx.py` (insightface's processing, without the insightface package and its GUI OpenCV).
Nothing is ever downloaded: a missing or unusable pack makes faces `FacesDisabled` with the reason and
the path, and everything else carries on.

OpenCV and onnxruntime are imported only by `FaceModel.load`, inside a pool worker; the daemon's own
process needs nothing more than `check_pack`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from importd.media.failure import ExtractionFailure, describe
from importd.media.image import DEFAULT_MAX_PIXELS, decode_upright_rgb
from importd.media.pack import DETECTION_FILE, RECOGNITION_FILE, FacesDisabled, check_pack_files

if TYPE_CHECKING:
    from importd.media import face_onnx

EXTRACTOR = "faces"

# buffalo_l's detector (SCRFD 10G) and recogniser (ArcFace ResNet-50 trained on WebFace600K).

# Cosine similarity at or above which two faces are taken for the same person. 0.5 is the figure
# insightface's maintainers and users quote for ArcFace embeddings (deepinsight/insightface#168, the
# buffalo_l demo) and Immich's default (maximum cosine distance 0.5); different people rarely pass 0.4.
SAME_PERSON_MIN_SIMILARITY = 0.5

Embedding = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class FaceSettings:
    """How faces are found and which ones are kept. Defaults follow insightface practice.

    detect_threshold: SCRFD's candidate score (insightface's `det_thresh` default, 0.5).
    min_det_score: faces scoring below this are dropped (Immich's default minimum score, 0.7): the
        rest are mostly profiles, blurs and false positives whose embeddings match anyone.
    min_face_px: faces whose box is smaller on its short side are dropped: ArcFace sees 112×112, and
        below about 40 px the upscaled crop and its landmarks are too poor to identify anyone.
    det_size: side of the square the detector sees (insightface's 640).
    max_side: pictures are decoded at most this large; faces keep enough pixels, memory stays bounded.
    threads: onnxruntime threads per worker; parallelism comes from the pool's processes.
    """

    detection_file: str = DETECTION_FILE
    recognition_file: str = RECOGNITION_FILE
    detect_threshold: float = 0.5
    min_det_score: float = 0.7
    min_face_px: int = 40
    det_size: int = 640
    max_faces: int = 64
    max_side: int = 2048
    max_pixels: int = DEFAULT_MAX_PIXELS
    threads: int = 1


@dataclass(frozen=True, slots=True)
class Face:
    """One face: box (x1, y1, x2, y2) in pixels of the upright full-size picture, detection score, and
    a float32 embedding of unit length (so a dot product is the cosine similarity)."""

    bbox: tuple[float, float, float, float]
    det_score: float
    embedding: Embedding = field(compare=False, repr=False)


def check_pack(
    pack_dir: str | os.PathLike[str], settings: FaceSettings = FaceSettings()
) -> FacesDisabled | None:
    """Cheap check that the pack directory holds both model files; None when it looks usable."""
    return check_pack_files(pack_dir, settings.detection_file, settings.recognition_file)


class FaceModel:
    """A loaded detector + recogniser pair. Build with `FaceModel.load`; use from one thread."""

    def __init__(
        self,
        detector: face_onnx.Detector,
        recogniser: face_onnx.Recogniser,
        settings: FaceSettings,
        pack_dir: str,
    ) -> None:
        self._detector = detector
        self._recogniser = recogniser
        self.settings = settings
        self.pack_dir = pack_dir
        self.embedding_size = int(recogniser.output_shape[-1])
        # buffalo_l's recogniser takes a batch of crops; some exports are fixed at one.
        self._one_at_a_time = recogniser.input_shape[0] == 1

    @classmethod
    def load(
        cls, pack_dir: str | os.PathLike[str], settings: FaceSettings = FaceSettings()
    ) -> FaceModel | FacesDisabled:
        problem = check_pack(pack_dir, settings)
        if problem is not None:
            return problem
        directory = str(Path(pack_dir))
        try:
            import cv2
            import onnxruntime  # type: ignore[import-untyped]

            from importd.media import face_onnx
        except ImportError as error:
            return FacesDisabled(f"face libraries unavailable: {describe(error)}", directory)
        onnxruntime.set_default_logger_severity(3)  # its warnings go to stderr, not to our log
        cv2.setNumThreads(1)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = settings.threads
        options.inter_op_num_threads = 1
        sessions = {}
        for task, name in (
            ("detection", settings.detection_file),
            ("recognition", settings.recognition_file),
        ):
            try:
                session = face_onnx.open_session(os.path.join(directory, name), options)
            except Exception as error:  # corrupt or foreign ONNX files
                return FacesDisabled(f"cannot load {name}: {describe(error)}", directory)
            found = face_onnx.task_of(session)
            if found != task:
                return FacesDisabled(
                    f"{name} is not a face {task} model ({found or 'unrecognised'})", directory
                )
            sessions[task] = session
        detector = face_onnx.Detector(sessions["detection"])
        if not detector.use_kps:
            return FacesDisabled(f"{settings.detection_file} gives no landmarks to align faces", directory)
        try:
            recogniser = face_onnx.Recogniser(
                sessions["recognition"], os.path.join(directory, settings.recognition_file)
            )
        except Exception as error:  # onnx cannot read what onnxruntime could
            return FacesDisabled(f"cannot load {settings.recognition_file}: {describe(error)}", directory)
        return cls(detector, recogniser, settings, directory)

    def detect(self, path: str | bytes) -> list[Face] | ExtractionFailure:
        """Faces in one image file, largest first; damaged files give a failure."""
        decoded = decode_upright_rgb(
            path, max_pixels=self.settings.max_pixels, max_side=self.settings.max_side, extractor=EXTRACTOR
        )
        if isinstance(decoded, ExtractionFailure):
            return decoded
        rgb, scale = decoded
        try:
            return self.detect_pixels(rgb, scale=scale)
        except Exception as error:  # onnxruntime or alignment failures on odd input
            return ExtractionFailure(EXTRACTOR, describe(error))

    def detect_pixels(self, rgb: npt.NDArray[np.uint8], *, scale: float = 1.0) -> list[Face]:
        """Faces in an H×W×3 RGB array (e.g. a video keyframe); boxes are divided by `scale`."""
        import cv2

        from importd.media.face_onnx import align

        settings = self.settings
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # the models were trained on OpenCV's BGR order
        boxes, landmarks = self._detector.detect(
            bgr, (settings.det_size, settings.det_size), settings.detect_threshold, settings.max_faces
        )
        kept: list[tuple[tuple[float, float, float, float], float, Any]] = []
        for row, points in zip(
            boxes, landmarks if landmarks is not None else [None] * len(boxes), strict=True
        ):
            x1, y1, x2, y2, score = (float(v) for v in row[:5])
            if points is None or score < settings.min_det_score:
                continue
            # Judged in the pixels we actually crop from, which is what the embedding's quality follows.
            if min(x2 - x1, y2 - y1) < settings.min_face_px:
                continue
            kept.append(((x1, y1, x2, y2), score, points))
        if not kept:
            return []
        crops = [align(bgr, points, self._recogniser.side) for _, _, points in kept]
        if self._one_at_a_time:
            features = np.concatenate([self._recogniser.embed([crop]) for crop in crops])
        else:
            features = self._recogniser.embed(crops)
        faces = []
        for (box, score, _), feature in zip(kept, features, strict=True):
            norm = float(np.linalg.norm(feature))
            if not np.isfinite(norm) or norm == 0.0:
                continue
            faces.append(
                Face(
                    bbox=(box[0] / scale, box[1] / scale, box[2] / scale, box[3] / scale),
                    det_score=score,
                    embedding=(feature / norm).astype(np.float32),
                )
            )
        faces.sort(key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]), reverse=True)
        return faces


# One model per worker process, loaded on its first face task and kept for its lifetime.
_loaded: dict[tuple[str, FaceSettings], FaceModel | FacesDisabled] = {}


def faces_in_file(
    path: str | bytes, pack_dir: str, settings: FaceSettings = FaceSettings()
) -> list[Face] | ExtractionFailure:
    """Pool entry point: detect faces in one image with this worker's cached model."""
    key = (pack_dir, settings)
    model = _loaded.get(key)
    if model is None:
        model = _loaded[key] = FaceModel.load(pack_dir, settings)
    if isinstance(model, FacesDisabled):
        return ExtractionFailure(EXTRACTOR, f"faces disabled: {model.reason} ({model.path})")
    return model.detect(path)


def cosine_similarity(a: Embedding, b: Embedding) -> float:
    """Similarity of two unit-length embeddings."""
    return float(np.dot(a, b))
