"""Fused streaming models: snapshotters, the network and online averagers in ONE stateful model.

An ensemble (:func:`add_streaming_inputs` → network → :func:`add_streaming_output`) crosses
three models per update and carries the ``(B, C, K)`` windows between them. A fused model
takes the update ``(1, C, s·B)`` and returns the averaged output ``(1, [C,] s·B)`` from one
model call: the windows never leave the framework.

```
update_i (1|n, C_i, s·B) ─▶ [ snapshotter_i ─▶ network ─▶ averager_j ] ─▶ output_j (1|n, [C,] s·B)
                              state: (C_i, K) per group, ([C,] (N_j - 1)·s) per output
```

* ONNX networks become one ONNX graph (:mod:`.fused_onnx`), TorchScript networks one
  traced module (:mod:`.fused_torch`); both carry Triton's standard implicit state
  (``sequence_batching.state``), so they serve on Triton's ``onnxruntime``/``pytorch``
  backends and on hermes' portable ones.
* Batched state (``sequences_per_instance`` > 1, oldest strategy): the network receives
  ``(n·B, C_i, K)``; it needs a variable batch axis.
* Networks that cannot be fused (TensorRT plans, python models) still stream as an ensemble.

The fused model records the same streaming records (:class:`~hermes.quiver.StreamInputRecord`,
:class:`~hermes.quiver.StreamOutputRecord`, with ``fused=True``) as a streaming ensemble, so
clients discover strides, delays and ``max_sequences`` the same way.
"""

from __future__ import annotations

import io
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

import numpy.typing as npt
from tritonclient.grpc import model_config_pb2 as pb

from hermes.quiver._deps import require
from hermes.quiver.config.streaming_record import StreamInputRecord, StreamOutputRecord
from hermes.quiver.exceptions import StreamingConfigError
from hermes.quiver.streaming.ensemble import SequenceKeywords, sequence_options
from hermes.quiver.streaming.fused_onnx import (
    FusedGroupNames,
    FusedOutputNames,
    check_network_graph,
    fused_onnx_graph,
)
from hermes.quiver.streaming.models import _initial
from hermes.quiver.streaming.specs import (
    OnlineAveragerSpec,
    SequenceOptions,
    SnapshotterSpec,
    StreamingPlatform,
    StreamingTensor,
)
from hermes.quiver.streaming.stateful_model import (
    StateTensor,
    StreamTensor,
    export_streaming_model,
    triton_names,
)

if TYPE_CHECKING:
    from hermes.quiver.model import Model

__all__ = [
    "FusedInput",
    "FusedOutput",
    "FusedStreamingModel",
    "add_fused_streaming_model",
    "write_fused_streaming_model",
]

logger = logging.getLogger("hermes.quiver.streaming")


@dataclass(frozen=True, kw_only=True)
class FusedInput:
    """A streaming input group of a fused model: one update input feeding network inputs.

    Args:
        key: the update input's name (ONNX; TorchScript models use ``INPUT__n``).
        tensors: network inputs ``(B, C_i, K)`` or ``(B, K)`` sharing ``K``, stacked in this
            channel order in the update.
        initial_state: ``(C, K)`` samples preceding every sequence; zeros if None.
    """

    key: str
    tensors: tuple[str, ...]
    initial_state: npt.ArrayLike | None = None


@dataclass(frozen=True, kw_only=True)
class FusedOutput:
    """A streaming output of a fused model: one network output averaged online.

    Args:
        key: the output's name (ONNX; TorchScript models use ``OUTPUT__n``).
        tensor: the network output ``(B, [C,] K)``.
        num_updates: ``N`` for this output; None takes the call's ``num_updates``.
        initial_state: ``([C,] (N - 1)·s)`` pending sums to start from; zeros if None.
    """

    key: str
    tensor: str
    num_updates: int | None = None
    initial_state: npt.ArrayLike | None = None


