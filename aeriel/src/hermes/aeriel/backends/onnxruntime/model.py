"""hermes' portable Triton backend ``onnxruntime``: serves ``onnxruntime_onnx`` models on CPU.

Triton loads this file as ``<backend-dir>/onnxruntime/model.py`` through its python
backend; the implementation lives in the installed ``hermes.aeriel.backends`` package.
"""

from __future__ import annotations

from pathlib import Path

from hermes.aeriel.backends._config import BackendConfig
from hermes.aeriel.backends._executor import RunFunction
from hermes.aeriel.backends._onnxruntime import OnnxRuntimeModel
from hermes.aeriel.backends._triton import PortableModel


class TritonPythonModel(PortableModel):
    """A standard ONNX model folder (``<version>/model.onnx``) run with onnxruntime on CPU."""

    framework = "onnxruntime"
    default_filename = "model.onnx"

    def load(self, path: Path, config: BackendConfig) -> RunFunction:
        return OnnxRuntimeModel(path, config)
