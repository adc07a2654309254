"""face_onnx: the alignment transform, non-maximum suppression, routing by shapes and the face cap.

The whole detect-align-embed path runs in test_faces.py; its results were checked bit for bit against
insightface 2.1's own classes on the same models when this module replaced them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime  # type: ignore[import-untyped]
import pytest

from importd.media import face_onnx
from tests import media_models


def test_similarity_transform_recovers_rotation_scale_and_translation() -> None:
    rng = np.random.default_rng(3)
    src = rng.normal(size=(5, 2)) * 40 + 100
    angle, scale, shift = 0.3, 0.55, np.array([-12.0, 30.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = scale * src @ rotation.T + shift
    matrix = face_onnx.similarity_transform(src, dst)
    assert np.allclose(matrix[:2, :2], scale * rotation) and np.allclose(matrix[:2, 2], shift)
    assert np.allclose(matrix[2], [0, 0, 1])


def test_alignment_puts_the_landmarks_where_arcface_expects_them() -> None:
    landmarks = face_onnx.ARCFACE_LANDMARKS * 2.5 + np.float32(40)  # a face 2.5× larger, further in
    picture = np.zeros((400, 400, 3), np.uint8)
    for x, y in landmarks.astype(int):
        picture[y - 2 : y + 3, x - 2 : x + 3] = 255
    crop = face_onnx.align(picture, landmarks, 112)
    assert crop.shape == (112, 112, 3)
    for x, y in face_onnx.ARCFACE_LANDMARKS.round().astype(int):
        assert crop[y, x].max() > 200, (x, y)


def test_nms_keeps_the_best_of_overlapping_boxes_and_every_separate_one() -> None:
    rows = np.array(
        [[0, 0, 100, 100, 0.8], [5, 5, 105, 105, 0.9], [200, 200, 260, 260, 0.7]], dtype=np.float32
    )
    assert face_onnx._nms(rows, 0.4) == [1, 2]


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return media_models.build_pack(tmp_path_factory.mktemp("pack"))


def session(path: Path) -> object:
    return face_onnx.open_session(str(path), onnxruntime.SessionOptions())


def test_models_are_told_apart_by_their_shapes(pack: Path) -> None:
    assert face_onnx.task_of(session(pack / media_models.DETECTOR_FILE)) == "detection"
    assert face_onnx.task_of(session(pack / media_models.RECOGNISER_FILE)) == "recognition"
    detector = face_onnx.Detector(session(pack / media_models.DETECTOR_FILE))
    assert detector.use_kps and detector.strides == (8, 16, 32)


def test_a_cap_on_faces_keeps_the_large_central_ones(pack: Path) -> None:
    detector = face_onnx.Detector(session(pack / media_models.DETECTOR_FILE))
    rgb = media_models.picture_with_faces([("checker", 0, 0), ("rings", 256, 256), ("hstripes", 512, 512)])
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    every, _ = detector.detect(bgr, (640, 640), 0.5)
    capped, landmarks = detector.detect(bgr, (640, 640), 0.5, max_num=1)
    assert len(every) == 3 and landmarks is not None and landmarks.shape == (1, 5, 2)
    assert capped[:, :4].tolist() == [[256.0, 256.0, 384.0, 384.0]]