@dataclass(frozen=True, kw_only=True)
class FusedStreamingModel:
    """What :func:`add_fused_streaming_model` wrote.

    Attributes:
        model: the fused model in the repository.
        network: the network model it was built from.
        platform: ONNX or TorchScript.
        sequence: its scheduling.
        groups: ``{update key: snapshotter spec}``.
        averagers: ``{output key: averager spec}``.
        inputs: ``{update key: Triton input name}``.
        outputs: ``{output key: Triton output name}``.
        histories: update keys whose snapshotter starts from a given history.
    """

    model: Model
    network: Model
    platform: StreamingPlatform
    sequence: SequenceOptions
    groups: dict[str, SnapshotterSpec]
    averagers: dict[str, OnlineAveragerSpec]
    inputs: dict[str, str]
    outputs: dict[str, str]
    histories: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def max_sequences(self) -> int:
        """Sequences served at once: ``instances * sequences_per_instance``."""
        return self.sequence.instances * self.sequence.sequences_per_instance

    def update_shape(self, key: str) -> tuple[int, int, int]:
        """``(1, C, s·B)`` of update ``key``."""
        return self.groups[key].update_shape

    def delay(self, key: str) -> int:
        """Samples by which output ``key`` trails the newest input sample."""
        return self.averagers[key].delay

    def zero_state_updates(self, key: str) -> int:
        """Updates at a sequence start whose output ``key`` depends on zero initial state."""
        averager = self.averagers[key]
        after = [
            averager.zero_state_updates_after(g) for k, g in self.groups.items() if k not in self.histories
        ]
        return max([averager.zero_state_updates, *after])


def _indexed(names: Sequence[str]) -> list[str]:
    """Names in positional order: by ``__<n>`` suffix when every name has one, else as given."""
    import re

    found = [re.search(r"__(\d+)$", n) for n in names]
    if names and all(found):
        return [n for _, n in sorted((int(m.group(1)), n) for m, n in zip(found, names, strict=True) if m)]
    return list(names)


def _groups(
    network: Model, inputs: Sequence[FusedInput] | Mapping[str, str | Sequence[str]] | None
) -> list[FusedInput]:
    if inputs is None:
        return [FusedInput(key="update", tensors=tuple(network.inputs))]
    if isinstance(inputs, Mapping):
        return [
            FusedInput(key=k, tensors=(v,) if isinstance(v, str) else tuple(v)) for k, v in inputs.items()
        ]
    return [i if isinstance(i, FusedInput) else FusedInput(**i) for i in inputs]


def _outputs(network: Model, outputs: Sequence[FusedOutput] | Mapping[str, str] | None) -> list[FusedOutput]:
    if outputs is None:
        return [FusedOutput(key=name, tensor=name) for name in network.outputs]
    if isinstance(outputs, Mapping):
        return [FusedOutput(key=k, tensor=v) for k, v in outputs.items()]
    return [o if isinstance(o, FusedOutput) else FusedOutput(**o) for o in outputs]


def _snapshotter_specs(
    network: Model, groups: list[FusedInput], stride: int, batch: int, batched: bool
) -> list[SnapshotterSpec]:
    fed: dict[str, str] = {}
    specs = []
    for group in groups:
        if not group.tensors:
            raise StreamingConfigError(f"streaming group {group.key!r} names no network input")
        kernel: int | None = None
        described = []
        for tensor in group.tensors:
            if tensor not in network.inputs:
                raise StreamingConfigError(
                    f"streaming group {group.key!r}: {network.name!r} has no input {tensor!r} "
                    f"(inputs: {sorted(network.inputs)})"
                )
            if tensor in fed:
                raise StreamingConfigError(
                    f"network input {tensor!r} is fed by groups {fed[tensor]!r} and {group.key!r}: one group each"
                )
            fed[tensor] = group.key
            shape = tuple(network.inputs[tensor].shape)
            described.append(StreamingTensor.from_shape(tensor, shape, kernel))
            kernel = int(shape[-1])  # type: ignore[arg-type]
            _check_batch_axis(f"{network.name}.{tensor}", shape, batch, batched)
        assert kernel is not None
        specs.append(SnapshotterSpec(
            tensors=tuple(StreamingTensor(name=f"{group.key}.w{i}", channels=t.channels) for i, t in enumerate(described)),
            kernel_size=kernel, stride=stride, batch_size=batch, update_name=group.key,
        ))  # fmt: skip
    unfed = [n for n in network.inputs if n not in fed]
    if unfed:
        raise StreamingConfigError(
            f"inputs {unfed} of {network.name!r} are fed by no streaming group: a fused model feeds every "
            "network input from the updates"
        )
    return specs


