"""The layers import one way (README, Layout): harness/ at the bottom, tasks/ and models/ on it, sweeps/ and
reports/ above them, run.py on top. Read from the source's import statements, so a lazy import inside a function
counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGES = ("harness", "tasks", "models", "sweeps", "reports")
# What each layer may not import: anything above it (and the runner for reports/, which reads only the store).
FORBIDDEN = {
    "harness": {"tasks", "models", "sweeps", "reports"},
    "tasks": {"models", "sweeps", "reports"},
    "models": {"tasks", "sweeps", "reports"},
    "reports": {"sweeps"},
}


def imported_packages(path: Path) -> set[str]:
    """The top-level names of every module `path` imports, at any depth of its code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(layer: str) -> None:
    files = sorted((ROOT / layer).rglob("*.py"))
    assert files
    wrong = {str(f.relative_to(ROOT)): sorted(imported_packages(f) & FORBIDDEN[layer]) for f in files}
    assert {f: names for f, names in wrong.items() if names} == {}


def test_imported_packages_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    from sweeps.status import main\n    import reports.build as b\n")
    assert imported_packages(source) == {"os", "sweeps", "reports"}
