"""`make sanitize`: the C extensions built with AddressSanitizer and UBSan, and the tests that drive
them run against those builds.

The extensions (pyproject.toml's [tool.setuptools.ext-modules]) read files, take sizes and offsets
from callers (the near-duplicate index follows word offsets stored in its arena) and split work
between threads: an out-of-bounds write there corrupts the daemon's
memory silently instead of failing a test. Here every source of each extension is compiled again
with -fsanitize=address,undefined (UB aborts rather than warns), into a copy of the `importd`
package that goes first on PYTHONPATH, and the tests run with the sanitizer runtimes preloaded
(Python itself is not instrumented). Any report fails the run.

Needs gcc; without it, says so and exits 0, like the optional extensions themselves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = [
    "tests/unit/importd/pipeline/test_blake3tree.py",
    "tests/unit/importd/pipeline/test_hasher.py",
    "tests/unit/importd/pipeline/test_hasher_small.py",
    "tests/unit/importd/pipeline/test_reconcile.py",
    "tests/unit/importd/maintenance/test_scrub.py",
    "tests/unit/importd/media/test_hamming_kernel.py",
    "tests/unit/importd/media/test_hash_index.py",
]
FLAGS = [
    "-shared",
    "-fPIC",
    "-O1",
    "-g",
    "-pthread",
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=undefined",
    "-fno-omit-frame-pointer",
]


def runtime(cc: str, name: str) -> str:
    found = subprocess.run([cc, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(found):
        raise SystemExit(f"sanitize: {cc} has no {name}; install the compiler's sanitizer runtimes")
    return found


def build(cc: str, package: Path) -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    include = sysconfig.get_paths()["include"]
    built = []
    for ext in config["tool"]["setuptools"]["ext-modules"]:
        name: str = ext["name"]
        out = package.parent / (name.replace(".", "/") + suffix)
        includes = [f"-I{ROOT / d}" for d in ext.get("include-dirs", [])] + [f"-I{include}"]
        sources = [str(ROOT / s) for s in ext["sources"]]
        cmd = [cc, *FLAGS, *includes, *sources, "-o", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"sanitize: building {name} failed:\n{done.stderr[-3000:]}")
        built.append(name)
    return built


def main() -> int:
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        print(f"sanitize: no {cc}; skipped (the extensions are optional and not built either)")
        return 0
    preload = " ".join([runtime(cc, "libasan.so"), runtime(cc, "libubsan.so")])
    with tempfile.TemporaryDirectory(prefix="importd-sanitize-") as tmp:
        package = Path(tmp) / "importd"
        shutil.copytree(
            ROOT / "daemon" / "importd", package, ignore=shutil.ignore_patterns("*.so", "__pycache__")
        )
        built = build(cc, package)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([tmp, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "LD_PRELOAD": preload,
            # Python's own allocations are never freed at exit: leak reports would be noise.
            "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        # The sanitized builds must be the ones imported, or the run proves nothing.
        probe = "import sys, importlib; print(*(importlib.import_module(n).__file__ for n in sys.argv[1:]))"
        where = subprocess.run([sys.executable, "-c", probe, *built], env=env, capture_output=True, text=True)
        if where.returncode != 0 or any(not p.startswith(tmp) for p in where.stdout.split()):
            raise SystemExit(
                f"sanitize: the sanitized builds were not imported: {where.stdout}{where.stderr}"
            )
        print(f"sanitize: {', '.join(built)} built with ASan+UBSan; running {len(TESTS)} test files")
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=ROOT, env=env
        ).returncode


if __name__ == "__main__":
    sys.exit(main())
