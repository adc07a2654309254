"""The numba kernel behind HashIndex: compiled without a writable cache, and fenced off (only
`hash_index` imports it, and no index module imports the video decoder)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import importd.media
from importd.media import hamming_kernel

MEDIA = Path(importd.media.__file__).parent
INDEXES = ("hash_index", "embedding_index", "near_groups")


def imported_by(module: Path) -> set[str]:
    """The importd.media modules `module` imports, by their last name."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module == "importd.media":
                names |= {a.name for a in node.names}
            elif node.module.startswith("importd.media."):
                names.add(node.module.rsplit(".", 1)[1])
        elif isinstance(node, ast.Import):
            names |= {a.name.rsplit(".", 1)[1] for a in node.names if a.name.startswith("importd.media.")}
    return names


def test_only_the_hash_index_imports_the_kernel() -> None:
    package = MEDIA.parent
    users = sorted(
        str(p.relative_to(package)) for p in package.rglob("*.py") if "hamming_kernel" in imported_by(p)
    )
    assert users == ["media/hash_index.py"]


def test_no_index_module_imports_the_video_decoder() -> None:
    for name in INDEXES:
        assert not imported_by(MEDIA / f"{name}.py") & {"video", "video_groups"}, name


def test_kernels_compile_without_a_writable_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """numba refuses cache=True when it finds nowhere to write; the kernels then compile uncached."""
    import numba

    real: Any = numba.njit
    calls: list[bool] = []

    def njit(*args: Any, **options: Any) -> Any:
        calls.append(bool(options.get("cache")))
        if options.get("cache"):
            raise RuntimeError("cannot cache function: no locator available")
        return real(*args, **options)

    monkeypatch.setattr(numba, "njit", njit)

    def double(x: int) -> int:
        return 2 * x

    compiled = hamming_kernel._jit()(double)
    # Counted before the first call: compiling may load numba's own jitted helpers, through njit too.
    assert calls == [True, False]
    assert compiled(21) == 42


def test_the_hash_index_uses_only_the_kernels_interface() -> None:
    assert all(hasattr(hamming_kernel, name) for name in hamming_kernel.__all__)
    tree = ast.parse((MEDIA / "hash_index.py").read_text())
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in ("hamming_kernel", "hk")
    }
    assert used and used <= set(hamming_kernel.__all__), used - set(hamming_kernel.__all__)
