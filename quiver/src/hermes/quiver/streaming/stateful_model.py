"""Write a stateful streaming module as a Triton model with implicit state.

A streaming module has ``forward(*inputs, *states) -> (*outputs, *new_states)``. This module
exports it (ONNX or TorchScript) into ``<model>/<version>/`` and writes a ``config.pbtxt``
whose ``sequence_batching.state`` makes Triton (or hermes' portable backends) feed each
``new_state`` back as ``state`` on the sequence's next request:

* direct strategy (one sequence per instance): ``max_batch_size: 0``, full shapes;
* oldest strategy (several sequences per instance): ``max_batch_size`` = sequences per
  instance, dims without the batch axis, states stacked along it.

Initial states are zeros (``zero_data``) unless an array is given, which is written to
``<model>/initial_state/<state>.bin`` (raw, row-major) and named by ``data_file``.

TorchScript models use Triton's ``INPUT__n``/``OUTPUT__n`` names for every tensor, state
tensors taking the indices after the regular ones.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from hermes.quiver._deps import require
from hermes.quiver.exceptions import ExportError, StreamingConfigError
from hermes.quiver.streaming.specs import SequenceOptions, StreamingPlatform

if TYPE_CHECKING:
    import torch

__all__ = ["StateTensor", "StreamTensor", "export_streaming_model", "streaming_model_config"]

logger = logging.getLogger("hermes.quiver.streaming")

_ONNX_OPSET = 18
_KINDS = {"auto": pb.ModelInstanceGroup.KIND_AUTO, "cpu": pb.ModelInstanceGroup.KIND_CPU,
          "gpu": pb.ModelInstanceGroup.KIND_GPU}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class StreamTensor:
    """A regular input or output of a streaming model.

    Args:
        name: the tensor name seen by Triton and ensembles (ONNX name; TorchScript models
            use ``INPUT__n``/``OUTPUT__n`` instead, see :func:`triton_names`).
        shape: the per-sequence shape (for direct models, the full request shape).
    """

    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class StateTensor:
    """An implicit state of a streaming model.

    Args:
        name: the state's name (``initial_state.name``); its tensors are ``<name>__in`` and
            ``<name>__out`` for ONNX.
        shape: the per-sequence state shape.
        initial: the initial state (``shape``, float32), or None for zeros.
    """

    name: str
    shape: tuple[int, ...]
    initial: npt.NDArray[np.float32] | None = None


@dataclass(frozen=True, kw_only=True)
class _Names:
    inputs: list[str]
    outputs: list[str]
    state_inputs: list[str]
    state_outputs: list[str]


def triton_names(
    platform: StreamingPlatform, inputs: Sequence[StreamTensor], outputs: Sequence[StreamTensor],
    states: Sequence[StateTensor],
) -> _Names:  # fmt: skip
    """The Triton tensor names of a streaming model on ``platform``."""
    if platform is StreamingPlatform.TORCHSCRIPT:
        return _Names(
            inputs=[f"INPUT__{i}" for i in range(len(inputs))],
            outputs=[f"OUTPUT__{i}" for i in range(len(outputs))],
            state_inputs=[f"INPUT__{len(inputs) + i}" for i in range(len(states))],
            state_outputs=[f"OUTPUT__{len(outputs) + i}" for i in range(len(states))],
        )
    return _Names(
        inputs=[t.name for t in inputs],
        outputs=[t.name for t in outputs],
        state_inputs=[f"{s.name}__in" for s in states],
        state_outputs=[f"{s.name}__out" for s in states],
    )


def _check_unique(names: _Names) -> None:
    seen: set[str] = set()
    for name in names.inputs + names.state_inputs + names.outputs + names.state_outputs:
        if name in seen:
            raise StreamingConfigError(
                f"tensor name {name!r} is used twice in one streaming model: input, output and state "
                "names must be unique"
            )
        seen.add(name)


def streaming_model_config(
    name: str,
    *,
    platform: StreamingPlatform,
    inputs: Sequence[StreamTensor],
    outputs: Sequence[StreamTensor],
    states: Sequence[StateTensor],
    sequence: SequenceOptions,
) -> pb.ModelConfig:
    """The Triton config of a streaming model (a pure function of its arguments).

    Args:
        name: the model name.
        platform: ONNX or TorchScript.
        inputs: regular inputs, in ``forward`` order (per-sequence shapes).
        outputs: regular outputs, in ``forward`` order.
        states: implicit states, in ``forward`` order after the inputs/outputs.
        sequence: scheduling (idle timeout, instances, sequences per instance).
    """
    names = triton_names(platform, inputs, outputs, states)
    _check_unique(names)
    config = pb.ModelConfig(name=name, platform=platform.value, backend=platform.backend)
    batched = sequence.batched
    config.max_batch_size = sequence.sequences_per_instance if batched else 0
    for tensor, tensor_name in zip(inputs, names.inputs, strict=True):
        config.input.add(name=tensor_name, data_type=pb.TYPE_FP32, dims=list(tensor.shape))
    for tensor, tensor_name in zip(outputs, names.outputs, strict=True):
        config.output.add(name=tensor_name, data_type=pb.TYPE_FP32, dims=list(tensor.shape))
    batching = config.sequence_batching
    batching.max_sequence_idle_microseconds = sequence.idle_timeout_us
    if batched:
        batching.oldest.max_candidate_sequences = sequence.sequences_per_instance
        batching.oldest.max_queue_delay_microseconds = sequence.max_queue_delay_us
    else:
        batching.direct.SetInParent()
    for state, input_name, output_name in zip(states, names.state_inputs, names.state_outputs, strict=True):
        entry = batching.state.add(
            input_name=input_name, output_name=output_name, data_type=pb.TYPE_FP32, dims=list(state.shape)
        )
        initial = entry.initial_state.add(data_type=pb.TYPE_FP32, dims=list(state.shape), name=state.name)
        if state.initial is None:
            initial.zero_data = True
        else:
            initial.data_file = f"{state.name}.bin"
    config.instance_group.add(count=sequence.instances, kind=_KINDS[sequence.instance_kind])
    return config


def _export_onnx(
    module: torch.nn.Module, example: tuple[Any, ...], path: Path, names: _Names, batched: bool
) -> None:
    torch = require("torch", "exporting a streaming model")
    require("onnxscript", "ONNX export of a streaming model")
    onnx = require("onnx", "ONNX export of a streaming model")
    arg_names = names.inputs + names.state_inputs
    kwargs: dict[str, Any] = {}
    if batched:
        # positional args are named after forward's parameters in dynamic_shapes
        import inspect

        params = list(inspect.signature(module.forward).parameters)
        dim = torch.export.Dim("sequences", min=1, max=1 << 16)
        kwargs["dynamic_shapes"] = {p: {0: dim} for p in params}
    from hermes.quiver.exporters._torch_utils import quiet_torch_deprecations

    with quiet_torch_deprecations(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module, example, str(path), input_names=arg_names, output_names=names.outputs + names.state_outputs,
            opset_version=_ONNX_OPSET, dynamo=True, external_data=False, verbose=False, **kwargs,
        )  # fmt: skip
    model = onnx.load(str(path))
    opset = {o.domain: o.version for o in model.opset_import}.get("")
    if opset != _ONNX_OPSET:
        raise ExportError(f"the streaming model was written with ONNX opset {opset}, expected {_ONNX_OPSET}")
    got = [i.name for i in model.graph.input]
    if got != arg_names:
        raise ExportError(f"the exported ONNX graph has inputs {got}, expected {arg_names}")


def _save_onnx_graph(model: Any, path: Path, names: _Names) -> None:
    onnx = require("onnx", "writing an ONNX streaming model")
    got = [i.name for i in model.graph.input]
    expected = names.inputs + names.state_inputs
    if got != expected:
        raise ExportError(f"the ONNX graph has inputs {got}, expected {expected}")
    got = [o.name for o in model.graph.output]
    expected = names.outputs + names.state_outputs
    if got != expected:
        raise ExportError(f"the ONNX graph has outputs {got}, expected {expected}")
    onnx.save(model, str(path))


def _export_torchscript(module: torch.nn.Module, example: tuple[Any, ...], path: Path) -> None:
    torch = require("torch", "exporting a streaming model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(module, example, check_trace=False)
        traced.save(str(path))


def export_streaming_model(
    module: torch.nn.Module | Any,
    directory: str | Path,
    *,
    platform: StreamingPlatform | str = StreamingPlatform.ONNX,
    inputs: Sequence[StreamTensor],
    outputs: Sequence[StreamTensor],
    states: Sequence[StateTensor],
    sequence: SequenceOptions,
    version: int = 1,
) -> pb.ModelConfig:
    """Export ``module`` to ``directory/<version>/`` and write its stateful ``config.pbtxt``.

    Args:
        module: a torch module, ``forward(*inputs, *states) -> (*outputs, *new_states)``, or
            (ONNX only) a ready ``onnx.ModelProto`` with those inputs and outputs in that order.
        directory: the model folder (``<repository>/<name>``); its name is the model name.
        platform: ONNX (default) or TorchScript.
        inputs: those tensors, with per-sequence shapes.
        outputs: those tensors, with per-sequence shapes.
        states: those tensors, with per-sequence shapes.
        sequence: scheduling options.
        version: the version folder to write.

    Returns:
        The config written.

    Raises:
        StreamingConfigError: names collide or an initial state has the wrong shape.
        ExportError: the exporter failed (nothing is left in the version folder).
    """
    platform = StreamingPlatform.parse(platform)
    directory = Path(directory)
    prebuilt = hasattr(module, "graph") and hasattr(module, "opset_import")  # an onnx.ModelProto
    if prebuilt and platform is not StreamingPlatform.ONNX:
        raise StreamingConfigError(
            f"an ONNX graph cannot be exported as {platform.name}; pass a torch module"
        )
    config = streaming_model_config(
        directory.name, platform=platform, inputs=inputs, outputs=outputs, states=states, sequence=sequence
    )
    for state in states:
        if state.initial is not None and tuple(np.shape(state.initial)) != tuple(state.shape):
            raise StreamingConfigError(
                f"initial state {state.name!r} has shape {list(np.shape(state.initial))}, expected "
                f"{list(state.shape)}"
            )
    names = triton_names(platform, inputs, outputs, states)
    version_dir = directory / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    path = version_dir / platform.filename
    try:
        if prebuilt:
            _save_onnx_graph(module, path, names)
        else:
            torch = require("torch", "exporting a streaming model")
            lead = (2,) if sequence.batched else ()
            example = tuple(torch.zeros(lead + tuple(t.shape)) for t in inputs) + tuple(
                torch.zeros(lead + tuple(s.shape)) for s in states
            )
            module = module.eval()
            if platform is StreamingPlatform.ONNX:
                _export_onnx(module, example, path, names, sequence.batched)
            else:
                _export_torchscript(module, example, path)
    except Exception as exc:
        path.unlink(missing_ok=True)
        if isinstance(exc, ExportError):
            raise
        raise ExportError(
            f"exporting streaming model {directory.name!r} as {platform.name} failed: {exc}"
        ) from exc
    for state in states:
        if state.initial is not None:
            folder = directory / "initial_state"
            folder.mkdir(exist_ok=True)
            (folder / f"{state.name}.bin").write_bytes(
                np.ascontiguousarray(state.initial, dtype="<f4").tobytes()
            )
    (directory / "config.pbtxt").write_text(text_format.MessageToString(config))
    logger.info("wrote streaming model %s (%s, version %d)", directory.name, platform.name, version)
    return config
