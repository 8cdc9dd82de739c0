"""The package surface: lazy heavy imports, sorted public names."""

from __future__ import annotations

import subprocess
import sys

import hermes.quiver


def test_import_does_not_pull_torch_or_onnx() -> None:
    code = "import sys, hermes.quiver; print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'tensorrt') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"


def test_public_names_are_sorted_and_importable() -> None:
    assert hermes.quiver.__all__ == sorted(hermes.quiver.__all__)
    for name in hermes.quiver.__all__:
        assert getattr(hermes.quiver, name) is not None


def test_missing_extra_names_the_install_command() -> None:
    from hermes.quiver import MissingDependencyError
    from hermes.quiver._deps import require

    try:
        require("hermes_no_such_module.sub", "a test")
    except MissingDependencyError as exc:
        assert str(exc) == (
            "a test needs the package 'hermes_no_such_module', which is not installed: pip install hermes_no_such_module"
        )
        assert isinstance(exc, ImportError)
    else:  # pragma: no cover
        raise AssertionError("require did not raise")
