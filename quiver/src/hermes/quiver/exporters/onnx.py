"""ONNX export (``onnxruntime_onnx``, ``model.onnx``), with the opset checked after export.

torch 2.13 has two exporters: ``dynamo=True`` (torch.export based, needs onnxscript, the
default here) and the legacy TorchScript-based one. Asking the dynamo exporter for an opset
below 18 can silently write another opset, so the written file's ``opset_import`` is compared
with the requested opset and a mismatch fails the export. Batched models get a dynamic
batch axis named ``batch``. The file passes ``onnx.checker.check_model(full_check=True)``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hermes.quiver._deps import require
from hermes.quiver.exceptions import ExportError
from hermes.quiver.exporters._torch_utils import (
    check_tracer_warning_policy,
    quiet_torch_deprecations,
    torch,
    watch_tracer_warnings,
)
from hermes.quiver.exporters.base import Exporter, ExportSpec, Runner
from hermes.quiver.platform import Platform

__all__ = ["DEFAULT_OPSET", "OnnxExporter", "check_onnx_file"]

logger = logging.getLogger("hermes.quiver.exporters.onnx")

DEFAULT_OPSET = 18
"""The opset written unless asked otherwise (the lowest the dynamo exporter writes reliably)."""


def check_onnx_file(path: Path, *, opset: int, spec: ExportSpec) -> None:
    """Check a written ONNX file: ``onnx.checker`` full check, the opset, the I/O names and
    the dynamic batch axis.

    Raises:
        ExportError: naming the file and what is wrong.
    """
    onnx = require("onnx", "ONNX export")
    model = onnx.load(str(path))
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path.name}: onnx.checker rejects the exported model: {exc}") from exc
    written = {entry.domain: entry.version for entry in model.opset_import}
    got = written.get("", written.get("ai.onnx"))
    if got != opset:
        raise ExportError(
            f"{path.name}: asked for ONNX opset {opset} but torch wrote opset {got}; the dynamo exporter "
            "cannot write opsets below 18 (use opset>=18, or exporter='legacy' for a lower opset)"
        )
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if inputs != list(spec.input_names) or outputs != list(spec.output_names):
        raise ExportError(
            f"{path.name}: tensor names {inputs} -> {outputs} differ from the config's "
            f"{list(spec.input_names)} -> {list(spec.output_names)}"
        )
    if spec.max_batch_size > 1:
        for tensor in list(model.graph.input) + list(model.graph.output):
            dim0 = tensor.type.tensor_type.shape.dim[0]
            if dim0.HasField("dim_value"):
                raise ExportError(
                    f"{path.name}: {tensor.name} has a fixed batch axis of {dim0.dim_value}; the model's "
                    "batch size depends on its input (e.g. a reshape with a literal batch size)"
                )


class OnnxExporter(Exporter):
    """Export with ``torch.onnx.export``.

    Options:
        exporter: ``"dynamo"`` (default) or ``"legacy"``.
        opset: the ONNX opset to write (default :data:`DEFAULT_OPSET`); checked after export.
        optimize: run the dynamo exporter's graph optimiser (default True).
        tracer_warnings: ``"error"`` (default: a ``TracerWarning`` raised while tracing —
            the legacy exporter, or a dynamo fallback to tracing — fails the export with the
            warning and its source line) or ``"accept"``.
    """

    platform = Platform.ONNX
    options = ("exporter", "opset", "optimize", "tracer_warnings")

    def __init__(
        self,
        *,
        exporter: str = "dynamo",
        opset: int = DEFAULT_OPSET,
        optimize: bool = True,
        tracer_warnings: str = "error",
    ) -> None:
        super().__init__()
        if exporter not in ("dynamo", "legacy"):
            raise ExportError(f"ONNX exporter: {exporter!r} is not 'dynamo' or 'legacy'")
        if isinstance(opset, bool) or not isinstance(opset, int) or opset < 7:
            raise ExportError(f"ONNX opset: expected an integer >= 7, got {opset!r}")
        self.exporter = exporter
        self.opset = opset
        self.optimize = optimize
        self.tracer_warnings = check_tracer_warning_policy(tracer_warnings)

    def export(self, module: Any, example_inputs: tuple[Any, ...], spec: ExportSpec, directory: Path) -> None:
        t = torch()
        require("onnx", "ONNX export")
        path = directory / self.platform.filename
        dynamic = spec.max_batch_size > 1
        kwargs: dict[str, Any] = {
            "input_names": list(spec.input_names),
            "output_names": list(spec.output_names),
            "opset_version": self.opset,
        }
        if self.exporter == "dynamo":
            require("onnxscript", "ONNX export with the dynamo exporter")
            if dynamic:
                batch = t.export.Dim("batch", min=1, max=spec.max_batch_size)
                kwargs["dynamic_shapes"] = tuple({0: batch} for _ in spec.input_names)
            kwargs["optimize"] = self.optimize
            kwargs["verbose"] = False
            with (
                quiet_torch_deprecations(),
                watch_tracer_warnings(self.tracer_warnings, f"{spec.model_name}: torch.onnx.export"),
            ):
                program = t.onnx.export(module, example_inputs, dynamo=True, **kwargs)
            if program is None:  # pragma: no cover - torch returns the program with dynamo=True
                raise ExportError("torch.onnx.export returned nothing")
            program.save(str(path))
        else:
            if dynamic:
                kwargs["dynamic_axes"] = {
                    name: {0: "batch"} for name in (*spec.input_names, *spec.output_names)
                }
            with (
                quiet_torch_deprecations(),
                watch_tracer_warnings(self.tracer_warnings, f"{spec.model_name}: torch.onnx.export (legacy)"),
            ):
                t.onnx.export(module, example_inputs, str(path), dynamo=False, **kwargs)
        check_onnx_file(path, opset=self.opset, spec=spec)
        logger.debug("wrote %s (opset %d, %s exporter)", path, self.opset, self.exporter)

    def runner(self, directory: Path, spec: ExportSpec) -> Runner:
        ort = require("onnxruntime", "verifying an ONNX export")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(
            str(directory / self.platform.filename), sess_options=options, providers=["CPUExecutionProvider"]
        )

        def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            feed = {name: np.ascontiguousarray(inputs[name]) for name in spec.input_names}
            outputs = session.run(list(spec.output_names), feed)
            return dict(zip(spec.output_names, outputs, strict=True))

        return run
