"""The import contracts of ARCHITECTURE.md ([tool.importlinter] in the root pyproject) hold, and catch a breach.

`make lint` runs `lint-imports` (a pre-commit hook). Here it runs on the real tree, then on a copy
of the sources with one violating import added: each must fail, naming the import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
# where each root package of the contracts lives in the checkout
SOURCES = {
    "hermes/quiver": ROOT / "quiver/src/hermes/quiver",
    "hermes/aeriel": ROOT / "aeriel/src/hermes/aeriel",
    "hermes/stillwater": ROOT / "stillwater/src/hermes/stillwater",
    "hermes/cloudbreak": ROOT / "cloudbreak/src/hermes/cloudbreak",
    "deepclean_demo": ROOT / "apps/deepclean/src/deepclean_demo",
}


def lint_imports(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NO_COLOR="1")
    if pythonpath is not None:  # ahead of the editable installs: the copy is what gets analysed
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the five root packages (``src/``) and of the root pyproject (the contracts)."""
    for name, source in SOURCES.items():
        shutil.copytree(source, tmp_path / "src" / name, ignore=shutil.ignore_patterns("__pycache__"))
    assert not (tmp_path / "src" / "hermes" / "__init__.py").exists()  # still a PEP 420 namespace
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def add_import(tree: Path, module: str, statement: str) -> None:
    path = tree / "src" / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\n{statement}\n")


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_the_unchanged_copy_keeps_every_contract(tree: Path) -> None:
    result = lint_imports(tree, tree / "src")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "statement", "expected"),
    [
        # a library reaching up a layer
        ("hermes.aeriel.endpoints", "from hermes.stillwater import Pipeline", "hermes.aeriel.endpoints -> hermes.stillwater"),
        ("hermes.quiver.platform", "import hermes.aeriel", "hermes.quiver.platform -> hermes.aeriel"),
        ("hermes.aeriel.exceptions", "import deepclean_demo", "hermes.aeriel.exceptions -> deepclean_demo"),
        # stillwater and cloudbreak are independent of each other
        ("hermes.stillwater.throttle", "import hermes.cloudbreak", "hermes.stillwater.throttle -> hermes.cloudbreak"),
        # torch in quiver's torch-free core, directly or through a module it imports
        ("hermes.quiver.platform", "import torch", "hermes.quiver.platform -> torch"),
        ("hermes.quiver.streaming.specs", "import torch", "hermes.quiver.streaming.specs -> torch"),
        ("hermes.quiver._types", "import torch", "hermes.quiver._types -> torch"),
    ],
)  # fmt: skip
def test_a_violating_import_fails_lint_and_is_named(
    tree: Path, module: str, statement: str, expected: str
) -> None:
    add_import(tree, module, statement)
    result = lint_imports(tree, tree / "src")
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout
    assert expected in result.stdout, result.stdout[-3000:]
