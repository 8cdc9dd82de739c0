"""The demo is an application: it reaches the hermes libraries through their public names only."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SOURCES = sorted((Path(__file__).resolve().parents[1] / "src" / "deepclean_demo").glob("*.py"))


def _hermes_imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) of every ``from hermes... import name`` in ``path`` (at any depth)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, "") for a in node.names if a.name.startswith("hermes")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hermes"):
            found += [(node.lineno, node.module or "", a.name) for a in node.names]
    return found


def test_the_demo_uses_quiver_aeriel_and_stillwater() -> None:
    modules = {module for path in SOURCES for _, module, _ in _hermes_imports(path)}
    assert {m.split(".")[1] for m in modules} == {"quiver", "aeriel", "stillwater"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_every_hermes_name_the_demo_uses_is_public(path: Path) -> None:
    for line, module, name in _hermes_imports(path):
        where = f"{path.name}:{line}: {module}"
        assert not any(part.startswith("_") for part in module.split(".")), f"{where} is a private module"
        assert name, f"{where}: import names from a package's public API, not the module"
        exported = importlib.import_module(module).__all__
        assert name in exported, f"{where} does not export {name!r} (its __all__: {exported})"