def _check_batch_axis(label: str, shape: tuple[Any, ...], batch: int, batched: bool) -> None:
    if shape[0] is not None and shape[0] != batch:
        raise StreamingConfigError(
            f"{label} has batch axis {shape[0]} but each update carries batch_size={batch} windows: they must agree"
        )
    if batched and shape[0] is not None:
        raise StreamingConfigError(
            f"{label} has a fixed batch axis {shape[0]}: batched state (sequences_per_instance > 1) feeds it "
            f"(sequences * {batch}) windows, so the network needs a variable batch axis (max_batch_size > 0)"
        )


def _averager_specs(
    network: Model, outputs: list[FusedOutput], stride: int, batch: int, num_updates: int
) -> list[OnlineAveragerSpec]:
    if not outputs:
        raise StreamingConfigError(f"a fused streaming model of {network.name!r} needs at least one output")
    specs: list[OnlineAveragerSpec] = []
    for output in outputs:
        if output.tensor not in network.outputs:
            raise StreamingConfigError(
                f"streaming output {output.key!r}: {network.name!r} has no output {output.tensor!r} "
                f"(outputs: {sorted(network.outputs)})"
            )
        shape = tuple(network.outputs[output.tensor].shape)
        specs.append(OnlineAveragerSpec.from_shape(
            shape, stride=stride, num_updates=output.num_updates or num_updates, batch_size=batch,
            input_name=f"p{len(specs)}", output_name=output.key,
        ))  # fmt: skip
    return specs


def _check_keys(groups: list[FusedInput], outputs: list[FusedOutput]) -> None:
    seen: set[str] = set()
    for key in [g.key for g in groups] + [o.key for o in outputs]:
        if key in seen:
            raise StreamingConfigError(
                f"name {key!r} is used twice among the fused model's inputs and outputs"
            )
        seen.add(key)


def _load_network(network: Model, version: int | None) -> tuple[Any, int]:
    """The network's ONNX ``ModelProto`` or loaded TorchScript module, and the version read."""
    versions = network.versions
    if not versions:
        raise StreamingConfigError(f"network {network.name!r} has no exported version to fuse")
    chosen = versions[-1] if version is None else version
    if chosen not in versions:
        raise StreamingConfigError(f"network {network.name!r} has no version {chosen} (versions: {versions})")
    filename = network.config.proto.default_model_filename or network.platform.filename
    data = network.storage.read_bytes(network.name, str(chosen), filename)
    if StreamingPlatform.parse(network.platform) is StreamingPlatform.ONNX:
        onnx = require("onnx", "fusing an ONNX network")
        model = onnx.load_from_string(data)
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
            raise StreamingConfigError(
                f"network {network.name!r} keeps its weights in external data files; fuse a single-file model.onnx"
            )
        return model, chosen
    torch = require("torch", "fusing a TorchScript network")
    return torch.jit.load(io.BytesIO(data), map_location="cpu").eval(), chosen


def _platform(network: Model) -> StreamingPlatform:
    try:
        return StreamingPlatform.parse(network.platform)
    except StreamingConfigError:
        raise StreamingConfigError(
            f"network {network.name!r} runs on {network.platform.value!r}, which cannot be fused (ONNX and "
            "TorchScript networks can); stream it as an ensemble with add_streaming_inputs/add_streaming_output"
        ) from None


