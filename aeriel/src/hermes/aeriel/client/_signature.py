"""What a model expects and returns, read from its Triton config: tensors, batching, streaming groups.

A *streaming group* is an ensemble input that feeds a stateful "snapshotter" step: the one a
quiver streaming record (:class:`~hermes.quiver.StreamInputRecord`) names, or, in ensembles
without records (hand-built or the predecessor's), a step whose config declares
``sequence_batching.state``. The snapshotter splits the update along its channel
axis (axis 1) into one output per downstream tensor; the group records, in channel order, each
of those outputs, the ensemble tensors they become and the ``model/input`` pairs that consume
them, with their channel counts. Any number of targets per group and any number of groups per
ensemble are supported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2 as pb

from hermes.quiver.config import DataType, StreamingRecords
from hermes.quiver.exceptions import StreamingRecordError, StreamingRecordVersionError

__all__ = ["ModelSignature", "StreamGroup", "StreamTarget", "TensorSpec", "read_signature"]

logger = logging.getLogger("hermes.aeriel.client")


@dataclass(frozen=True, kw_only=True)
class TensorSpec:
    """One input or output tensor as a request sees it (quiver's :class:`~hermes.quiver.TensorSpec`
    is the same tensor as the config declares it: ``dims`` without the batch axis).

    Attributes:
        name: tensor name.
        dtype: its Triton type (a :class:`~hermes.quiver.DataType`, equal to its name:
            ``spec.dtype == "FP32"``; ``spec.dtype.numpy`` is the numpy dtype).
        shape: full request shape including the batch axis when the model batches;
            ``-1`` marks a variable axis.
    """

    name: str
    dtype: DataType
    shape: tuple[int, ...]

    @property
    def fixed_size(self) -> int | None:
        """Bytes of one tensor when every axis is fixed, else None (BYTES: None)."""
        if self.dtype is DataType.BYTES or any(d < 0 for d in self.shape):
            return None
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.numpy.itemsize

    def describe(self) -> str:
        """``name DTYPE [d0, d1]`` with ``-1`` for variable axes."""
        return f"{self.name} {self.dtype.value} [{', '.join(str(d) for d in self.shape)}]"


@dataclass(frozen=True, kw_only=True)
class StreamTarget:
    """One downstream tensor fed by a snapshotter.

    Attributes:
        snapshot_output: the snapshotter's output name, e.g. ``a_snapshot``.
        tensor: the ensemble-internal tensor that output is mapped to.
        consumers: ``"model/input"`` for every ensemble step that reads ``tensor``.
        channels: how many channels (rows of axis 1 of the update) this target takes;
            a 2-D ``(B, K)`` window counts as one channel.
        shape: the snapshot output's full shape, ``(B, C, K)`` or ``(B, K)``.
    """

    snapshot_output: str
    tensor: str
    consumers: tuple[str, ...]
    channels: int
    shape: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class StreamGroup:
    """An ensemble input that feeds a stateful snapshotter, and what it feeds.

    Attributes:
        input: the ensemble input name (the update the client sends, ``(1, C, stride * B)``).
        snapshotter: the stateful step's model name.
        snapshotter_input: the snapshotter's own input name.
        targets: the downstream tensors in channel order; their channels add up to ``C``.
    """

    input: str
    snapshotter: str
    snapshotter_input: str
    targets: tuple[StreamTarget, ...]

    @property
    def channels(self) -> int:
        """Total channels of an update (the sum over targets)."""
        return sum(t.channels for t in self.targets)

    def aliases(self) -> dict[str, StreamTarget]:
        """Every name a caller may use for one target's part of an update."""
        names: dict[str, StreamTarget] = {}
        for target in self.targets:
            names[target.snapshot_output] = target
            names[target.tensor] = target
            for consumer in target.consumers:
                names[consumer] = target
        return names

    def describe(self) -> str:
        """A one-line summary naming the parts an update is made of."""
        parts = ", ".join(f"{'|'.join(t.consumers) or t.tensor} ({t.channels} ch)" for t in self.targets)
        return f"{self.input} -> {self.snapshotter}: {parts}"


@dataclass(frozen=True, kw_only=True)
class ModelSignature:
    """A model's request signature.

    Attributes:
        name: model name.
        version: the version asked for ("" = the server's choice).
        inputs: input tensors in config order.
        outputs: output tensors in config order.
        max_batch_size: Triton's ``max_batch_size`` (0 = the model does not batch).
        stateful: requests must belong to a sequence (the model, or an ensemble step, uses
            ``sequence_batching``).
        streams: the streaming groups of an ensemble.
        max_sequences: how many sequences the model serves at once: the smallest
            ``max_sequences`` of the streaming records quiver writes in its parameters
            (:class:`~hermes.quiver.StreamingRecords`); None when the model records none.
    """

    name: str
    version: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 0
    stateful: bool = False
    streams: tuple[StreamGroup, ...] = field(default=())
    max_sequences: int | None = None

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    @property
    def fixed_batch(self) -> int | None:
        """The batch every request must carry, when the model has one fixed leading axis.

        That is a model with ``max_batch_size: 0`` whose inputs all share a fixed first axis.
        """
        if self.max_batch_size > 0 or not self.inputs:
            return None
        firsts = {t.shape[0] if t.shape else -1 for t in self.inputs}
        if len(firsts) != 1:
            return None
        (first,) = firsts
        return first if first > 0 else None

    def describe(self) -> str:
        """The expected signature, as put in error messages."""
        ins = ", ".join(t.describe() for t in self.inputs)
        text = f"model '{self.name}' expects inputs: {ins}"
        if self.max_batch_size > 0:
            text += f" (batch axis up to {self.max_batch_size})"
        return text


