"""The predecessor (ml4gw-hermes) ships a regular ``hermes/__init__.py``: our import names that cause."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("quiver", "aeriel", "stillwater", "cloudbreak")


def fake_site(tmp_path: Path) -> Path:
    """A site dir as pip leaves it with both installed: the predecessor's regular package, ours inside."""
    site = tmp_path / "site-packages"
    (site / "hermes").mkdir(parents=True)
    (site / "hermes" / "__init__.py").write_text('"""ml4gw-hermes"""\n__version__ = "0.2.2"\n')
    for name in SUBPACKAGES:
        (site / "hermes" / name).symlink_to(ROOT / name / "src" / "hermes" / name, target_is_directory=True)
    return site


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_a_regular_hermes_package_fails_our_import_with_a_message_naming_it(
    tmp_path: Path, name: str
) -> None:
    site = fake_site(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run(
        [sys.executable, "-c", f"import hermes.{name}"], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"ImportError: hermes.{name}: {site / 'hermes' / '__init__.py'} makes 'hermes' a regular package"
    )
    assert "ml4gw-hermes" in last and "pip uninstall ml4gw-hermes" in last and "docs/migration.md" in last


def test_without_the_regular_package_the_namespace_imports(tmp_path: Path) -> None:
    site = fake_site(tmp_path)
    (site / "hermes" / "__init__.py").unlink()
    env = dict(os.environ, PYTHONPATH=str(site))
    code = "import hermes, hermes.quiver; print(getattr(hermes, '__file__', None))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "None"
