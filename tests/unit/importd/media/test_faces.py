"""Faces through the real loading and inference path (media/face_onnx.py on onnxruntime), with small
ONNX models built here."""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio
import numpy as np
import pytest
from PIL import Image

from importd.media.embedding_index import EmbeddingIndex
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
from importd.media.pool import ExtractionPool
from tests import media_models


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return media_models.build_pack(tmp_path_factory.mktemp("buffalo_l"))


@pytest.fixture(scope="module")
def model(pack: Path) -> FaceModel:
    loaded = FaceModel.load(pack)
    assert isinstance(loaded, FaceModel), loaded
    return loaded


def save(tmp_path: Path, name: str, pixels: np.ndarray) -> str:
    path = tmp_path / name
    Image.fromarray(pixels).save(path)
    return str(path)


def detect(model: FaceModel, path: str) -> list[Face]:
    found = model.detect(path)
    assert not isinstance(found, ExtractionFailure), found
    return found


def test_detects_each_face_with_box_score_and_unit_embedding(model: FaceModel, tmp_path: Path) -> None:
    path = save(
        tmp_path, "two.png", media_models.picture_with_faces([("checker", 160, 160), ("rings", 416, 96)])
    )
    faces = detect(model, path)
    assert sorted(f.bbox for f in faces) == [(160.0, 160.0, 288.0, 288.0), (416.0, 96.0, 544.0, 224.0)]
    for face in faces:
        assert face.det_score > 0.99
        assert face.embedding.shape == (512,) and face.embedding.dtype == np.float32
        assert float(np.linalg.norm(face.embedding)) == pytest.approx(1.0, abs=1e-5)
    assert model.embedding_size == 512


def test_same_person_in_another_photo_matches_and_others_do_not(model: FaceModel, tmp_path: Path) -> None:
    first = detect(model, save(tmp_path, "a.png", media_models.picture_with_faces([("checker", 160, 160)])))
    again = detect(
        model,
        save(tmp_path, "b.jpg", media_models.picture_with_faces([("checker", 448, 320)], background=40)),
    )
    other = detect(model, save(tmp_path, "c.png", media_models.picture_with_faces([("hstripes", 160, 160)])))
    assert float(first[0].embedding @ again[0].embedding) > 0.95
    assert float(first[0].embedding @ other[0].embedding) < SAME_PERSON_MIN_SIMILARITY


def test_picture_without_faces(model: FaceModel, tmp_path: Path) -> None:
    assert detect(model, save(tmp_path, "empty.png", media_models.picture_with_faces([]))) == []


def test_small_faces_are_ignored(pack: Path, tmp_path: Path) -> None:
    strict = FaceModel.load(pack, FaceSettings(min_face_px=200))
    assert isinstance(strict, FaceModel)
    assert (
        detect(strict, save(tmp_path, "a.png", media_models.picture_with_faces([("checker", 160, 160)])))
        == []
    )


def test_low_scores_are_ignored(pack: Path, tmp_path: Path) -> None:
    # A grey square scores about 0.5 with the synthetic detector: found, then dropped below 0.7.
    picture = np.full((640, 640, 3), 12, np.uint8)
    picture[160:288, 160:288] = 150
    path = save(tmp_path, "grey.png", picture)
    lenient = FaceModel.load(pack, FaceSettings(detect_threshold=0.01, min_det_score=0.01))
    assert isinstance(lenient, FaceModel)
    found = detect(lenient, path)
    assert found and all(f.det_score < 0.7 for f in found)
    strict = FaceModel.load(pack, FaceSettings(detect_threshold=0.01))
    assert isinstance(strict, FaceModel)
    assert detect(strict, path) == []


def test_boxes_are_in_full_size_upright_pixels(pack: Path, tmp_path: Path) -> None:
    small = FaceModel.load(pack, FaceSettings(max_side=640))
    assert isinstance(small, FaceModel)
    big = Image.fromarray(media_models.picture_with_faces([("checker", 160, 160)])).resize((1280, 1280))
    big.save(tmp_path / "big.png")
    faces = detect(small, str(tmp_path / "big.png"))
    assert [tuple(round(v) for v in f.bbox) for f in faces] == [(320, 320, 576, 576)]


def test_recogniser_with_fixed_batch_of_one(tmp_path: Path) -> None:
    pack = media_models.build_pack(tmp_path / "pack")
    media_models.build_recogniser(pack / media_models.RECOGNISER_FILE, batch=1)
    loaded = FaceModel.load(pack)
    assert isinstance(loaded, FaceModel)
    path = save(
        tmp_path, "two.png", media_models.picture_with_faces([("checker", 160, 160), ("rings", 416, 96)])
    )
    assert len(detect(loaded, path)) == 2


def test_missing_pack_disables_faces_without_downloading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    missing = tmp_path / "models" / "buffalo_l"
    result = FaceModel.load(missing)
    assert result == FacesDisabled("face model pack directory not found", str(missing))
    assert check_pack(missing) == result
    assert not (tmp_path / "home" / ".insightface").exists()


def test_incomplete_pack_names_the_missing_file(pack: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(pack / media_models.DETECTOR_FILE, partial)
    result = FaceModel.load(partial)
    assert isinstance(result, FacesDisabled)
    assert "w600k_r50.onnx" in result.reason and result.path == str(partial)


def test_corrupt_or_swapped_models_disable_faces(pack: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt"
    shutil.copytree(pack, corrupt)
    (corrupt / media_models.DETECTOR_FILE).write_bytes(b"not onnx at all")
    result = FaceModel.load(corrupt)
    assert isinstance(result, FacesDisabled) and "det_10g.onnx" in result.reason
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    shutil.copy(pack / media_models.RECOGNISER_FILE, swapped / media_models.DETECTOR_FILE)
    shutil.copy(pack / media_models.RECOGNISER_FILE, swapped / media_models.RECOGNISER_FILE)
    result = FaceModel.load(swapped)
    assert isinstance(result, FacesDisabled) and "not a face detection model" in result.reason


def test_damaged_image_is_a_failure(model: FaceModel, tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    result = model.detect(str(tmp_path / "bad.jpg"))
    assert isinstance(result, ExtractionFailure) and result.extractor == "faces"


def test_same_person_groups(model: FaceModel) -> None:
    index: EmbeddingIndex[str] = EmbeddingIndex()
    layout = {"p1": ("checker", 160, 160), "p2": ("checker", 416, 320), "p3": ("vstripes", 96, 96)}
    for name, face in layout.items():
        found = model.detect_pixels(media_models.picture_with_faces([face]))
        index.add(name, found[0].embedding)
    groups = index.groups(SAME_PERSON_MIN_SIMILARITY)
    assert [sorted(k for k, _ in g.members) for g in groups] == [["p1", "p2"]]


def test_faces_in_pool_workers(pack: Path, tmp_path: Path) -> None:
    path = save(tmp_path, "one.png", media_models.picture_with_faces([("diagonal", 224, 224)]))

    async def main() -> tuple[object, object]:
        with ExtractionPool(1) as pool:
            found = await pool.run("faces", faces_in_file, path, str(pack), timeout=60)
            disabled = await pool.run("faces", faces_in_file, path, str(tmp_path / "nowhere"), timeout=60)
        return found, disabled

    found, disabled = anyio.run(main)
    assert isinstance(found, list) and [f.bbox for f in found] == [(224.0, 224.0, 352.0, 352.0)]
    assert isinstance(disabled, ExtractionFailure) and "faces disabled" in disabled.reason
