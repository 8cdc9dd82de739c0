"""torch.export + AOTInductor export (``torch_aoti``, ``model.pt2``) — opt-in.

Triton's PyTorch backend runs AOTInductor packages from Triton 26.03 (beta; its README
warns that batch sizes above 1 are not complete, so prefer ``max_batch_size: 0``). A
package is specific to the device and the torch version that built it: build it with the
serving container's torch, on the serving device type. Compiling takes tens of seconds
(it runs a C++ compiler).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hermes.quiver.exceptions import ExportError
from hermes.quiver.exporters._torch_utils import flatten_outputs, to_numpy, torch
from hermes.quiver.exporters.base import Exporter, ExportSpec, Runner
from hermes.quiver.platform import Platform

__all__ = ["AotiExporter"]

logger = logging.getLogger("hermes.quiver.exporters.aoti")


class AotiExporter(Exporter):
    """Export with ``torch.export.export`` and ``torch._inductor.aoti_compile_and_package``.

    Options:
        device: ``"cpu"`` (default) or ``"cuda"``: where the package runs.

    Outputs are named ``OUTPUT__0``... (Triton's ordinal convention for this platform).
    """

    platform = Platform.TORCH_AOTI
    options = ("device",)

    def __init__(self, *, device: str = "cpu") -> None:
        super().__init__()
        if device not in ("cpu", "cuda"):
            raise ExportError(f"torch_aoti device: {device!r} is not 'cpu' or 'cuda'")
        self.device = device

    def default_output_name(self, index: int) -> str:
        return f"OUTPUT__{index}"

    def prepare_config(self, config: Any, spec: ExportSpec) -> None:
        config.proto.backend = "pytorch"
        if spec.max_batch_size > 1:
            logger.warning(
                "%s: Triton's torch_aoti support is beta and documents batch size 1 only (max_batch_size=%d)",
                spec.model_name,
                spec.max_batch_size,
            )

    def export(self, module: Any, example_inputs: tuple[Any, ...], spec: ExportSpec, directory: Path) -> None:
        t = torch()
        if self.device == "cuda" and not t.cuda.is_available():
            raise ExportError("torch_aoti device 'cuda': no CUDA device is visible to torch here")
        inductor = t._inductor
        if not hasattr(inductor, "aoti_compile_and_package"):
            raise ExportError(f"torch {t.__version__} has no torch._inductor.aoti_compile_and_package")
        module = module.to(self.device)
        inputs = tuple(x.to(self.device) for x in example_inputs)
        dynamic = None
        if spec.max_batch_size > 1:
            batch = t.export.Dim("batch", min=1, max=spec.max_batch_size)
            dynamic = tuple({0: batch} for _ in inputs)
        program = t.export.export(module, inputs, dynamic_shapes=dynamic)
        inductor.aoti_compile_and_package(program, package_path=str(directory / self.platform.filename))

    def runner(self, directory: Path, spec: ExportSpec) -> Runner:
        t = torch()
        loaded = t._inductor.aoti_load_package(str(directory / self.platform.filename))

        def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            args = [t.from_numpy(np.ascontiguousarray(inputs[n])).to(self.device) for n in spec.input_names]
            with t.inference_mode():
                outputs, _ = flatten_outputs(loaded(*args))
            return {n: to_numpy(o) for n, o in zip(spec.output_names, outputs, strict=False)}

        return run
