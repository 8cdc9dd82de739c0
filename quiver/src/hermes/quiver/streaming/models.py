"""Write snapshotter and online-averager models into a model folder.

:func:`write_snapshotter` and :func:`write_online_averager` export the torch modules with
implicit state into ``<directory>/<version>/`` plus ``config.pbtxt`` and return a
description of what was written: the Triton tensor names, the shapes, and the start-up
numbers (:attr:`SnapshotterModel.zero_state_updates`, :attr:`OnlineAveragerModel.delay`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tritonclient.grpc import model_config_pb2 as pb

from hermes.quiver.exceptions import StreamingConfigError
from hermes.quiver.streaming.onnx_graphs import online_averager_graph, snapshotter_graph
from hermes.quiver.streaming.specs import (
    OnlineAveragerSpec,
    SequenceOptions,
    SnapshotterSpec,
    StreamingPlatform,
)
from hermes.quiver.streaming.stateful_model import (
    StateTensor,
    StreamTensor,
    export_streaming_model,
    triton_names,
)

__all__ = ["OnlineAveragerModel", "SnapshotterModel", "write_online_averager", "write_snapshotter"]


@dataclass(frozen=True, kw_only=True)
class SnapshotterModel:
    """A snapshotter written to a model folder.

    Attributes:
        name: the model name.
        spec: the group it serves.
        platform: how it was exported.
        sequence: its scheduling.
        config: the config written.
        update_input: the Triton name of the update input.
        outputs: ``{streaming tensor name: Triton output name}``, in channel order.
        initial_state: True when the user supplied the initial history.
    """

    name: str
    spec: SnapshotterSpec
    platform: StreamingPlatform
    sequence: SequenceOptions
    config: pb.ModelConfig
    update_input: str
    outputs: dict[str, str]
    initial_state: bool

    @property
    def zero_state_updates(self) -> int:
        """Updates at a sequence start whose windows reach into the zero initial state (0 with a history)."""
        return 0 if self.initial_state else self.spec.zero_state_updates

    @property
    def zero_state_windows(self) -> int:
        """Windows at a sequence start that contain zero initial-state samples."""
        return 0 if self.initial_state else self.spec.zero_state_windows


@dataclass(frozen=True, kw_only=True)
class OnlineAveragerModel:
    """An online averager written to a model folder.

    Attributes:
        name: the model name.
        spec: its shapes and ``N``.
        platform: how it was exported.
        sequence: its scheduling.
        config: the config written.
        input: the Triton name of the prediction input.
        output: the Triton name of the continuous output.
    """

    name: str
    spec: OnlineAveragerSpec
    platform: StreamingPlatform
    sequence: SequenceOptions
    config: pb.ModelConfig
    input: str
    output: str

    @property
    def delay(self) -> int:
        """Samples by which each output trails the newest input sample: ``(N - 1)·s``."""
        return self.spec.delay

    @property
    def zero_state_updates(self) -> int:
        """Updates at a sequence start whose output covers samples before the stream start."""
        return self.spec.zero_state_updates


def _initial(
    value: npt.ArrayLike | None, per_sequence: tuple[int, ...], model_shape: tuple[int, ...], what: str
) -> np.ndarray | None:
    if value is None:
        return None
    array = np.asarray(value, dtype=np.float32)
    if array.shape != per_sequence:
        raise StreamingConfigError(
            f"{what} has shape {list(array.shape)}, expected {list(per_sequence)} (one sequence's state)"
        )
    if not np.all(np.isfinite(array)):
        raise StreamingConfigError(f"{what} holds NaN or infinite values")
    return array.reshape(model_shape)


def write_snapshotter(
    directory: str | Path,
    spec: SnapshotterSpec,
    *,
    platform: StreamingPlatform | str = StreamingPlatform.ONNX,
    sequence: SequenceOptions | None = None,
    initial_state: npt.ArrayLike | None = None,
    version: int = 1,
) -> SnapshotterModel:
    """Export a :class:`~hermes.quiver.streaming.Snapshotter` for ``spec`` into ``directory``.

    Args:
        directory: the model folder (its name is the model name).
        spec: the streaming group.
        platform: ONNX (default) or TorchScript.
        sequence: scheduling (idle timeout, instances, sequences per instance).
        initial_state: ``(C, K)`` samples that precede every sequence (the history), written
            as the state's ``data_file``; zeros if None.
        version: the version folder.
    """
    sequence = sequence or SequenceOptions()
    platform = StreamingPlatform.parse(platform)
    batched = sequence.batched
    lead: tuple[int, ...] = () if batched else (1,)
    inputs = [StreamTensor(name=spec.update_name, shape=lead + spec.update_shape[1:])]
    outputs = [StreamTensor(name=t.name, shape=spec.output_shape(t)) for t in spec.tensors]
    state_shape = lead + spec.state_shape
    history = _initial(initial_state, spec.state_shape, state_shape, f"initial state of {spec.update_name!r}")
    states = [StateTensor(name=f"{spec.update_name}_snapshot", shape=state_shape, initial=history)]
    names = triton_names(platform, inputs, outputs, states)
    if platform is StreamingPlatform.ONNX:
        module: Any = snapshotter_graph(
            spec, batched=batched, update=names.inputs[0], state_in=names.state_inputs[0], outputs=names.outputs,
            state_out=names.state_outputs[0],
        )  # fmt: skip
    else:
        from hermes.quiver.streaming.snapshotter import Snapshotter

        module = Snapshotter(spec, batched=batched)
    config = export_streaming_model(
        module, directory, platform=platform, inputs=inputs, outputs=outputs, states=states, sequence=sequence,
        version=version,
    )  # fmt: skip
    return SnapshotterModel(
        name=Path(directory).name, spec=spec, platform=platform, sequence=sequence, config=config,
        update_input=names.inputs[0], outputs=dict(zip([t.name for t in spec.tensors], names.outputs, strict=True)),
        initial_state=history is not None,
    )  # fmt: skip


def write_online_averager(
    directory: str | Path,
    spec: OnlineAveragerSpec,
    *,
    platform: StreamingPlatform | str = StreamingPlatform.ONNX,
    sequence: SequenceOptions | None = None,
    initial_state: npt.ArrayLike | None = None,
    version: int = 1,
) -> OnlineAveragerModel:
    """Export an :class:`~hermes.quiver.streaming.OnlineAverager` for ``spec`` into ``directory``.

    Args:
        directory: the model folder (its name is the model name).
        spec: the averager's shapes and ``N``.
        platform: ONNX (default) or TorchScript.
        sequence: scheduling.
        initial_state: ``([C,] (N - 1)·s)`` pending sums to start from (N times the average
            of the blocks before the stream start, if you know it); zeros if None.
        version: the version folder.
    """
    sequence = sequence or SequenceOptions()
    platform = StreamingPlatform.parse(platform)
    batched = sequence.batched
    lead: tuple[int, ...] = () if batched else (1,)
    inputs = [StreamTensor(name=spec.input_name, shape=spec.input_shape)]
    outputs = [StreamTensor(name=spec.output_name, shape=lead + spec.output_shape[1:])]
    state_shape = lead + spec.state_shape
    pending = _initial(initial_state, spec.state_shape, state_shape, f"initial state of {spec.output_name!r}")
    states = [StateTensor(name=f"{spec.output_name}_average", shape=state_shape, initial=pending)]
    names = triton_names(platform, inputs, outputs, states)
    if platform is StreamingPlatform.ONNX:
        module: Any = online_averager_graph(
            spec, batched=batched, predictions=names.inputs[0], state_in=names.state_inputs[0],
            output=names.outputs[0], state_out=names.state_outputs[0],
        )  # fmt: skip
    else:
        from hermes.quiver.streaming.online_averager import OnlineAverager

        module = OnlineAverager(spec, batched=batched)
    config = export_streaming_model(
        module, directory, platform=platform, inputs=inputs, outputs=outputs, states=states, sequence=sequence,
        version=version,
    )  # fmt: skip
    return OnlineAveragerModel(
        name=Path(directory).name, spec=spec, platform=platform, sequence=sequence, config=config,
        input=names.inputs[0], output=names.outputs[0],
    )  # fmt: skip
