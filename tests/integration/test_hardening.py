"""importd under the kernel's W^X switch, the one MemoryDenyWriteExecute=yes in importd.service asks for.

systemd enforces MemoryDenyWriteExecute= with a seccomp filter that refuses memory both writable and
executable, and executable memory that was writable. Linux 6.3 and later offer the same rule to any
process through prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN); it is inherited across fork and exec,
so the daemon's worker processes and its ffmpeg children live under it too. These tests switch it on
in a child and run the real code there: every module of importd and importctl imports, the media
extractors (Pillow, pymediainfo, onnxruntime through the face path, ffmpeg) do their work, and a real
daemon starts, registers a file and answers `status`. A kernel without the switch skips them.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import media_models
from tests.conftest import BIN, blake3_of, wait_for

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1

# Runs first in every child: W^X on, and proof that it bites (an anonymous W+X mapping is refused).
MDWE_PRELUDE = textwrap.dedent(
    f"""\
    import ctypes, mmap, sys
    if ctypes.CDLL(None, use_errno=True).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
        sys.exit(f"prctl(PR_SET_MDWE) failed: errno {{ctypes.get_errno()}}")
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except PermissionError:
        pass
    else:
        sys.exit("W+X memory was allowed: MDWE is not in force")
    """
)


def _mdwe_supported() -> bool:
    """Whether this kernel has PR_SET_MDWE; probed in a child, since the switch cannot be undone."""
    probe = (
        "import ctypes, sys\n"
        f"done = ctypes.CDLL(None).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) == 0\n"
        "sys.exit(0 if done else 1)"
    )
    return subprocess.run([sys.executable, "-c", probe], timeout=30).returncode == 0


pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only"),
    pytest.mark.skipif(
        sys.platform.startswith("linux") and not _mdwe_supported(),
        reason="the kernel has no PR_SET_MDWE (Linux >= 6.3)",
    ),
]


def run_under_mdwe(body: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", MDWE_PRELUDE + textwrap.dedent(body), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    )


@pytest.mark.catalog_free
def test_every_module_imports_under_mdwe() -> None:
    result = run_under_mdwe(
        """
        import importlib, json, pkgutil, traceback

        import importctl, importd
        failed = {}
        for package in (importd, importctl):
            for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
                if ".migrations." in info.name:
                    continue  # Alembic revision scripts run inside Alembic, not as imports
                try:
                    importlib.import_module(info.name)
                except BaseException as error:
                    failed[info.name] = "".join(traceback.format_exception_only(error)).strip()
        print(json.dumps(failed))
        """
    )
    assert result.returncode == 0, result.stderr
    # No exception: the near-duplicate kernel, once numba's run-time compiled code, is C now.
    assert json.loads(result.stdout) == {}


@pytest.mark.catalog_free
def test_media_extractors_work_under_mdwe(tmp_path: Path) -> None:
    from PIL import Image

    pack = media_models.build_pack(tmp_path / "pack")
    picture = tmp_path / "faces.png"
    Image.fromarray(media_models.picture_with_faces([("checker", 64, 64), ("rings", 320, 320)])).save(picture)
    video = tmp_path / "clip.mp4"
    if shutil.which("ffmpeg") is not None:
        subprocess.run(
            [
                *("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=2"),
                *("-pix_fmt", "yuv420p", str(video)),
            ],
            check=True,
            timeout=60,
        )
    result = run_under_mdwe(
        """
        import json, shutil, sys
        from importd.media.faces import FaceModel
        from importd.media.failure import ExtractionFailure
        from importd.media.image import extract_image
        from importd.media.video import extract_av, video_fingerprint
        pack, picture, video = sys.argv[1:]
        out = {}
        facts = extract_image(picture, max_pixels=50_000_000)
        assert not isinstance(facts, ExtractionFailure), facts
        out["image"] = [facts.width, facts.height]
        model = FaceModel.load(pack)
        assert isinstance(model, FaceModel), model
        faces = model.detect(picture)
        assert not isinstance(faces, ExtractionFailure), faces
        out["faces"] = len(faces)
        if shutil.which("ffmpeg"):
            av = extract_av(video)
            assert not isinstance(av, ExtractionFailure), av
            fingerprint = video_fingerprint(video, av.duration_s or 0.0)
            assert not isinstance(fingerprint, ExtractionFailure), fingerprint
            out["frames"] = sum(frame is not None for frame in fingerprint.frames)
        print(json.dumps(out))
        """,
        str(pack),
        str(picture),
        str(video),
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["image"] == [640, 640]
    assert out["faces"] == 2
    if shutil.which("ffmpeg") is not None:
        assert out["frames"] > 0


def _start_under_mdwe(d, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    launcher = MDWE_PRELUDE + "import os\nos.execv(sys.argv[1], sys.argv[1:])\n"
    logf = open(d.log, "ab")  # noqa: SIM115  (handed to the child, closed right after)
    d.proc = subprocess.Popen(
        [sys.executable, "-c", launcher, str(BIN / "importd"), "run", "--config", str(d.config)],
        stdout=logf,
        stderr=subprocess.STDOUT,
        env=env,
    )
    logf.close()


def test_daemon_runs_under_mdwe(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import socket

    d = make_daemon(extra="[media]\nenabled = false\n")
    (d.roots["legacy"] / "a.bin").write_bytes(b"x" * 100_000)
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(30)
    env = {k: v for k, v in os.environ.items() if k not in ("IMPORTD_SOCKET", "IMPORTD_CATALOG_URL")}
    _start_under_mdwe(d, dict(env, NOTIFY_SOCKET=str(notify)))
    try:
        got = []
        while "READY=1" not in got:
            got.append(sock.recv(4096).decode())
        status = wait_for(lambda: d.status()["files"]["present"] == 1 and d.status(), what="registered")
        assert status["files"]["present"] == 1
        rows = d.rows()
        assert rows[0]["blake3"] == blake3_of(b"x" * 100_000)
        assert d.stop() == 0, d.log_text()
    finally:
        sock.close()
        d.kill()


def test_daemon_media_under_mdwe(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    d = make_daemon()
    Image.fromarray(media_models.picture_with_faces([("checker", 64, 64)])).save(d.roots["legacy"] / "p.png")
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "IMPORTD_SOCKET")}
    _start_under_mdwe(d, env)
    try:
        wait_for(lambda: d.socket.exists() and d.status(), timeout=60, what="daemon socket")
        wait_for(lambda: d.status()["media"]["done"] >= 1, timeout=90, what="media facts")
        info = d.ctl_json("info", str(d.roots["legacy"] / "p.png"))
        assert info["media"]["width"] == 640, info
    finally:
        d.kill()


@pytest.mark.catalog_free
def test_prelude_refuses_wx_memory() -> None:
    """The children above run with W^X in force, not merely asked for: a W+X mapping fails there."""
    result = run_under_mdwe("print(ctypes.CDLL(None).prctl(66, 0, 0, 0, 0))")
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) & PR_MDWE_REFUSE_EXEC_GAIN
    assert ctypes.CDLL(None).prctl(66, 0, 0, 0, 0) == 0, "the test process itself stays as it was"


# ---------------------------------------------------------------------------------------------
# Roots read-only, as ProtectSystem=strict leaves them without a ReadWritePaths= drop-in


@pytest.mark.skipif(os.geteuid() != 0, reason="a read-only bind mount in a mount namespace needs root")
def test_a_read_only_root_refuses_repairs_and_the_trash_cleanly(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon(extra="[media]\nenabled = false\n")
    root = d.roots["legacy"]
    (root / "Films" / "Old").mkdir(parents=True)
    (root / "Films" / "Old" / "a.mkv").write_bytes(os.urandom(3000))
    (root / "links").mkdir()
    os.symlink("../Films/Old/a.mkv", root / "links" / "a")
    os.symlink("../never-there.mkv", root / "links" / "orphan")
    # The daemon sees the root through a read-only bind mount of its own; the test, outside that
    # namespace, still changes the tree underneath (inotify follows the inodes).
    remount = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    sandbox = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", remount, str(root)]
    logf = open(d.log, "ab")  # noqa: SIM115  (handed to the child, closed right after)
    d.proc = subprocess.Popen(
        [*sandbox, str(BIN / "importd"), "run", "--config", str(d.config)],
        stdout=logf,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "IMPORTD_SOCKET")},
    )
    logf.close()
    try:
        wait_for(lambda: d.socket.exists() and d.status(), timeout=60, what="daemon socket")
        d.wait_idle()
        (root / "Films" / "Old").rename(root / "Films" / "New")
        wait_for(lambda: d.status()["counters"]["moved"] >= 1, what="move registered")
        d.wait_idle()
        said = d.ctl("repair-links", "--yes")
        assert said.returncode == 1, "a failed repair fails the command"
        assert said.stdout.decode().count("Read-only file system") == 2, said.stdout
        done = d.ctl("repair-links", "--yes", "--json")
        results = {os.path.basename(r["link"]): r for r in json.loads(done.stdout)["results"]}
        assert {name: (r["action"], r["status"]) for name, r in results.items()} == {
            "a": ("repair", "failed"),
            "orphan": ("trash", "failed"),
        }
        assert all("Read-only file system" in r["detail"] for r in results.values()), results
        # Nothing changed under the root, nothing half-done is left, and the daemon goes on.
        assert os.readlink(root / "links" / "a") == "../Films/Old/a.mkv"
        assert os.readlink(root / "links" / "orphan") == "../never-there.mkv"
        assert sorted(os.listdir(root / "links")) == ["a", "orphan"]
        assert d.ctl_json("trash")["items"] == []
        assert d.status()["files"]["present"] == 1
    finally:
        d.kill()