def write_fused_streaming_model(
    directory: str | Path,
    network: Any,
    *,
    platform: StreamingPlatform,
    groups: Sequence[tuple[SnapshotterSpec, Sequence[str], npt.ArrayLike | None]],
    averagers: Sequence[tuple[OnlineAveragerSpec, str, npt.ArrayLike | None]],
    network_inputs: Sequence[str],
    network_outputs: Sequence[str],
    sequence: SequenceOptions,
    version: int = 1,
) -> tuple[pb.ModelConfig, dict[str, str], dict[str, str]]:
    """Write the fused model of ``network`` (an ``onnx.ModelProto`` or a torch module) into ``directory``.

    Args:
        directory: the model folder.
        network: the network.
        platform: ONNX (``network`` is a ModelProto) or TorchScript (a torch module).
        groups: ``(spec, network inputs fed by its tensors, initial history)`` per update.
        averagers: ``(spec, network output averaged, initial sums)`` per output.
        network_inputs: the network's inputs in positional order (TorchScript).
        network_outputs: the network's outputs in result order (TorchScript).
        sequence: scheduling.
        version: the version folder.

    Returns:
        The config, ``{update key: Triton input}`` and ``{output key: Triton output}``.
    """
    batched = sequence.batched
    lead: tuple[int, ...] = () if batched else (1,)
    inputs = [StreamTensor(name=s.update_name, shape=lead + s.update_shape[1:]) for s, _, _ in groups]
    outputs = [StreamTensor(name=s.output_name, shape=lead + s.output_shape[1:]) for s, _, _ in averagers]
    states = [
        StateTensor(name=f"{s.update_name}_snapshot", shape=lead + s.state_shape,
                    initial=_initial(h, s.state_shape, lead + s.state_shape, f"initial state of {s.update_name!r}"))
        for s, _, h in groups
    ] + [
        StateTensor(name=f"{s.output_name}_average", shape=lead + s.state_shape,
                    initial=_initial(h, s.state_shape, lead + s.state_shape, f"initial state of {s.output_name!r}"))
        for s, _, h in averagers
    ]  # fmt: skip
    names = triton_names(platform, inputs, outputs, states)
    count = len(groups)
    if platform is StreamingPlatform.ONNX:
        check_network_graph(
            network, [n for _, fed, _ in groups for n in fed], [o for _, o, _ in averagers], batched=batched,
            batch_size=groups[0][0].batch_size,
        )  # fmt: skip
        snap_names = zip(names.inputs, names.state_inputs, names.state_outputs, strict=False)
        avg_names = zip(names.outputs, names.state_inputs[count:], names.state_outputs[count:], strict=True)
        module: Any = fused_onnx_graph(
            network,
            [
                FusedGroupNames(spec=s, update=u, state_in=si, state_out=so, network_inputs=tuple(fed))
                for (s, fed, _), (u, si, so) in zip(groups, snap_names, strict=True)
            ],
            [
                FusedOutputNames(spec=s, network_output=o, output=out, state_in=si, state_out=so)
                for (s, o, _), (out, si, so) in zip(averagers, avg_names, strict=True)
            ],
            batched=batched,
            name=Path(directory).name,
        )
    else:
        from hermes.quiver.streaming.fused_torch import FusedStreamingModule

        where = {n: (g, t) for g, (_, fed, _) in enumerate(groups) for t, n in enumerate(fed)}
        module = FusedStreamingModule(
            network, [s for s, _, _ in groups], [where[n] for n in network_inputs], [s for s, _, _ in averagers],
            [list(network_outputs).index(o) for _, o, _ in averagers], batched=batched,
        )  # fmt: skip
    config = export_streaming_model(
        module, directory, platform=platform, inputs=inputs, outputs=outputs, states=states, sequence=sequence,
        version=version,
    )  # fmt: skip
    keys_in = dict(zip([s.update_name for s, _, _ in groups], names.inputs, strict=True))
    keys_out = dict(zip([s.output_name for s, _, _ in averagers], names.outputs, strict=True))
    return config, keys_in, keys_out


