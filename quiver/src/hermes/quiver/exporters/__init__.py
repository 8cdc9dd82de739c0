"""Exporters from ``torch.nn.Module`` to Triton platforms.

torch, onnx and tensorrt are imported only when an exporter runs.
"""

from __future__ import annotations

from typing import Any

from hermes.quiver.exceptions import ExportError
from hermes.quiver.exporters.base import Exporter, ExportSpec, Runner
from hermes.quiver.platform import Platform

__all__ = ["ExportSpec", "Exporter", "Runner", "get_exporter"]


# The predecessor's (ml4gw-hermes) exporter keyword arguments and today's names.
_RENAMED = {"opset_version": "opset", "use_fp16": "fp16"}


def get_exporter(platform: Platform | str, **options: Any) -> Exporter:
    """The exporter for ``platform``, built with ``options``.

    Raises:
        ExportError: no exporter writes that platform, or an option is unknown.
    """
    platform = Platform(platform)
    cls: type[Exporter]
    if platform is Platform.ONNX:
        from hermes.quiver.exporters.onnx import OnnxExporter as cls
    elif platform is Platform.TORCHSCRIPT:
        from hermes.quiver.exporters.torchscript import TorchScriptExporter as cls
    elif platform is Platform.PYTHON:
        from hermes.quiver.exporters.python_backend import PythonBackendExporter as cls
    elif platform is Platform.TENSORRT:
        from hermes.quiver.exporters.tensorrt import TensorRTExporter as cls
    elif platform is Platform.TORCH_AOTI:
        from hermes.quiver.exporters.aoti import AotiExporter as cls
    else:
        raise ExportError(
            f"no exporter writes the {platform.value} platform; ensembles are built with EnsembleModel"
        )
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        renamed = [f"{old}= is now {_RENAMED[old]}=" for old in unknown if old in _RENAMED]
        hint = f" (ml4gw-hermes names: {'; '.join(renamed)})" if renamed else ""
        raise ExportError(
            f"{cls.__name__}: unknown option(s) {unknown}; accepted are {sorted(cls.options)}{hint}"
        )
    return cls(**options)
