"""hermes' portable Triton backend ``pytorch``: serves ``pytorch_libtorch`` (TorchScript) models on CPU.

Triton loads this file as ``<backend-dir>/pytorch/model.py`` through its python backend;
the implementation lives in the installed ``hermes.aeriel.backends`` package.
"""

from __future__ import annotations

from pathlib import Path

from hermes.aeriel.backends._config import BackendConfig
from hermes.aeriel.backends._executor import RunFunction
from hermes.aeriel.backends._torchscript import TorchScriptModel
from hermes.aeriel.backends._triton import PortableModel


class TritonPythonModel(PortableModel):
    """A standard TorchScript model folder (``<version>/model.pt``) run with CPU torch."""

    framework = "pytorch"
    default_filename = "model.pt"

    def load(self, path: Path, config: BackendConfig) -> RunFunction:
        return TorchScriptModel(path, config)
