"""buffalo_l's two networks on onnxruntime: the SCRFD detector and the ArcFace recogniser.

insightface's own pre- and post-processing (its model_zoo's scrfd.py and arcface_onnx.py and
utils/face_align.py, MIT), written again for the two models a pack holds, not the insightface package:
that requires `opencv-python`, OpenCV's GUI build, which needs the system's libGL and overwrites the
headless build's `cv2`; and it is a whole toolkit (video blurring, a desktop GUI, model downloads)
around the few hundred lines a pack needs. OpenCV's headless build resizes and warps, as in insightface,
so embeddings match those of insightface's reference code. Which class serves which file follows
insightface's routing by shapes (five or more outputs: a detector; a square input of 112 or more: a
recogniser).

Imported in pool workers only (numpy, OpenCV, onnx and onnxruntime are heavy).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime  # type: ignore[import-untyped]

FloatArray = npt.NDArray[np.float32]

# Where ArcFace's five landmarks (eyes, nose, mouth corners) sit in its 112×112 aligned crop.
ARCFACE_LANDMARKS = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)

# SCRFD's outputs by count: feature maps (strides), anchors per cell, and whether landmarks come too.
_SCRFD_LAYOUTS: dict[int, tuple[tuple[int, ...], int, bool]] = {
    6: ((8, 16, 32), 2, False),
    9: ((8, 16, 32), 2, True),
    10: ((8, 16, 32, 64, 128), 1, False),
    15: ((8, 16, 32, 64, 128), 1, True),
}


def open_session(path: str, options: Any) -> Any:
    """An onnxruntime session on the CPU; raises on a corrupt or foreign file."""
    return onnxruntime.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def task_of(session: Any) -> str | None:
    """ "detection", "recognition" or None, by the model's shapes as insightface routes them."""
    shape = session.get_inputs()[0].shape
    if len(session.get_outputs()) >= 5:
        return "detection"
    side = shape[2] if len(shape) == 4 else None
    if isinstance(side, int) and side == shape[3] and side >= 112 and side % 16 == 0:
        return "recognition"
    return None