def _tensors(entries: Any, batched: bool) -> tuple[TensorSpec, ...]:
    specs = []
    for entry in entries:
        dims = tuple(int(d) for d in entry.dims)
        if entry.HasField("reshape") and not dims:
            dims = ()
        shape = ((-1,) if batched else ()) + dims
        specs.append(TensorSpec(name=entry.name, dtype=DataType.from_proto(entry.data_type), shape=shape))
    return tuple(specs)


ConfigGetter = Callable[[str, str], Any]
"""``(model_name, version) -> model_config_pb2.ModelConfig``."""


def _snapshotter_steps(
    config: Any, configs: Mapping[str, Any], records: StreamingRecords
) -> list[tuple[str, Any]]:
    """``(ensemble input, step)`` of each snapshotter: as the records name them, else every
    stateful step an ensemble input feeds (ensembles quiver did not build)."""
    steps = list(config.ensemble_scheduling.step)
    if records.inputs:
        by_model = {step.model_name: step for step in steps}
        return [(r.name, by_model[r.model]) for r in records.inputs if r.model in by_model]
    found = []
    for ens_input in config.input:
        for step in steps:
            sub = configs[step.model_name]
            stateful = sub.HasField("sequence_batching") and len(sub.sequence_batching.state) > 0
            if stateful and ens_input.name in step.input_map.values():
                found.append((ens_input.name, step))
    return found


def _targets(step: Any, sub: Any, steps: list[Any]) -> tuple[StreamTarget, ...]:
    """What one snapshotter feeds, in channel order (its outputs in config order)."""
    sub_outputs = {t.name: t for t in _tensors(sub.output, sub.max_batch_size > 0)}
    targets = []
    for out in sub.output:
        tensor = step.output_map.get(out.name)
        if tensor is None:
            continue
        consumers = tuple(
            f"{other.model_name}/{key}"
            for other in steps
            for key, value in other.input_map.items()
            if value == tensor
        )
        shape = sub_outputs[out.name].shape
        channels = shape[1] if len(shape) >= 3 else 1
        targets.append(
            StreamTarget(
                snapshot_output=out.name,
                tensor=tensor,
                consumers=consumers,
                channels=int(channels),
                shape=shape,
            )
        )
    return tuple(targets)


def _stream_groups(
    config: Any, configs: Mapping[str, Any], records: StreamingRecords
) -> tuple[StreamGroup, ...]:
    steps = list(config.ensemble_scheduling.step)
    order = [t.name for t in config.input]
    groups = []
    for ens_input, step in _snapshotter_steps(config, configs, records):
        keys = [key for key, value in step.input_map.items() if value == ens_input]
        if not keys:
            continue
        groups.append(
            StreamGroup(
                input=ens_input,
                snapshotter=step.model_name,
                snapshotter_input=keys[0],
                targets=_targets(step, configs[step.model_name], steps),
            )
        )
    return tuple(sorted(groups, key=lambda g: order.index(g.input) if g.input in order else len(order)))


def _records(config: Any) -> StreamingRecords:
    """The streaming records of a config; malformed ones are logged and skipped, newer ones raise."""

    def skip(error: StreamingRecordError) -> None:
        if isinstance(error, StreamingRecordVersionError):
            raise error
        logger.warning("model '%s': %s; ignored", config.name, error)

    return StreamingRecords.from_parameters(config.parameters, on_error=skip)


def read_signature(
    name: str, version: str, config: pb.ModelConfig, step_configs: Mapping[str, pb.ModelConfig]
) -> ModelSignature:
    """Build a :class:`ModelSignature` from a model config and, for ensembles, its steps' configs.

    Args:
        name: model name.
        version: version asked for ("" = latest).
        config: the model's ``model_config_pb2.ModelConfig``.
        step_configs: ``{step model name: model_config_pb2.ModelConfig}`` for every ensemble
            step (empty otherwise).

    Returns:
        The signature, with streaming groups and the sequence capacity discovered for ensembles.
    """
    batched = config.max_batch_size > 0
    stateful = config.HasField("sequence_batching")
    streams: tuple[StreamGroup, ...] = ()
    records = _records(config)
    if config.platform == "ensemble" or config.HasField("ensemble_scheduling"):
        stateful = stateful or any(c.HasField("sequence_batching") for c in step_configs.values())
        streams = _stream_groups(config, step_configs, records)
    return ModelSignature(
        name=name,
        version=version,
        inputs=_tensors(config.input, batched),
        outputs=_tensors(config.output, batched),
        max_batch_size=int(config.max_batch_size),
        stateful=stateful,
        streams=streams,
        max_sequences=records.max_sequences,
    )


def ensemble_steps(config: Any) -> list[tuple[str, str]]:
    """``[(model_name, version), ...]`` of an ensemble's steps ("" = latest); empty otherwise."""
    if not config.HasField("ensemble_scheduling"):
        return []
    return [
        (s.model_name, "" if s.model_version < 0 else str(s.model_version))
        for s in config.ensemble_scheduling.step
    ]
