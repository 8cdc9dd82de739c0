"""The parts of a Triton model configuration the portable backends act on.

Triton hands a python-based backend its configuration as JSON (``args["model_config"]``,
protobuf field names, 64-bit integers often as strings). :meth:`BackendConfig.from_json`
parses it with ``json_format.ParseDict`` into ``model_config_pb2.ModelConfig`` (the protobuf
quiver builds; fields a newer Triton adds are ignored) and reads its typed fields into frozen
dataclasses; tensors are quiver's :class:`~hermes.quiver.TensorSpec`, types quiver's
:class:`~hermes.quiver.DataType`, implicit states quiver's :class:`~hermes.quiver.SequenceState`. Anything the backends cannot honour raises
:class:`~hermes.aeriel.exceptions.BackendConfigError` naming the field and the value.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as pb

from hermes.aeriel.exceptions import BackendConfigError
from hermes.quiver.config import ControlKind, DataType, SequenceState, SequenceStrategy, TensorSpec
from hermes.quiver.exceptions import ModelConfigError

__all__ = [
    "BackendConfig",
    "BackendConfigError",
    "ControlSignal",
    "SequenceConfig",
    "backend_dtype",
    "fair_threads",
    "initial_value",
]

_DEFAULT_IDLE_US = 1_000_000  # Triton's default max_sequence_idle_microseconds
_SUPPORTED = [f"TYPE_{t.value}" for t in DataType if t is not DataType.BYTES]


def backend_dtype(data_type: int, *, where: str = "data_type") -> DataType:
    """The type of a ``model_config_pb2.DataType`` value, if the portable backends carry it.

    ``BF16`` travels as float32 in numpy (``DataType.BF16.numpy``); the adapters convert.

    Raises:
        BackendConfigError: the type is not numeric (``TYPE_STRING``) or not a type at all.
    """
    name = pb.DataType.Name(data_type) if data_type in pb.DataType.values() else str(data_type)
    if name in _SUPPORTED:
        return DataType.from_proto(data_type)
    raise BackendConfigError(
        f"{where}={name!r} is not supported by the portable backends; expected one of {', '.join(sorted(_SUPPORTED))}"
    )


def fair_threads(requested: int, instances: int, *, cpus: int | None = None) -> int:
    """Threads per call: ``requested`` when > 0; else 0 (the framework's default, every core)
    for one instance, ``cpus // instances`` (at least 1) for several.

    ``cpus`` defaults to the CPUs this process may run on.
    """
    if requested > 0:
        return requested
    if instances <= 1:
        return 0
    available = cpus if cpus is not None else len(os.sched_getaffinity(0))
    return max(1, available // instances)


def initial_value(state: SequenceState, model_dir: str | Path) -> np.ndarray:
    """The value a sequence's ``state`` starts with, shape ``dims`` (no batch dimension).

    Zeros without an ``initial_state`` or with ``zero_data``; else the raw little-endian values
    of ``<model_dir>/initial_state/<data_file>``.

    Raises:
        BackendConfigError: the data file is missing or has the wrong size.
    """
    dims = state.initial_dims if state.initial_dims is not None else state.dims
    dtype = state.dtype.numpy
    if state.initial in (None, "zeros"):
        return np.zeros(dims, dtype=dtype)
    assert state.initial is not None
    name = state.initial_name or state.input_name
    path = Path(model_dir) / "initial_state" / state.initial
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BackendConfigError(f"initial_state {name!r}: cannot read data_file {path}: {exc}") from exc
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise BackendConfigError(
            f"initial_state {name!r}: data_file {path} holds {len(raw)} bytes, expected "
            f"{expected} ({list(dims)} x {state.dtype})"
        )
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(dims)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ControlSignal:
    """A control tensor the sequence batcher adds to each request, as the backends read it.

    Args:
        name: the input name.
        kind: START, END, READY or CORRID.
        true_value: the value that means "true" (START/END/READY).
    """

    name: str
    kind: ControlKind
    true_value: float = 1.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class SequenceConfig:
    """``sequence_batching``: strategy, idle timeout, control inputs and implicit states.

    Args:
        strategy: direct or oldest.
        max_idle_us: ``max_sequence_idle_microseconds``; a sequence idle longer is dropped.
        controls: the control inputs by kind.
        states: the implicit states, in config order.
    """

    strategy: SequenceStrategy = SequenceStrategy.DIRECT
    max_idle_us: int = _DEFAULT_IDLE_US
    controls: Mapping[ControlKind, ControlSignal] = dataclasses.field(default_factory=dict)
    states: tuple[SequenceState, ...] = ()

    def __post_init__(self) -> None:
        if self.max_idle_us <= 0:
            raise BackendConfigError(f"max_sequence_idle_microseconds must be > 0, got {self.max_idle_us}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class BackendConfig:
    """What the portable backends need from a model configuration.

    Args:
        name: the model name.
        max_batch_size: 0 for a model without a batch dimension, else the largest batch.
        inputs: the configured inputs (state inputs excluded).
        outputs: the configured outputs.
        sequence: the sequence batcher settings, ``None`` for a stateless model.
        parameters: ``parameters`` as ``{key: string_value}``.
        default_model_filename: the file name inside the version folder ("" for the default).
        dynamic_batching: whether ``dynamic_batching`` is configured.
        proto: the whole configuration as parsed.
    """

    name: str
    max_batch_size: int = 0
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sequence: SequenceConfig | None = None
    parameters: Mapping[str, str] = dataclasses.field(default_factory=dict)
    default_model_filename: str = ""
    dynamic_batching: bool = False
    proto: pb.ModelConfig = dataclasses.field(default_factory=pb.ModelConfig, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_batch_size < 0:
            raise BackendConfigError(f"max_batch_size must be >= 0, got {self.max_batch_size}")
        if not self.outputs:
            raise BackendConfigError(f"model {self.name!r} declares no output")
        names = [t.name for t in self.inputs]
        if len(set(names)) != len(names):
            raise BackendConfigError(f"model {self.name!r} has duplicate input names {names}")

    # ------------------------------------------------------------------ derived
    @property
    def batched(self) -> bool:
        return self.max_batch_size > 0

    @property
    def states(self) -> tuple[SequenceState, ...]:
        return self.sequence.states if self.sequence is not None else ()

    @property
    def stateful(self) -> bool:
        return bool(self.states)

    def model_path(self, model_dir: str | Path, version: str | int, default: str) -> Path:
        """``<model_dir>/<version>/<default_model_filename or default>``."""
        return Path(model_dir) / str(version) / (self.default_model_filename or default)

    def parameter(self, *keys: str, default: str | None = None) -> str | None:
        """The first of ``keys`` present in ``parameters`` (exact, then case-insensitive)."""
        for key in keys:
            if key in self.parameters:
                return self.parameters[key]
        lowered = {k.lower(): v for k, v in self.parameters.items()}
        for key in keys:
            if key.lower() in lowered:
                return lowered[key.lower()]
        return default

    def int_parameter(self, *keys: str, default: int = 0) -> int:
        """An integer parameter (thread counts), ``default`` when absent.

        Raises:
            BackendConfigError: the value is not an integer.
        """
        value = self.parameter(*keys)
        if value is None or value.strip() == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise BackendConfigError(
                f"parameter {keys[0]!r} of model {self.name!r} must be an integer, got {value!r}"
            ) from None

    @property
    def instance_count(self) -> int:
        """Instances of this model across its instance groups (1 when none is given)."""
        return sum(max(1, int(group.count)) for group in self.proto.instance_group) or 1

    def threads_per_call(self, *keys: str, cpus: int | None = None) -> int:
        """Intra-op threads for one framework call: parameter ``keys`` when > 0, else a fair share.

        Triton's backends give every instance every core when the thread count is unset. Each
        instance runs in its own process here, so several busy instances oversubscribe the CPU
        (measured, 2 cores, 4 instances of a DeepClean-shaped fused model, 4 streams: 1.47 s of
        data per s with every core per instance, 2.40 with one each). Unset, each instance gets
        ``cpus // instances`` (at least 1); one instance keeps the framework's default (0: every
        core, as onnxruntime and torch choose them).

        Args:
            keys: the thread-count parameter's names.
            cpus: the CPUs to share (default: those this process may run on).
        """
        return fair_threads(self.int_parameter(*keys, default=0), self.instance_count, cpus=cpus)

    def bool_parameter(self, *keys: str, default: bool) -> bool:
        value = self.parameter(*keys)
        if value is None:
            return default
        return value.strip().lower() in ("1", "true", "yes", "on")

    # ------------------------------------------------------------------ parsing
    @classmethod
    def from_json(cls, config: str | Mapping[str, Any]) -> BackendConfig:
        """Parse Triton's model configuration JSON (a string or an already decoded dict).

        Raises:
            BackendConfigError: the JSON is not a model configuration, or a field holds a value
                the backends cannot serve.
        """
        data: Any = json.loads(config) if isinstance(config, str) else config
        proto = pb.ModelConfig()
        try:
            json_format.ParseDict(data, proto, ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            raise BackendConfigError(f"model config is not a Triton model configuration: {exc}") from None
        return cls.from_proto(proto)

    @classmethod
    def from_proto(cls, proto: pb.ModelConfig) -> BackendConfig:
        """The backends' view of a parsed ``model_config_pb2.ModelConfig``.

        Raises:
            BackendConfigError: a field holds a value the backends cannot serve (names the model).
        """
        try:
            return cls(
                name=proto.name,
                max_batch_size=int(proto.max_batch_size),
                inputs=tuple(_tensor(t) for t in proto.input),
                outputs=tuple(_tensor(t) for t in proto.output),
                sequence=_sequence(proto.sequence_batching) if proto.HasField("sequence_batching") else None,
                parameters={k: v.string_value for k, v in sorted(proto.parameters.items())},
                default_model_filename=proto.default_model_filename,
                dynamic_batching=proto.HasField("dynamic_batching"),
                proto=proto,
            )
        except BackendConfigError as exc:
            raise BackendConfigError(f"model {proto.name!r}: {exc}") from None


def _tensor(entry: pb.ModelInput | pb.ModelOutput) -> TensorSpec:
    if not entry.name:
        raise BackendConfigError("a tensor's name must not be empty")
    dtype = backend_dtype(entry.data_type, where=f"data_type of {entry.name!r}")
    dims = tuple(int(d) for d in entry.dims)
    if any(d < -1 or d == 0 for d in dims):
        raise BackendConfigError(f"dims of {entry.name!r} must be positive or -1, got {list(dims)}")
    return TensorSpec(name=entry.name, dims=dims, dtype=dtype)


def _state(state: pb.ModelSequenceBatching.State) -> SequenceState:
    """quiver's :class:`SequenceState` of one ``sequence_batching.state`` entry, checked for serving."""
    if not state.input_name or not state.output_name:
        raise BackendConfigError(
            f"a state needs input_name and output_name, got {state.input_name!r}, {state.output_name!r}"
        )
    dtype = backend_dtype(state.data_type, where=f"data_type of state {state.input_name!r}")
    dims = tuple(int(d) for d in state.dims)
    # ``initial_state`` is a repeated field; Triton uses its first entry.
    if len(state.initial_state) > 1:
        raise BackendConfigError(f"a state takes one initial_state, got {len(state.initial_state)}")
    if not state.initial_state:
        if any(d < 1 for d in dims):
            raise BackendConfigError(
                f"state {state.input_name!r} has variable dims {list(dims)}; give it an initial_state with fixed dims"
            )
        return SequenceState(
            input_name=state.input_name, output_name=state.output_name, dims=dims, dtype=dtype, initial=None
        )
    entry = state.initial_state[0]
    if entry.data_type:
        backend_dtype(entry.data_type, where=f"initial_state {entry.name!r} data_type")
    source = entry.WhichOneof("state_data")
    if (
        (source == "zero_data" and not entry.zero_data)
        or source is None
        or (source == "data_file" and not entry.data_file)
    ):
        raise BackendConfigError(
            f"initial_state {entry.name!r} must set exactly one of zero_data or data_file, "
            f"got zero_data={entry.zero_data}, data_file={entry.data_file or None!r}"
        )
    initial_dims = tuple(int(d) for d in entry.dims)
    if any(d < 1 for d in initial_dims):
        raise BackendConfigError(
            f"initial_state {entry.name!r} needs fixed positive dims, got {list(initial_dims)}"
        )
    try:
        return SequenceState(
            input_name=state.input_name, output_name=state.output_name, dims=dims, dtype=dtype,
            initial="zeros" if source == "zero_data" else entry.data_file, initial_name=entry.name,
            initial_dims=initial_dims,
        )  # fmt: skip
    except ModelConfigError as exc:
        raise BackendConfigError(str(exc)) from None


def _control(control_input: pb.ModelSequenceBatching.ControlInput) -> list[ControlSignal]:
    signals = []
    for control in control_input.control:
        kind = ControlKind(pb.ModelSequenceBatching.Control.Kind.Name(control.kind))
        true_value = 1.0
        for pair in (control.int32_false_true, control.fp32_false_true, control.bool_false_true):
            if pair:
                if len(pair) != 2:
                    raise BackendConfigError(
                        f"control_input {control_input.name!r}: a false/true pair must hold [false, true], "
                        f"got {list(pair)}"
                    )
                true_value = float(pair[1])
        signals.append(ControlSignal(name=control_input.name, kind=kind, true_value=true_value))
    return signals


def _sequence(entry: pb.ModelSequenceBatching) -> SequenceConfig:
    oldest = entry.WhichOneof("strategy_choice") == "oldest"
    controls = {signal.kind: signal for c in entry.control_input for signal in _control(c)}
    states = [_state(state) for state in entry.state]
    return SequenceConfig(
        strategy=SequenceStrategy.OLDEST if oldest else SequenceStrategy.DIRECT,
        max_idle_us=int(entry.max_sequence_idle_microseconds) or _DEFAULT_IDLE_US,
        controls=controls,
        states=tuple(states),
    )
