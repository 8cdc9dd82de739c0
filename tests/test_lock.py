"""poetry.lock is the single source of truth; requirements/dev.lock is its exact export.

These fail when someone edits a pyproject without running `make lock`, or edits dev.lock by hand.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
POETRY = Path(sys.executable).with_name("poetry")
SUBPACKAGES = ["quiver", "aeriel", "stillwater", "cloudbreak"]
APPS = {"deepclean-demo": "apps/deepclean"}  # applications the dev environment installs by path


def _lock_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hermes_dev_lock", ROOT / "requirements" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock = _lock_module()


def poetry_check(root: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, POETRY_VIRTUALENVS_CREATE="false", NO_COLOR="1")
    return subprocess.run(
        [str(POETRY), "check", "--lock", "--no-interaction"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )


@pytest.fixture
def checkout_copy(tmp_path: Path) -> Path:
    """The files Poetry reads (pyprojects, READMEs, poetry.lock, dev.lock) in a scratch folder."""
    for name in ["pyproject.toml", "poetry.lock", "README.md", "requirements/dev.lock"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    for sub in SUBPACKAGES:
        (tmp_path / sub / "src" / "hermes" / sub).mkdir(parents=True)
        for name in ["pyproject.toml", "README.md"]:
            shutil.copy(ROOT / sub / name, tmp_path / sub / name)
    for folder in APPS.values():
        (tmp_path / folder / "src").mkdir(parents=True)
        for name in ["pyproject.toml", "README.md"]:
            shutil.copy(ROOT / folder / name, tmp_path / folder / name)
    return tmp_path


def test_poetry_lock_agrees_with_the_root_pyproject() -> None:
    result = poetry_check(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dev_lock_is_the_export_of_poetry_lock_and_matches_every_pyproject() -> None:
    assert lock.recorded_fingerprint() == lock.fingerprint(), (
        "a pyproject's dependencies changed since the last `make lock`: run `make lock`"
    )
    assert (ROOT / "requirements" / "dev.lock").read_text() == lock.exported(), (
        "requirements/dev.lock is not the export of poetry.lock: run `make lock`"
    )


def test_a_dependency_added_to_the_demo_app_is_caught(checkout_copy: Path) -> None:
    pyproject = checkout_copy / "apps" / "deepclean" / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"rich>=13",', '"rich>=13",\n    "httpx>=0.27",'))
    assert "httpx" in pyproject.read_text()
    assert lock.fingerprint(checkout_copy) != lock.fingerprint(ROOT)


def test_a_dependency_added_to_a_subpackage_is_caught(checkout_copy: Path) -> None:
    pyproject = checkout_copy / "aeriel" / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('"typer>=0.12",', '"typer>=0.12",\n    "httpx>=0.27",')
    )
    assert lock.recorded_fingerprint(checkout_copy) == lock.fingerprint(ROOT)
    assert lock.fingerprint(checkout_copy) != lock.fingerprint(ROOT)


def test_a_root_dev_dependency_added_without_relocking_fails_poetry_check(checkout_copy: Path) -> None:
    assert poetry_check(checkout_copy).returncode == 0
    pyproject = checkout_copy / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('    "pytest>=8",', '    "pytest>=8",\n    "httpx>=0.27",')
    )
    result = poetry_check(checkout_copy)
    assert result.returncode == 1
    assert "pyproject.toml changed significantly since poetry.lock was last generated" in (
        result.stdout + result.stderr
    )


def test_lock_keeps_torch_and_cuda_wheels_out_and_numpy_below_2_and_names_no_index() -> None:
    packages = {p["name"]: p for p in tomllib.loads((ROOT / "poetry.lock").read_text())["package"]}
    assert "torch" not in packages
    assert [n for n in packages if n.startswith("nvidia-")] == ["nvidia-pytriton"]
    assert packages["numpy"]["version"].startswith("1."), "numpy must stay below 2 where the server runs"
    sources = {n: p["source"] for n, p in packages.items() if "source" in p}
    expected = {f"hermes-{s}": {"type": "directory", "url": s} for s in SUBPACKAGES}
    expected |= {name: {"type": "directory", "url": folder} for name, folder in APPS.items()}
    assert sources == expected