class Detector:
    """SCRFD: face boxes with a score and, for keypoint models, five landmarks each."""

    nms_threshold = 0.4

    def __init__(self, session: Any) -> None:
        self._session = session
        outputs = session.get_outputs()
        self._input_name = session.get_inputs()[0].name
        self._output_names = [o.name for o in outputs]
        self._batched = len(outputs[0].shape) == 3
        layout = _SCRFD_LAYOUTS.get(len(outputs))
        self.strides, self._anchors, self.use_kps = layout if layout else ((), 1, False)
        self._centres: dict[tuple[int, int, int], FloatArray] = {}

    def detect(
        self, bgr: npt.NDArray[Any], size: tuple[int, int], threshold: float, max_num: int = 0
    ) -> tuple[FloatArray, FloatArray | None]:
        """Boxes as rows (x1, y1, x2, y2, score) in `bgr`'s pixels, best first after NMS, and their
        landmarks (n×5×2), or None for a model without them. `size` is the network's (width, height)."""
        width, height = size
        if bgr.shape[0] / bgr.shape[1] > height / width:
            new_height, new_width = height, int(height / (bgr.shape[0] / bgr.shape[1]))
        else:
            new_width, new_height = width, int(width * (bgr.shape[0] / bgr.shape[1]))
        scale = new_height / bgr.shape[0]
        canvas = np.zeros((height, width, 3), dtype=np.uint8)
        canvas[:new_height, :new_width] = cv2.resize(bgr, (new_width, new_height))
        scores, boxes, points = self._forward(canvas, threshold)
        if scores.size == 0:
            return np.empty((0, 5), np.float32), np.empty((0, 5, 2), np.float32) if self.use_kps else None
        order = np.argsort(-scores.ravel(), kind="stable")
        candidates = np.hstack((boxes / scale, scores)).astype(np.float32, copy=False)[order]
        keep = _nms(candidates, self.nms_threshold)
        found = candidates[keep]
        landmarks = (points / scale)[order][keep] if self.use_kps else None
        if max_num > 0 and found.shape[0] > max_num:
            # insightface's choice: large faces near the middle of the picture first.
            area = (found[:, 2] - found[:, 0]) * (found[:, 3] - found[:, 1])
            centre_y, centre_x = bgr.shape[0] // 2, bgr.shape[1] // 2
            offsets = np.vstack(
                [(found[:, 0] + found[:, 2]) / 2 - centre_x, (found[:, 1] + found[:, 3]) / 2 - centre_y]
            )
            best = np.argsort(area - np.sum(offsets**2.0, 0) * 2.0)[::-1][:max_num]
            found = found[best]
            landmarks = landmarks[best] if landmarks is not None else None
        return found, landmarks

    def _forward(self, canvas: npt.NDArray[np.uint8], threshold: float) -> tuple[FloatArray, ...]:
        height, width = canvas.shape[:2]
        blob = cv2.dnn.blobFromImage(canvas, 1.0 / 128.0, (width, height), (127.5, 127.5, 127.5), swapRB=True)
        outs = self._session.run(self._output_names, {self._input_name: blob.astype(np.float32)})
        levels = len(self.strides)
        scores, boxes, points = [], [], []
        for i, stride in enumerate(self.strides):
            score = outs[i][0] if self._batched else outs[i]
            distances = (outs[i + levels][0] if self._batched else outs[i + levels]) * stride
            centres = self._anchor_centres(height // stride, width // stride, stride)
            positive = np.where(score >= threshold)[0]
            scores.append(score[positive])
            boxes.append(_distance_to_box(centres, distances)[positive])
            if self.use_kps:
                kps = (outs[i + 2 * levels][0] if self._batched else outs[i + 2 * levels]) * stride
                points.append(_distance_to_points(centres, kps).reshape((-1, 5, 2))[positive])
        return (
            np.vstack(scores) if scores else np.empty((0, 1), np.float32),
            np.vstack(boxes) if boxes else np.empty((0, 4), np.float32),
            np.vstack(points) if points else np.empty((0, 5, 2), np.float32),
        )

    def _anchor_centres(self, rows: int, columns: int, stride: int) -> FloatArray:
        key = (rows, columns, stride)
        centres = self._centres.get(key)
        if centres is None:
            ys, xs = np.mgrid[:rows, :columns]
            grid = np.stack([xs, ys], axis=-1).astype(np.float32)
            centres = (grid * stride).reshape((-1, 2))
            if self._anchors > 1:
                centres = np.stack([centres] * self._anchors, axis=1).reshape((-1, 2))
            if len(self._centres) < 100:
                self._centres[key] = centres
        return centres


class Recogniser:
    """ArcFace: an embedding per aligned crop (not normalised)."""

    def __init__(self, session: Any, path: str) -> None:
        self._session = session
        first = session.get_inputs()[0]
        self._input_name = first.name
        self.input_shape = first.shape
        self.side = int(first.shape[2])
        outputs = session.get_outputs()
        self._output_names = [o.name for o in outputs]
        self.output_shape = outputs[0].shape
        # Exports converted from MXNet scale their input in the graph (leading Sub and Mul nodes);
        # the others expect (pixel - 127.5) / 127.5, as insightface decides.
        names = [node.name for node in onnx.load(path, load_external_data=False).graph.node[:8]]
        in_graph = any(n.startswith(("Sub", "_minus")) for n in names) and any(
            n.startswith(("Mul", "_mul")) for n in names
        )
        self._mean, self._std = (0.0, 1.0) if in_graph else (127.5, 127.5)

    def embed(self, crops: list[npt.NDArray[np.uint8]]) -> FloatArray:
        """One row per BGR crop of side `side`."""
        blob = cv2.dnn.blobFromImages(
            crops, 1.0 / self._std, (self.side, self.side), (self._mean,) * 3, swapRB=True
        )
        return np.asarray(
            self._session.run(self._output_names, {self._input_name: blob.astype(np.float32)})[0],
            dtype=np.float32,
        )


def align(bgr: npt.NDArray[Any], landmarks: FloatArray, side: int) -> npt.NDArray[np.uint8]:
    """The face warped so its five landmarks land where ArcFace expects them (insightface's norm_crop)."""
    if side % 112 == 0:
        target = ARCFACE_LANDMARKS * (side / 112.0)
    else:
        target = ARCFACE_LANDMARKS * (side / 128.0)
        target[:, 0] += 8.0 * side / 128.0
    matrix = similarity_transform(landmarks, target)
    return np.asarray(cv2.warpAffine(bgr, matrix[:2], (side, side), borderValue=0.0), dtype=np.uint8)


def similarity_transform(src: npt.NDArray[Any], dst: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """The least-squares rotation, uniform scale and translation taking `src` points onto `dst` (3×3).

    Umeyama's method (1991), step for step as scikit-image's SimilarityTransform.estimate, which
    insightface aligns with: in the points' own precision (float32 landmarks stay float32), so the crops
    are the same to the bit.
    """
    dim = src.shape[1]
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_centred, dst_centred = src - src_mean, dst - dst_mean
    covariance = dst_centred.T @ src_centred / src.shape[0]
    signs = np.ones(dim)
    if np.linalg.det(covariance) < 0:
        signs[-1] = -1
    transform = np.eye(dim + 1)
    u, singular, vt = np.linalg.svd(covariance)
    rank = np.linalg.matrix_rank(covariance)
    if rank == 0:
        return np.full((dim + 1, dim + 1), np.nan)
    if rank == dim - 1:
        if np.linalg.det(u) * np.linalg.det(vt) > 0:
            transform[:dim, :dim] = u @ vt
        else:
            flipped = signs.copy()
            flipped[-1] = -1
            transform[:dim, :dim] = u @ np.diag(flipped) @ vt
    else:
        transform[:dim, :dim] = u @ np.diag(signs) @ vt
    scale = 1.0 / src_centred.var(axis=0).sum() * (singular @ signs)
    transform[:dim, dim] = dst_mean - scale * (transform[:dim, :dim] @ src_mean)
    transform[:dim, :dim] *= scale
    return transform


def _distance_to_box(centres: FloatArray, distances: FloatArray) -> FloatArray:
    return np.stack(
        [
            centres[:, 0] - distances[:, 0],
            centres[:, 1] - distances[:, 1],
            centres[:, 0] + distances[:, 2],
            centres[:, 1] + distances[:, 3],
        ],
        axis=-1,
    )


def _distance_to_points(centres: FloatArray, distances: FloatArray) -> FloatArray:
    columns = []
    for i in range(0, distances.shape[1], 2):
        columns.append(centres[:, 0] + distances[:, i])
        columns.append(centres[:, 1] + distances[:, i + 1])
    return np.stack(columns, axis=-1)


def _nms(rows: FloatArray, threshold: float) -> list[int]:
    """Greedy non-maximum suppression over (x1, y1, x2, y2, score) rows, as insightface's (+1 areas)."""
    x1, y1, x2, y2, scores = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        overlap = w * h / (areas[i] + areas[rest] - w * h)
        order = rest[np.where(overlap <= threshold)[0]]
    return keep
