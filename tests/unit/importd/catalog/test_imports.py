"""catalog/ is the bottom of the house: it never imports the pipeline or the API, directly or
through anything it imports."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import importd.catalog.writer

CATALOG = Path(importd.catalog.writer.__file__).parent
FORBIDDEN = ("importd.pipeline", "importd.api")


def _modules() -> list[Path]:
    return sorted(p for p in CATALOG.rglob("*.py") if "versions" not in p.parts)


def _imported_names(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def test_no_catalog_module_names_the_pipeline_or_the_api() -> None:
    """Every import statement, also those only for the type checker or inside functions."""
    found = {
        str(path.relative_to(CATALOG)): bad
        for path in _modules()
        if (bad := [n for n in _imported_names(path) if _forbidden(n)])
    }
    assert found == {}


def test_importing_the_catalog_loads_neither_the_pipeline_nor_the_api() -> None:
    names = [
        "importd.catalog." + ".".join(p.relative_to(CATALOG).with_suffix("").parts)
        for p in _modules()
        if p.name != "__init__.py" and "migrations" not in p.parts
    ]
    code = (
        "import importlib, json, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True).stdout
    loaded = json.loads(out)
    assert "importd.catalog.writer" in loaded and "importd.catalog.entities" in loaded
    assert [m for m in loaded if _forbidden(m)] == []
