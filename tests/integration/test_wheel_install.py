"""The install promise, end to end: a wheel built from this tree, installed with pip into a new venv (no
system site-packages, no --no-deps step, no systemd extra), runs importd with a PATH holding only that
venv (so no system ffmpeg), and importctl from the same venv sees media facts, a video fingerprint, and
faces disabled only because the model pack is missing; with a pack, the venv's face libraries load it.

Slow (a minute or two: the build, and pip installing every dependency from its cache). Select it alone
with `-m install`; deselect it with `-m "not install"`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests import media_models
from tests.conftest import wait_for
from tests.videos import run_ffmpeg

pytestmark = [pytest.mark.install, pytest.mark.slow, pytest.mark.timeout(600)]

PROJECT = Path(__file__).resolve().parents[2]
# What a wheel is built from (MANIFEST.in and pyproject.toml say what goes in); copied so the build
# leaves no build/ or egg-info in the working tree.
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "daemon", "ctl", "third_party")


def run(*command: str | Path, env: dict[str, str] | None = None, timeout: float = 420) -> str:
    done = subprocess.run(
        [str(c) for c in command],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, (
        f"{command}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    source.mkdir()
    for name in SOURCES:
        origin = PROJECT / name
        if origin.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info", "build")
            shutil.copytree(origin, source / name, ignore=ignore)
        else:
            shutil.copy2(origin, source / name)
    pip_env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    started = time.monotonic()
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", base / "dist", source, env=pip_env)
    built = time.monotonic()
    (wheel,) = (base / "dist").glob("importd-*.whl")
    venv = base / "venv"
    # The interpreter this venv came from, not this venv: the new one must see none of its packages.
    run(getattr(sys, "_base_executable", sys.executable), "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel, env=pip_env)
    installed = time.monotonic() - built
    print(f"wheel built in {built - started:.0f} s, installed with its dependencies in {installed:.0f} s")
    return venv


def test_the_venv_holds_every_feature_and_no_gui_opencv(venv: Path) -> None:
    listed = {
        p["name"].lower()
        for p in json.loads(run(venv / "bin" / "python", "-m", "pip", "list", "--format=json"))
    }
    assert {"opencv-python-headless", "onnxruntime", "imageio-ffmpeg", "pymediainfo"} <= listed
    assert "opencv-python" not in listed, "the GUI OpenCV needs the system's libGL"
    assert "importd" in listed and "pytest" not in listed  # the wheel alone, no dev tools


def test_importd_from_the_wheel_sees_media_a_fingerprint_and_why_faces_are_off(
    venv: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    Image.fromarray(media_models.picture_with_faces([("checker", 160, 160)])).save(root / "photo.jpg")
    graph = "testsrc2=s=320x240:r=25,trim=duration=4,format=yuv420p[v]"
    run_ffmpeg(
        "-filter_complex",
        graph,
        "-map",
        "[v]",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        str(root / "clip.mp4"),
    )
    socket = tmp_path / "control.sock"
    config = tmp_path / "importd.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            settle_seconds = 0.3
            state_dir = "{tmp_path / "state"}"
            [catalog]
            url = "sqlite:///{tmp_path / "catalog.db"}"
            [control]
            socket = "{socket}"
            [[roots]]
            name = "legacy"
            path = "{root}"
            """
        )
    )
    # Only the venv on PATH: no system ffmpeg, nothing from the machine but the interpreter.
    env = {"PATH": str(venv / "bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    log = (tmp_path / "importd.log").open("wb")
    daemon = subprocess.Popen(
        [venv / "bin" / "importd", "run", "--config", config], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    log.close()

    def ctl(*args: str) -> Any:
        return json.loads(run(venv / "bin" / "importctl", "--socket", socket, *args, "--json", env=env))

    try:
        wait_for(lambda: socket.exists() and ctl("status"), timeout=60, what="daemon socket")
        media = ctl("status")["media"]
        assert media["ffmpeg"]["source"] == "imageio-ffmpeg", media["ffmpeg"]
        assert str(media["ffmpeg"]["path"]).startswith(str(venv)), media["ffmpeg"]
        faces = media["faces"]
        assert faces["state"] == "disabled" and "pack directory not found" in faces["reason"], faces

        def extractions(path: Path) -> dict[str, tuple[str, str | None]]:
            return {e["extractor"]: (e["status"], e["error"]) for e in ctl("info", str(path))["extractions"]}

        wait_for(lambda: {"av", "video_fp"} <= set(extractions(root / "clip.mp4")), timeout=120, what="video")
        wait_for(lambda: "image" in extractions(root / "photo.jpg"), timeout=60, what="photo analysed")
        states = extractions(root / "clip.mp4")
        assert states["av"] == ("ok", None) and states["video_fp"] == ("ok", None), states
        video = ctl("info", str(root / "clip.mp4"))
        assert video["media"]["width"] == 320 and 3.5 < video["media"]["duration_s"] < 4.5
        picture = ctl("info", str(root / "photo.jpg"))
        assert picture["media"]["width"] == 640 and picture["hashes"]["phash"]
        text = run(venv / "bin" / "importctl", "--socket", socket, "status", env=env)
        assert "ffmpeg: " in text and "imageio-ffmpeg" in text and "faces disabled" in text
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    assert daemon.returncode == 0, (tmp_path / "importd.log").read_text(errors="replace")[-3000:]


def test_the_venvs_face_libraries_load_a_pack(venv: Path, tmp_path: Path) -> None:
    pack = media_models.build_pack(tmp_path / "buffalo_l")
    picture = tmp_path / "two.png"
    Image.fromarray(media_models.picture_with_faces([("checker", 160, 160), ("rings", 416, 96)])).save(
        picture
    )
    script = (
        "import sys; from importd.media.faces import FaceModel; "
        "m = FaceModel.load(sys.argv[1]); assert isinstance(m, FaceModel), m; "
        "print(len(m.detect(sys.argv[2])))"
    )
    env = {"PATH": str(venv / "bin"), "HOME": str(tmp_path)}
    assert run(venv / "bin" / "python", "-c", script, pack, picture, env=env).strip() == "2"