def add_fused_streaming_model(
    network: Model,
    *,
    stride: int,
    num_updates: int,
    batch_size: int = 1,
    inputs: Sequence[FusedInput] | Mapping[str, str | Sequence[str]] | None = None,
    outputs: Sequence[FusedOutput] | Mapping[str, str] | None = None,
    name: str | None = None,
    version: int | None = None,
    **options: Unpack[SequenceKeywords],
) -> FusedStreamingModel:
    """Fuse snapshotters, ``network`` and online averagers into one stateful model of its repository.

    Args:
        network: an exported ONNX or TorchScript model of the repository.
        stride: ``s``, samples between consecutive windows (every group and output).
        num_updates: ``N``, predictions averaged into each output sample (per output in
            :class:`FusedOutput`).
        batch_size: ``B``, windows per update (the network sees ``B`` windows per call, ``n·B``
            with batched state).
        inputs: the update groups: :class:`FusedInput` objects or ``{update key: network
            input(s)}``; default one group ``"update"`` feeding every input in config order.
        outputs: :class:`FusedOutput` objects or ``{output key: network output}``; default
            every network output under its own name.
        name: the fused model's name; default ``"<network>-stream"``.
        version: the network version to fuse (default: the newest).
        **options: :class:`SequenceOptions` fields (``instances``,
            ``sequences_per_instance``, ``idle_timeout_s``, ``max_queue_delay_us``,
            ``instance_kind``).

    Returns:
        The fused model, its input/output names and its streaming numbers.

    Raises:
        StreamingConfigError: the network cannot be fused (platform, unfed inputs, a fixed batch
            axis with batched state, disagreeing ``K`` or ``B``, colliding names); nothing is written.
        ExportError: writing the model failed (nothing is left in the repository).
    """
    platform = _platform(network)
    sequence = sequence_options(options)
    groups, outs = _groups(network, inputs), _outputs(network, outputs)
    _check_keys(groups, outs)
    snapshotters = _snapshotter_specs(network, groups, stride, batch_size, sequence.batched)
    averagers = _averager_specs(network, outs, stride, batch_size, num_updates)
    module, chosen = _load_network(network, version)
    repository = network.repository
    model_name = name or f"{network.name}-stream"
    order_in, order_out = _indexed(list(network.inputs)), _indexed(list(network.outputs))

    def write(directory: Path) -> tuple[pb.ModelConfig, dict[str, str], dict[str, str]]:
        return write_fused_streaming_model(
            directory, module, platform=platform,
            groups=[(s, g.tensors, g.initial_state) for s, g in zip(snapshotters, groups, strict=True)],
            averagers=[(s, o.tensor, o.initial_state) for s, o in zip(averagers, outs, strict=True)],
            network_inputs=order_in, network_outputs=order_out, sequence=sequence,
        )  # fmt: skip

    model, (_, keys_in, keys_out) = _install(repository, model_name, platform, write)
    fused = FusedStreamingModel(
        model=model, network=network, platform=platform, sequence=sequence,
        groups={g.key: s for g, s in zip(groups, snapshotters, strict=True)},
        averagers={o.key: s for o, s in zip(outs, averagers, strict=True)}, inputs=keys_in, outputs=keys_out,
        histories=frozenset(g.key for g in groups if g.initial_state is not None),
    )  # fmt: skip
    _record(fused, groups, chosen)
    logger.info(
        "fused streaming model %s: %s -> %s -> %s (%s)", model.name, list(keys_in), network.name, list(keys_out),
        platform.name,
    )  # fmt: skip
    return fused


def _install(repository: Any, name: str, platform: StreamingPlatform, write: Any) -> tuple[Model, Any]:
    from hermes.quiver.platform import Platform

    model = repository.add(name, platform=Platform(platform.value))
    try:
        with tempfile.TemporaryDirectory(prefix="hermes-fused-") as scratch:
            directory = Path(scratch) / model.name
            written = write(directory)
            for entry in sorted(directory.iterdir()):
                if entry.is_dir():
                    model.storage.put_dir(entry, model.name, entry.name)
        model.config.proto.CopyFrom(written[0])
        model.config.write()
    except BaseException:
        repository.remove(model)
        raise
    return model, written


def _record(fused: FusedStreamingModel, groups: list[FusedInput], version: int) -> None:
    parameters = fused.model.config.parameters
    for group in groups:
        spec = fused.groups[group.key]
        parameters.update([StreamInputRecord(
            name=fused.inputs[group.key], model=fused.name, group=group.key, fused=True, network=fused.network.name,
            network_version=version, kernel_size=spec.kernel_size, stride=spec.stride, batch_size=spec.batch_size,
            channels=tuple(t.channels for t in spec.tensors), tensors=tuple(group.tensors),
            zero_state_updates=0 if group.initial_state is not None else spec.zero_state_updates,
            max_sequences=fused.max_sequences,
        ).to_parameter()])  # fmt: skip
    for key, avg in fused.averagers.items():
        parameters.update([StreamOutputRecord(
            name=fused.outputs[key], model=fused.name, group=key, fused=True, stride=avg.stride,
            batch_size=avg.batch_size, num_updates=avg.num_updates, delay=avg.delay,
            zero_state_updates=fused.zero_state_updates(key), max_sequences=fused.max_sequences,
        ).to_parameter()])  # fmt: skip
    fused.model.config.write()
