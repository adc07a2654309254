"""Small ONNX models that insightface's loader (and so importd's media/face_onnx.py) accepts, so tests
run the real face path.

insightface's `model_zoo.get_model`, and `face_onnx.task_of` after it, routes a file by its shapes:
five or more outputs make an SCRFD detector, a square 112×112 input with one output an ArcFace
recogniser. The models here keep those contracts and behave predictably on drawn pictures instead of
real faces:

* the detector ("det_10g.onnx") finds a *face* at the top-left corner of every bright square that
  covers whole 32-pixel cells of its input (a white 128×128 square on a dark background at a
  multiple of 32 gives one box exactly around it), with plausible five-point landmarks inside it;
* the recogniser ("w600k_r50.onnx") is a fixed random projection of the middle of the aligned crop
  averaged over 8×8 cells, mean-removed: the same drawing gives the same embedding wherever it is,
  different drawings dissimilar ones.

Layout follows insightface's scrfd.py for 9 outputs: scores, boxes, then keypoints, each for strides
8, 16, 32, unbatched (rank 2), two anchors per cell, box and keypoint distances in stride units.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DETECTOR_FILE = "det_10g.onnx"
RECOGNISER_FILE = "w600k_r50.onnx"
EMBEDDING_SIZE = 512
FACE_CELLS = 4  # a detected face is 4×4 cells of the stride-32 map: 128 px at the 640 px input
_STRIDES = (8, 16, 32)
_OPSET = 17

# Landmarks (x, y) in stride units from the top-left anchor: eyes, nose, mouth corners.
_LANDMARKS = ((1.2, 1.4), (2.8, 1.4), (2.0, 2.2), (1.4, 3.0), (2.6, 3.0))


def _const(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name + "_value"))


def build_detector(path: Path) -> Path:
    """Write an SCRFD-shaped detector (dynamic height and width) to `path`."""
    nodes: list[onnx.NodeProto] = [
        _const("flat_shape", np.array([-1, 1], dtype=np.int64)),
        _const("zero", np.array(0.0, dtype=np.float32)),
        _const("one", np.array(1.0, dtype=np.float32)),
        _const("half", np.array(0.5, dtype=np.float32)),
        _const("gain", np.array(40.0, dtype=np.float32)),
        # corner(i, j) = b(i, j) - b(i-1, j) - b(i, j-1): 1 only at a bright region's top-left cell
        _const("corner_kernel", np.array([[[[0.0, -1.0], [-1.0, 1.0]]]], dtype=np.float32)),
        _const("box_distances", np.array([[0.0, 0.0, FACE_CELLS, FACE_CELLS]], dtype=np.float32)),
        _const("kps_distances", np.array([[c for point in _LANDMARKS for c in point]], dtype=np.float32)),
    ]
    scores, boxes, keypoints = [], [], []
    for stride in _STRIDES:
        s = f"s{stride}"
        nodes += [
            helper.make_node(
                "AveragePool",
                ["input.1"],
                [f"{s}_pool"],
                kernel_shape=[stride, stride],
                strides=[stride, stride],
            ),
            helper.make_node("ReduceMean", [f"{s}_pool"], [f"{s}_grey"], axes=[1], keepdims=1),
            # SCRFD feeds (pixel - 127.5) / 128: map back to 0 (black) .. 1 (white).
            helper.make_node("Add", [f"{s}_grey", "one"], [f"{s}_grey1"]),
            helper.make_node("Mul", [f"{s}_grey1", "half"], [f"{s}_bright"]),
        ]
        if stride == 32:
            nodes += [
                helper.make_node(
                    "Conv", [f"{s}_bright", "corner_kernel"], [f"{s}_corner"], pads=[1, 1, 0, 0]
                ),
                helper.make_node("Sub", [f"{s}_corner", "half"], [f"{s}_centred"]),
                helper.make_node("Mul", [f"{s}_centred", "gain"], [f"{s}_logit"]),
                helper.make_node("Sigmoid", [f"{s}_logit"], [f"{s}_map"]),
            ]
        else:  # only the coarsest stride detects; the finer maps score nothing
            nodes.append(helper.make_node("Mul", [f"{s}_bright", "zero"], [f"{s}_map"]))
        nodes += [
            helper.make_node("Reshape", [f"{s}_map", "flat_shape"], [f"{s}_cell"]),
            helper.make_node("Mul", [f"{s}_cell", "zero"], [f"{s}_nothing"]),
            # Two anchors per cell (insightface repeats each centre twice); only the first one scores.
            helper.make_node("Concat", [f"{s}_cell", f"{s}_nothing"], [f"{s}_pair"], axis=1),
            helper.make_node("Reshape", [f"{s}_pair", "flat_shape"], [f"score_{stride}"]),
            helper.make_node("Mul", [f"score_{stride}", "zero"], [f"{s}_z"]),
            helper.make_node("Add", [f"{s}_z", "one"], [f"{s}_ones"]),
            helper.make_node("Mul", [f"{s}_ones", "box_distances"], [f"bbox_{stride}"]),
            helper.make_node("Mul", [f"{s}_ones", "kps_distances"], [f"kps_{stride}"]),
        ]
        count = f"anchors_{stride}"
        scores.append(helper.make_tensor_value_info(f"score_{stride}", TensorProto.FLOAT, [count, 1]))
        boxes.append(helper.make_tensor_value_info(f"bbox_{stride}", TensorProto.FLOAT, [count, 4]))
        keypoints.append(helper.make_tensor_value_info(f"kps_{stride}", TensorProto.FLOAT, [count, 10]))
    graph = helper.make_graph(
        nodes,
        "synthetic_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])],
        scores + boxes + keypoints,
    )
    return _save(graph, path)


def build_recogniser(path: Path, *, seed: int = 7, batch: int | str = "None") -> Path:
    """Write an ArcFace-shaped recogniser (batch×3×112×112 → batch×512) to `path`.

    buffalo_l's w600k_r50 has a symbolic batch ("None"); `batch=1` builds the fixed 1×3×112×112 → 1×512
    variant some exports have.
    """
    features = 3 * 8 * 8
    projection = np.random.default_rng(seed).standard_normal((features, EMBEDDING_SIZE)).astype(np.float32)
    nodes = [
        _const("projection", projection),
        _const("feature_shape", np.array([-1, features], dtype=np.int64)),
        _const("centre_start", np.array([24, 24], dtype=np.int64)),
        _const("centre_end", np.array([88, 88], dtype=np.int64)),
        _const("spatial_axes", np.array([2, 3], dtype=np.int64)),
        # Only the middle 64×64 of the aligned crop, where a real face's eyes, nose and mouth are: the
        # margins are background, which would make every face look alike.
        helper.make_node("Slice", ["data", "centre_start", "centre_end", "spatial_axes"], ["middle"]),
        helper.make_node("AveragePool", ["middle"], ["cells"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Reshape", ["cells", "feature_shape"], ["features"]),
        helper.make_node("ReduceMean", ["features"], ["level"], axes=[1], keepdims=1),
        # Node names must not start with "Sub"/"Mul": insightface would take it for an MXNet export
        # and skip its own (x - 127.5) / 127.5 input scaling.
        helper.make_node("Sub", ["features", "level"], ["centred"], name="centre"),
        helper.make_node("MatMul", ["centred", "projection"], ["fc1"], name="embed"),
    ]
    graph = helper.make_graph(
        nodes,
        "synthetic_arcface",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [batch, 3, 112, 112])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [batch, EMBEDDING_SIZE])],
    )
    return _save(graph, path)


def build_pack(directory: Path) -> Path:
    """A buffalo_l-shaped model pack: `det_10g.onnx` and `w600k_r50.onnx` in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    build_detector(directory / DETECTOR_FILE)
    build_recogniser(directory / RECOGNISER_FILE)
    return directory


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = 8  # readable by every onnxruntime since 1.10
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def face_pattern(kind: str, side: int = 128) -> np.ndarray:
    """A `side`×`side` grey "face" the synthetic models detect and tell apart.

    Its top-left 32×32 cell stays white (what the detector keys on); the rest carries a 16-px pattern,
    fine enough that no other cell looks like a corner, coarse enough for the recogniser to see.
    Different kinds are different people; the same kind anywhere is the same person.
    """
    y, x = np.mgrid[:side, :side]
    patterns = {
        "checker": ((y // 16) + (x // 16)) % 2 == 1,
        "hstripes": (y // 16) % 2 == 1,
        "vstripes": (x // 16) % 2 == 1,
        "rings": (np.hypot(y - side / 2, x - side / 2) // 16) % 2 == 1,
        "diagonal": ((x + y) // 22) % 2 == 1,
    }
    dark = patterns[kind].copy()
    dark[:32, :32] = False
    face = np.full((side, side), 255, np.uint8)
    face[dark] = 30
    return face


def picture_with_faces(
    faces: list[tuple[str, int, int]], size: tuple[int, int] = (640, 640), background: int = 12
) -> np.ndarray:
    """An RGB array with a face of each (kind, x, y); x and y should be multiples of 32."""
    width, height = size
    picture = np.full((height, width, 3), background, np.uint8)
    for kind, x, y in faces:
        picture[y : y + 128, x : x + 128] = face_pattern(kind)[..., None]
    return picture
