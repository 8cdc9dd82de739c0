"""TensorRT export (``tensorrt_plan``, ``model.plan``): torch -> ONNX -> TensorRT engine.

The ONNX file is written with :class:`~hermes.quiver.exporters.onnx.OnnxExporter`, parsed
with ``tensorrt.OnnxParser`` and built with FP16/INT8 flags and one optimization profile per
input covering the configured batch range (min 1, opt = max = ``max_batch_size``). The
TensorRT version that built the plan is recorded in the config's ``parameters``
(``tensorrt_version``): Triton's TensorRT must match it exactly. Needs ``tensorrt``
(``hermes-quiver[tensorrt]``) and an NVIDIA GPU; without them a clear error says what is missing.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hermes.quiver.exceptions import ExportError, MissingDependencyError
from hermes.quiver.exporters._torch_utils import torch
from hermes.quiver.exporters.base import Exporter, ExportSpec, Runner
from hermes.quiver.exporters.onnx import DEFAULT_OPSET, OnnxExporter
from hermes.quiver.platform import Platform

__all__ = ["TensorRTExporter", "optimization_profiles", "tensorrt_available"]

logger = logging.getLogger("hermes.quiver.exporters.tensorrt")


def tensorrt_available() -> str | None:
    """None when TensorRT export can run here, else the reason it cannot."""
    if importlib.util.find_spec("tensorrt") is None:
        return 'the tensorrt package is not installed: pip install "hermes-quiver[tensorrt]"'
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    t = torch()
    if not t.cuda.is_available():
        return "no CUDA GPU is visible (TensorRT builds and runs engines on an NVIDIA GPU)"
    return None


def optimization_profiles(
    shapes: Mapping[str, Sequence[int]], max_batch_size: int
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """``{input: (min, opt, max)}`` shapes for a batch range of 1..max_batch_size.

    Args:
        shapes: each input's config dims (without the batch axis when batched; no -1).
        max_batch_size: 0 for an unbatched model (min = opt = max = dims).
    """
    profiles = {}
    for name, dims in shapes.items():
        if any(d < 1 for d in dims):
            raise ExportError(
                f"TensorRT profile: input {name} has variable dims {list(dims)} beyond the batch axis"
            )
        if max_batch_size > 0:
            profiles[name] = ((1, *dims), (max_batch_size, *dims), (max_batch_size, *dims))
        else:
            profiles[name] = (tuple(dims), tuple(dims), tuple(dims))
    return profiles


class TensorRTExporter(Exporter):
    """Export to a TensorRT plan.

    Options:
        fp16: allow FP16 kernels.
        int8: allow INT8 kernels (needs a calibrated or quantised network).
        workspace_mib: the builder's workspace limit.
        opset: the intermediate ONNX opset.
    """

    platform = Platform.TENSORRT
    options = ("fp16", "int8", "workspace_mib", "opset")

    def __init__(
        self, *, fp16: bool = False, int8: bool = False, workspace_mib: int = 1024, opset: int = DEFAULT_OPSET
    ) -> None:
        super().__init__()
        self.fp16 = fp16
        self.int8 = int8
        self.workspace_mib = workspace_mib
        self.opset = opset
        reason = tensorrt_available()
        if reason is not None:
            raise MissingDependencyError(f"TensorRT export cannot run here: {reason}")

    def prepare_config(self, config: Any, spec: ExportSpec) -> None:
        import tensorrt as trt

        config.set_parameter("tensorrt_version", trt.__version__)
        self._dims = {t.name: t.dims for t in config.inputs}

    def export(self, module: Any, example_inputs: tuple[Any, ...], spec: ExportSpec, directory: Path) -> None:
        import tensorrt as trt

        with tempfile.TemporaryDirectory(prefix="hermes-trt-onnx-") as scratch:
            OnnxExporter(opset=self.opset).export(module, example_inputs, spec, Path(scratch))
            onnx_bytes = (Path(scratch) / "model.onnx").read_bytes()
        trt_logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(trt_logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, trt_logger)
        if not parser.parse(onnx_bytes):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ExportError(f"TensorRT cannot parse the ONNX export: {errors}")
        build = builder.create_builder_config()
        build.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mib << 20)
        if self.fp16:
            build.set_flag(trt.BuilderFlag.FP16)
        if self.int8:
            build.set_flag(trt.BuilderFlag.INT8)
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in optimization_profiles(self._dims, spec.max_batch_size).items():
            profile.set_shape(name, low, opt, high)
        build.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, build)
        if plan is None:
            raise ExportError("TensorRT could not build the engine; see the TensorRT log above")
        (directory / self.platform.filename).write_bytes(bytes(plan))

    def runner(self, directory: Path, spec: ExportSpec) -> Runner:
        import tensorrt as trt

        t = torch()
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine((directory / self.platform.filename).read_bytes())
        context = engine.create_execution_context()

        def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            stream = t.cuda.Stream()
            keep = []
            for name in spec.input_names:
                x = t.from_numpy(np.ascontiguousarray(inputs[name])).cuda()
                keep.append(x)
                context.set_input_shape(name, tuple(x.shape))
                context.set_tensor_address(name, x.data_ptr())
            outs = {}
            for name in spec.output_names:
                shape = tuple(context.get_tensor_shape(name))
                dtype = getattr(t, np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name)
                y = t.empty(shape, dtype=dtype, device="cuda")
                outs[name] = y
                context.set_tensor_address(name, y.data_ptr())
            context.execute_async_v3(stream.cuda_stream)
            stream.synchronize()
            return {name: y.cpu().numpy() for name, y in outs.items()}

        return run
