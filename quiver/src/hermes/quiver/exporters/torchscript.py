"""TorchScript export (``pytorch_libtorch``, ``model.pt``) by tracing or scripting.

Tracing records the operations one example runs: data-dependent control flow is frozen to
the branch the example took. torch says so with a ``TracerWarning``, which fails the export
(``tracer_warnings="accept"`` to go on); verification on several input draws catches the
rest. Scripting compiles the Python code and keeps control flow, but supports a subset of
Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hermes.quiver.exceptions import ExportError
from hermes.quiver.exporters._torch_utils import (
    check_tracer_warning_policy,
    flatten_outputs,
    quiet_torch_deprecations,
    to_numpy,
    torch,
    watch_tracer_warnings,
)
from hermes.quiver.exporters.base import Exporter, ExportSpec, Runner
from hermes.quiver.platform import Platform

__all__ = ["TorchScriptExporter"]


class TorchScriptExporter(Exporter):
    """Export with ``torch.jit.trace`` (default) or ``torch.jit.script``.

    Options:
        method: ``"trace"`` or ``"script"``.
        tracer_warnings: ``"error"`` (default: a ``TracerWarning`` while tracing fails the
            export, quoting the warning and its source line) or ``"accept"``.

    Outputs are named ``OUTPUT__0``, ``OUTPUT__1``... by default (Triton's PyTorch
    convention); inputs take ``forward``'s argument names.
    """

    platform = Platform.TORCHSCRIPT
    options = ("method", "tracer_warnings")

    def __init__(self, *, method: str = "trace", tracer_warnings: str = "error") -> None:
        super().__init__()
        if method not in ("trace", "script"):
            raise ExportError(f"TorchScript method: {method!r} is not 'trace' or 'script'")
        self.method = method
        self.tracer_warnings = check_tracer_warning_policy(tracer_warnings)

    def default_output_name(self, index: int) -> str:
        return f"OUTPUT__{index}"

    def export(self, module: Any, example_inputs: tuple[Any, ...], spec: ExportSpec, directory: Path) -> None:
        t = torch()
        with quiet_torch_deprecations():
            if isinstance(module, t.jit.ScriptModule):
                scripted = module
            elif self.method == "script":
                scripted = t.jit.script(module)
            else:
                with watch_tracer_warnings(self.tracer_warnings, f"{spec.model_name}: torch.jit.trace"):
                    scripted = t.jit.trace(module, example_inputs, check_trace=False)
            t.jit.save(scripted, str(directory / self.platform.filename))

    def runner(self, directory: Path, spec: ExportSpec) -> Runner:
        t = torch()
        with quiet_torch_deprecations():
            loaded = t.jit.load(str(directory / self.platform.filename), map_location="cpu")
        loaded.eval()

        def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            args = [t.from_numpy(np.ascontiguousarray(inputs[name])) for name in spec.input_names]
            with t.inference_mode(), quiet_torch_deprecations():
                outputs, _ = flatten_outputs(loaded(*args))
            return {name: to_numpy(o) for name, o in zip(spec.output_names, outputs, strict=False)}

        return run
