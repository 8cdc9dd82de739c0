"""The monorepo's packaging rules: one PEP 420 namespace, independent versions, a clean lock."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("quiver", "aeriel", "stillwater", "cloudbreak")
# The layers (ARCHITECTURE.md): the hermes distributions each one may require, even through an extra.
BELOW = {
    "quiver": set(),
    "aeriel": {"hermes-quiver"},
    "stillwater": {"hermes-quiver", "hermes-aeriel"},
    "cloudbreak": {"hermes-quiver", "hermes-aeriel"},
}
DEMO = ROOT / "apps" / "deepclean"


def _requirements(project: dict[str, Any]) -> dict[str, list[str]]:
    """Requirement strings by where they come from: "dependencies" or "extra <name>"."""
    found = {"dependencies": list(project.get("dependencies", []))}
    for extra, reqs in project.get("optional-dependencies", {}).items():
        found[f"extra {extra}"] = list(reqs)
    return found


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=~!;]", requirement, maxsplit=1)[0]


def test_hermes_is_a_pep420_namespace() -> None:
    import hermes

    assert getattr(hermes, "__file__", None) is None
    locations = {Path(p).resolve() for p in hermes.__path__}
    for name in SUBPACKAGES:
        assert (ROOT / name / "src" / "hermes").resolve() in locations
        assert not (ROOT / name / "src" / "hermes" / "__init__.py").exists()


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_version_comes_from_the_subpackage_metadata(name: str) -> None:
    module = importlib.import_module(f"hermes.{name}")
    pyproject = tomllib.loads((ROOT / name / "pyproject.toml").read_text())
    assert module.__version__ == pyproject["project"]["version"]
    assert module.__version__ == importlib.metadata.version(f"hermes-{name}")
    assert sorted(module.__all__) == list(module.__all__), "__all__ is kept sorted"


def test_namespace_is_not_masked_by_another_distribution(tmp_path: Path) -> None:
    (tmp_path / "hermes").mkdir()
    (tmp_path / "hermes" / "othermod.py").write_text("VALUE = 1\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    code = "import hermes.othermod, hermes.quiver, hermes.aeriel; print(hermes.othermod.VALUE)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_siblings_are_required_by_version_range_never_by_path(name: str) -> None:
    pyproject = tomllib.loads((ROOT / name / "pyproject.toml").read_text())
    project = pyproject["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    for req in requirements:
        assert "file:" not in req and "@" not in req, f"{name}: {req!r} pins a path or URL"
        if req.startswith("hermes-"):
            assert any(op in req for op in (">=", "<", "~=", "==")), f"{name}: {req!r} needs a version range"
    assert "torch" not in {r.split("[")[0].split(">")[0].split("=")[0].strip() for r in requirements}
    assert pyproject["build-system"]["build-backend"] == "poetry.core.masonry.api"


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_a_library_requires_only_the_layers_below_it_even_through_an_extra(name: str) -> None:
    project = tomllib.loads((ROOT / name / "pyproject.toml").read_text())["project"]
    for where, requirements in _requirements(project).items():
        siblings = {
            _name(r) for r in requirements if _name(r).startswith("hermes-") or _name(r) == "deepclean-demo"
        }
        assert siblings <= BELOW[name], f"hermes-{name} {where} requires {sorted(siblings - BELOW[name])}"


def test_the_demo_is_an_application_outside_the_libraries() -> None:
    project = tomllib.loads((DEMO / "pyproject.toml").read_text())["project"]
    requirements = {_name(r): r for r in project["dependencies"]}
    assert {"hermes-quiver", "hermes-aeriel", "hermes-stillwater"} <= set(requirements)
    assert all(">=" in r and "<" in r for n, r in requirements.items() if n.startswith("hermes-"))
    assert "torch" not in requirements
    assert project["entry-points"]["hermes.cli"] == {"demo": "deepclean_demo._cli:demo"}
    for name in SUBPACKAGES:
        assert not (ROOT / name / "src" / "hermes" / name / "demo").exists()
    (entry,) = [ep for ep in importlib.metadata.entry_points(group="hermes.cli") if ep.name == "demo"]
    assert entry.dist is not None and entry.dist.name == "deepclean-demo"


def test_lock_pins_hashes_and_no_index_and_keeps_torch_and_cuda_out() -> None:
    lock = (ROOT / "requirements" / "dev.lock").read_text()
    pins = [
        line.split("==")[0].strip() for line in lock.splitlines() if "==" in line and not line.startswith(" ")
    ]
    assert len(pins) > 50
    assert "--hash=sha256:" in lock
    assert "index-url" not in lock and "find-links" not in lock
    assert "torch" not in pins
    assert [p for p in pins if p.startswith("nvidia-")] == ["nvidia-pytriton"]
    numpy = next(line for line in lock.splitlines() if line.startswith("numpy=="))
    assert int(numpy.split("==")[1].split(".")[0]) < 2, "numpy must stay below 2 where the server runs"
    for name in SUBPACKAGES:
        assert f"hermes-{name}" not in pins


@pytest.mark.slow
def test_each_subpackage_builds_a_wheel_with_only_its_own_files(tmp_path: Path) -> None:
    for name in SUBPACKAGES:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "build",
                "--no-isolation",
                "--wheel",
                "--outdir",
                str(tmp_path),
                str(ROOT / name),
            ],
            check=True,
            capture_output=True,
        )
        wheel = next(tmp_path.glob(f"hermes_{name}-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
            metadata = zf.read(next(n for n in names if n.endswith("METADATA"))).decode()
        assert "hermes/__init__.py" not in names
        assert f"hermes/{name}/__init__.py" in names
        assert f"hermes/{name}/py.typed" in names
        assert all(n.startswith((f"hermes/{name}/", f"hermes_{name}-")) for n in names), names
        assert "file://" not in metadata
