"""The bridge between Triton's python backend and :class:`BatchExecutor`.

Runs inside the python backend's stub process, where ``triton_python_backend_utils`` is
importable. A backend's ``model.py`` subclasses :class:`PortableModel`, names its
framework and the default model file, and implements :meth:`PortableModel.load`.

Per request it reads the configured inputs, the sequence controls (the control inputs of
``sequence_batching.control_input`` when configured, else ``request.flags()``: 1 = start,
2 = end) and ``request.correlation_id()``; it answers every request, with its outputs
cast to the configured types or with a ``TritonError`` naming what went wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from hermes.aeriel.backends._config import BackendConfig
from hermes.aeriel.backends._executor import BatchExecutor, Request, RunFunction
from hermes.aeriel.exceptions import BackendConfigError, BackendRequestError
from hermes.quiver.config import ControlKind, DataType, TensorSpec

__all__ = ["PortableModel"]

logger = logging.getLogger("hermes.aeriel.backends")

_FLAG_START = 1
_FLAG_END = 2


class _TritonLogHandler(logging.Handler):
    """Forwards ``hermes.aeriel.backends`` records into the server log."""

    def __init__(self, pb_utils: Any, model: str):
        super().__init__(level=logging.INFO)
        self._logger = pb_utils.Logger
        self._model = model

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = f"hermes backend, model '{self._model}': {record.getMessage()}"
            if record.levelno >= logging.ERROR:
                self._logger.log_error(message)
            elif record.levelno >= logging.WARNING:
                self._logger.log_warn(message)
            else:
                self._logger.log_info(message)
        except Exception:  # pragma: no cover - logging must never break inference
            self.handleError(record)


class PortableModel:
    """Base of the portable backends' ``TritonPythonModel`` classes."""

    framework: ClassVar[str] = "framework"
    default_filename: ClassVar[str] = "model"

    def load(self, path: Path, config: BackendConfig) -> RunFunction:
        """Load the model file and return its call, ``{input: array} -> {output: array}``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ Triton API
    def initialize(self, args: Mapping[str, str]) -> None:
        """Parse the config, load the model file, set up batching and state.

        Raises:
            BackendConfigError: the config cannot be served, or the model file is missing
                or fails to load (names the model and the file).
        """
        import triton_python_backend_utils as pb_utils

        self._pb = pb_utils
        name = args.get("model_name", "?")
        handler = _TritonLogHandler(pb_utils, name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        self.config = config = BackendConfig.from_json(args["model_config"])
        model_dir = Path(args["model_repository"])
        path = config.model_path(model_dir, args["model_version"], self.default_filename)
        if not path.is_file():
            raise BackendConfigError(
                f"model {name!r}: model file {path} not found (the {self.framework} backend reads "
                f"<model>/<version>/{config.default_model_filename or self.default_filename})"
            )
        try:
            run = self.load(path, config)
        except BackendConfigError:
            raise
        except Exception as exc:
            raise BackendConfigError(
                f"model {name!r}: cannot load {self.framework} model file {path}: {type(exc).__name__}: {exc}"
            ) from exc
        self.executor = BatchExecutor(config, run, model_dir=model_dir)
        state_inputs = {s.input_name for s in config.states}
        controls = config.sequence.controls if config.sequence is not None else {}
        self._inputs: list[TensorSpec] = [t for t in config.inputs if t.name not in state_inputs]
        self._outputs = {t.name: t for t in config.outputs}
        # per-request work kept out of execute(): the dtype of every output, resolved once
        self._out_dtypes = {t.name: t.dtype.numpy for t in config.outputs}
        self._bf16_outputs = {t.name for t in config.outputs if t.dtype is DataType.BF16}
        self._bf16_inputs = {t.name for t in config.inputs if t.dtype is DataType.BF16}
        self._start = controls.get(ControlKind.START)
        self._end = controls.get(ControlKind.END)
        self._ready = controls.get(ControlKind.READY)
        self._sequence = config.sequence is not None
        self._bf16 = bool(self._bf16_inputs or self._bf16_outputs)
        logger.info(
            "%s backend loaded %s (max_batch_size %d, %d implicit state(s), %s thread(s) per call)",
            self.framework,
            path,
            config.max_batch_size,
            len(config.states),
            getattr(run, "threads", 0) or "the framework's default",
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        """Answer every request: outputs, or an error response naming the problem."""
        pb = self._pb
        parsed: list[Request | BackendRequestError] = []
        for request in requests:
            try:
                parsed.append(self._parse(request))
            except BackendRequestError as exc:
                parsed.append(exc)
        runnable = [p for p in parsed if isinstance(p, Request)]
        answers = iter(self.executor.execute(runnable))
        responses = []
        for item in parsed:
            result: dict[str, np.ndarray] | BackendRequestError = (
                item if isinstance(item, BackendRequestError) else next(answers)
            )
            if isinstance(result, BackendRequestError):
                responses.append(pb.InferenceResponse(output_tensors=[], error=pb.TritonError(str(result))))
                continue
            try:
                tensors = [self._tensor(name, array) for name, array in result.items()]
            except Exception as exc:
                error = pb.TritonError(f"model {self.config.name!r}: cannot return outputs: {exc}")
                responses.append(pb.InferenceResponse(output_tensors=[], error=error))
                continue
            responses.append(pb.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        """Drop every sequence's state."""
        self.executor = None  # type: ignore[assignment]

    # ------------------------------------------------------------------ helpers
    def _control(self, request: Any, control: Any) -> bool:
        tensor = self._pb.get_input_tensor_by_name(request, control.name)
        if tensor is None:
            return False
        return float(np.asarray(tensor.as_numpy()).reshape(-1)[0]) == control.true_value

    def _parse(self, request: Any) -> Request:
        pb = self._pb
        inputs = {}
        for spec in self._inputs:
            tensor = pb.get_input_tensor_by_name(request, spec.name)
            if tensor is None:
                raise BackendRequestError(
                    f"model {self.config.name!r}: the request has no input {spec.name!r}"
                )
            inputs[spec.name] = self._array(spec, tensor)
        if not self._sequence:
            return Request(inputs=inputs)
        flags = int(request.flags())
        start = self._control(request, self._start) if self._start else bool(flags & _FLAG_START)
        end = self._control(request, self._end) if self._end else bool(flags & _FLAG_END)
        cid = request.correlation_id()
        ready = self._control(request, self._ready) if self._ready else cid not in (0, "", None)
        return Request(inputs=inputs, correlation_id=cid, start=start, end=end, ready=ready)

    def _array(self, spec: TensorSpec, tensor: Any) -> np.ndarray:
        if spec.name in self._bf16_inputs:
            import torch

            return torch.from_dlpack(tensor.to_dlpack()).float().numpy()
        return tensor.as_numpy()

    def _tensor(self, name: str, array: np.ndarray) -> Any:
        if name in self._bf16_outputs:
            import torch

            return self._pb.Tensor.from_dlpack(
                name, torch.from_numpy(np.ascontiguousarray(array)).to(torch.bfloat16)
            )
        dtype = self._out_dtypes[name]
        if type(array) is not np.ndarray or array.dtype != dtype or not array.flags.c_contiguous:
            # only what the framework returned in another type or layout is converted (one copy)
            array = np.ascontiguousarray(np.asarray(array), dtype=dtype)
        return self._pb.Tensor(name, array)
