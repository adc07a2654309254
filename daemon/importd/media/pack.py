"""The face model pack on disk: which files a buffalo_l-style pack must hold, and a cheap check.

Standard library only, so `importctl status` can say why faces are off without the daemon
loading numpy, OpenCV or onnxruntime.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DETECTION_FILE = "det_10g.onnx"
RECOGNITION_FILE = "w600k_r50.onnx"


@dataclass(frozen=True, slots=True)
class FacesDisabled:
    """Faces are off: why, and which model-pack path was looked at (for `importctl status`)."""

    reason: str
    path: str


def check_pack_files(
    pack_dir: str | os.PathLike[str],
    detection_file: str = DETECTION_FILE,
    recognition_file: str = RECOGNITION_FILE,
) -> FacesDisabled | None:
    """Cheap check that the pack directory holds both model files; None when it looks usable."""
    directory = Path(pack_dir)
    if not directory.is_dir():
        return FacesDisabled("face model pack directory not found", str(directory))
    missing = [name for name in (detection_file, recognition_file) if not (directory / name).is_file()]
    if missing:
        return FacesDisabled(
            f"face model pack lacks {', '.join(missing)} (an insightface buffalo_l pack is expected)",
            str(directory),
        )
    return None
