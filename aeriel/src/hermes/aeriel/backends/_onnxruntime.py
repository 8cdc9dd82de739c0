"""Run an ONNX model with onnxruntime on CPU, the way Triton's onnxruntime backend configures it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hermes.aeriel.backends._config import BackendConfig
from hermes.aeriel.exceptions import BackendConfigError
from hermes.quiver.config import DataType

__all__ = ["OnnxRuntimeModel"]

_ORT_TYPES: dict[str, Any] = {
    "tensor(bool)": np.bool_,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(float16)": np.float16,
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
}


class OnnxRuntimeModel:
    """An ``InferenceSession`` (CPUExecutionProvider) called with and returning arrays by name.

    Thread settings come from the config's ``parameters`` as in Triton's onnxruntime
    backend: ``intra_op_thread_count`` and ``inter_op_thread_count`` (0 = onnxruntime's
    default), ``execution_mode`` (0 sequential, 1 parallel); an unset (or 0)
    ``intra_op_thread_count`` on a model with several instances shares the CPUs among them
    (:meth:`BackendConfig.threads_per_call`) instead of giving each instance all of them.

    Args:
        path: the ``model.onnx`` file.
        config: the model configuration.

    Raises:
        BackendConfigError: an input or output named in the config is not in the model.
        ImportError: onnxruntime is not installed (names the extra).
    """

    def __init__(self, path: str | Path, config: BackendConfig):
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - installed with the local extra
            raise ImportError(
                'the portable onnxruntime backend needs onnxruntime: pip install "hermes-aeriel[local]"'
            ) from exc
        bf16 = [t.name for t in (*config.inputs, *config.outputs) if t.dtype is DataType.BF16]
        if bf16:
            raise BackendConfigError(
                f"model {config.name!r}: TYPE_BF16 tensors {bf16} are not supported by the portable onnxruntime "
                "backend (numpy has no bfloat16); use the pytorch backend or FP16/FP32"
            )
        options = ort.SessionOptions()
        self.threads = config.threads_per_call("intra_op_thread_count")  # 0: onnxruntime's default
        if self.threads > 0:
            options.intra_op_num_threads = self.threads
        inter = config.int_parameter("inter_op_thread_count", default=0)
        if inter > 0:
            options.inter_op_num_threads = inter
        if config.int_parameter("execution_mode", default=0) == 1:
            options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model_inputs = {i.name: i.type for i in self.session.get_inputs()}
        model_outputs = [o.name for o in self.session.get_outputs()]
        wanted_inputs = [t.name for t in config.inputs] + [s.input_name for s in config.states]
        wanted_outputs = [t.name for t in config.outputs] + [s.output_name for s in config.states]
        missing = [n for n in wanted_inputs if n not in model_inputs]
        if missing:
            raise BackendConfigError(
                f"model {config.name!r}: input(s) {missing} of the config are not in {path} "
                f"(its inputs: {sorted(model_inputs)})"
            )
        missing = [n for n in dict.fromkeys(wanted_outputs) if n not in model_outputs]
        if missing:
            raise BackendConfigError(
                f"model {config.name!r}: output(s) {missing} of the config are not in {path} "
                f"(its outputs: {model_outputs})"
            )
        self.input_dtypes = {name: _ORT_TYPES.get(model_inputs[name]) for name in wanted_inputs}
        self.output_names = list(dict.fromkeys(wanted_outputs))

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once: ``{input name: array} -> {output name: array}``."""
        ort_feeds = {}
        for name, dtype in self.input_dtypes.items():
            array = feeds[name]
            ort_feeds[name] = array if dtype is None else array.astype(dtype, copy=False)
        values = self.session.run(self.output_names, ort_feeds)
        return dict(zip(self.output_names, values, strict=True))
