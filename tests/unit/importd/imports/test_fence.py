"""imports/ holds the pure stages of each import: they name nothing of the catalog, the pipeline
or the API (those import them), so each stays testable alone and the house has no loop."""

from __future__ import annotations

from pathlib import Path

import importd.imports
from tests.unit.importd.catalog.test_imports import _imported_names

IMPORTS = Path(importd.imports.__file__).parent
FORBIDDEN = ("importd.catalog", "importd.pipeline", "importd.api", "importd.core", "importd.service")


def test_no_import_stage_names_the_catalog_the_pipeline_or_the_api() -> None:
    found = {
        path.name: bad
        for path in sorted(IMPORTS.glob("*.py"))
        if (
            bad := [
                n for n in _imported_names(path) if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)
            ]
        )
    }
    assert found == {}
