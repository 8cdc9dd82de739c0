"""Lazy imports of optional dependencies, with an install hint when they are missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from hermes.quiver.exceptions import MissingDependencyError

_HINTS = {
    "torch": "install torch the way your site needs it, e.g. `pip install torch`",
    "onnx": 'pip install "hermes-quiver[onnx]"',
    "onnxruntime": 'pip install "hermes-quiver[onnx]"',
    "onnxscript": 'pip install "hermes-quiver[onnx]"',
    "tensorrt": 'pip install "hermes-quiver[tensorrt]" (needs an NVIDIA GPU and driver)',
    "gcsfs": 'pip install "hermes-quiver[gcs]"',
    "s3fs": 'pip install "hermes-quiver[s3]"',
}


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming what to install.

    Args:
        module: the importable name, e.g. ``"onnxruntime"``.
        purpose: what it is needed for, e.g. ``"ONNX export"`` (used in the message).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        hint = _HINTS.get(top, f"pip install {top}")
        raise MissingDependencyError(
            f"{purpose} needs the package {top!r}, which is not installed: {hint}"
        ) from exc
