"""The parts of a Triton model configuration the portable backends act on.

Triton hands a python-based backend its configuration as JSON (``args["model_config"]``,
protobuf field names, 64-bit integers often as strings). :meth:`BackendConfig.from_json`
turns it into frozen dataclasses; anything the backends cannot honour raises
:class:`~hermes.aeriel.exceptions.BackendConfigError` naming the field and the value.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hermes.aeriel.exceptions import BackendConfigError

__all__ = [
    "BackendConfig",
    "BackendConfigError",
    "ControlInput",
    "ControlKind",
    "InitialState",
    "SequenceConfig",
    "SequenceStrategy",
    "StateSpec",
    "TensorSpec",
    "numpy_dtype",
]

# Triton data types with a numpy equivalent. BF16 has none: it is carried as float32 in
# numpy and converted by the framework adapter (torch) where it can be.
_NUMPY_DTYPES: dict[str, type[np.generic]] = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_BF16": np.float32,
}

_DEFAULT_IDLE_US = 1_000_000  # Triton's default max_sequence_idle_microseconds


def numpy_dtype(triton_type: str, *, where: str = "data_type") -> np.dtype[Any]:
    """The numpy dtype of a Triton data type (``"TYPE_FP32"`` or ``"FP32"``).

    ``TYPE_BF16`` maps to float32: numpy has no bfloat16, so the adapters convert.

    Raises:
        BackendConfigError: the type is not numeric (``TYPE_STRING``) or unknown.
    """
    key = triton_type if triton_type.startswith("TYPE_") else f"TYPE_{triton_type}"
    try:
        return np.dtype(_NUMPY_DTYPES[key])
    except KeyError:
        raise BackendConfigError(
            f"{where}={triton_type!r} is not supported by the portable backends; "
            f"expected one of {', '.join(sorted(_NUMPY_DTYPES))}"
        ) from None


class SequenceStrategy(enum.StrEnum):
    """How Triton's sequence batcher forms batches."""

    DIRECT = "direct"
    OLDEST = "oldest"


class ControlKind(enum.StrEnum):
    """``sequence_batching.control_input[].control[].kind``."""

    START = "CONTROL_SEQUENCE_START"
    END = "CONTROL_SEQUENCE_END"
    READY = "CONTROL_SEQUENCE_READY"
    CORRID = "CONTROL_SEQUENCE_CORRID"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TensorSpec:
    """One input or output: name, Triton data type and dims (without the batch dim).

    Args:
        name: tensor name.
        data_type: Triton type, e.g. ``"TYPE_FP32"``.
        dims: shape without the batch dimension; ``-1`` for a variable size.
    """

    name: str
    data_type: str
    dims: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.name:
            raise BackendConfigError("a tensor's name must not be empty")
        numpy_dtype(self.data_type, where=f"data_type of {self.name!r}")
        if any(d < -1 or d == 0 for d in self.dims):
            raise BackendConfigError(f"dims of {self.name!r} must be positive or -1, got {list(self.dims)}")

    @property
    def dtype(self) -> np.dtype[Any]:
        """The numpy dtype the tensor travels as (float32 for BF16)."""
        return numpy_dtype(self.data_type)

    @property
    def is_bf16(self) -> bool:
        return self.data_type == "TYPE_BF16"


@dataclasses.dataclass(frozen=True, kw_only=True)
class InitialState:
    """``sequence_batching.state[].initial_state``: zeros or a raw data file.

    Args:
        name: the initial state's name.
        data_type: Triton type of the data.
        dims: shape of the state without the batch dimension.
        zero_data: start from zeros.
        data_file: file under ``<model>/initial_state/`` holding the raw little-endian values.
    """

    name: str = ""
    data_type: str
    dims: tuple[int, ...]
    zero_data: bool = False
    data_file: str | None = None

    def __post_init__(self) -> None:
        if self.zero_data == (self.data_file is not None):
            raise BackendConfigError(
                f"initial_state {self.name!r} must set exactly one of zero_data or data_file, "
                f"got zero_data={self.zero_data}, data_file={self.data_file!r}"
            )
        if any(d < 1 for d in self.dims):
            raise BackendConfigError(
                f"initial_state {self.name!r} needs fixed positive dims, got {list(self.dims)}"
            )
        numpy_dtype(self.data_type, where=f"initial_state {self.name!r} data_type")

    def load(self, model_dir: str | Path) -> np.ndarray:
        """The initial value, shape ``dims`` (no batch dimension).

        Args:
            model_dir: the model's folder (``<repository>/<model>``).

        Raises:
            BackendConfigError: the data file is missing or has the wrong size.
        """
        dtype = numpy_dtype(self.data_type)
        if self.zero_data:
            return np.zeros(self.dims, dtype=dtype)
        assert self.data_file is not None
        path = Path(model_dir) / "initial_state" / self.data_file
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise BackendConfigError(
                f"initial_state {self.name!r}: cannot read data_file {path}: {exc}"
            ) from exc
        expected = int(np.prod(self.dims)) * dtype.itemsize
        if len(raw) != expected:
            raise BackendConfigError(
                f"initial_state {self.name!r}: data_file {path} holds {len(raw)} bytes, expected "
                f"{expected} ({list(self.dims)} x {self.data_type})"
            )
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(self.dims)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StateSpec:
    """One implicit state: the model input it feeds and the model output that replaces it.

    Args:
        input_name: the model input that receives the state.
        output_name: the model output that holds the next state.
        data_type: Triton type.
        dims: shape without the batch dimension.
        initial: the initial value; zeros of ``dims`` when absent.
    """

    input_name: str
    output_name: str
    data_type: str
    dims: tuple[int, ...]
    initial: InitialState | None = None

    def __post_init__(self) -> None:
        if not self.input_name or not self.output_name:
            raise BackendConfigError(
                f"a state needs input_name and output_name, got {self.input_name!r}, {self.output_name!r}"
            )
        numpy_dtype(self.data_type, where=f"data_type of state {self.input_name!r}")
        if self.initial is None and any(d < 1 for d in self.dims):
            raise BackendConfigError(
                f"state {self.input_name!r} has variable dims {list(self.dims)}; give it an initial_state "
                "with fixed dims"
            )

    def initial_value(self, model_dir: str | Path) -> np.ndarray:
        """The state a sequence starts with, shape ``dims`` (no batch dimension)."""
        if self.initial is not None:
            return self.initial.load(model_dir).astype(numpy_dtype(self.data_type), copy=False)
        return np.zeros(self.dims, dtype=numpy_dtype(self.data_type))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ControlInput:
    """A control tensor the sequence batcher adds to each request.

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
    controls: Mapping[ControlKind, ControlInput] = dataclasses.field(default_factory=dict)
    states: tuple[StateSpec, ...] = ()

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
    """

    name: str
    max_batch_size: int = 0
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sequence: SequenceConfig | None = None
    parameters: Mapping[str, str] = dataclasses.field(default_factory=dict)
    default_model_filename: str = ""
    dynamic_batching: bool = False

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
    def states(self) -> tuple[StateSpec, ...]:
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
            BackendConfigError: a field holds a value the backends cannot serve.
        """
        data: Mapping[str, Any] = json.loads(config) if isinstance(config, str) else config
        name = str(data.get("name", ""))
        try:
            sequence = _parse_sequence(data.get("sequence_batching"))
            return cls(
                name=name,
                max_batch_size=int(data.get("max_batch_size", 0) or 0),
                inputs=tuple(_parse_tensor(t) for t in data.get("input", []) or []),
                outputs=tuple(_parse_tensor(t) for t in data.get("output", []) or []),
                sequence=sequence,
                parameters={
                    str(k): str((v or {}).get("string_value", "")) if isinstance(v, Mapping) else str(v)
                    for k, v in (data.get("parameters") or {}).items()
                },
                default_model_filename=str(data.get("default_model_filename", "") or ""),
                dynamic_batching="dynamic_batching" in data and data["dynamic_batching"] is not None,
            )
        except BackendConfigError as exc:
            raise BackendConfigError(f"model {name!r}: {exc}") from None


def _dims(value: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in value or ())


def _parse_tensor(entry: Mapping[str, Any]) -> TensorSpec:
    return TensorSpec(
        name=str(entry.get("name", "")),
        data_type=str(entry.get("data_type", "")),
        dims=_dims(entry.get("dims")),
    )


def _parse_initial(value: Any, *, fallback_type: str) -> InitialState | None:
    # ``initial_state`` is a repeated field; Triton uses its first entry.
    entries = value if isinstance(value, list) else [value] if value else []
    if not entries:
        return None
    if len(entries) > 1:
        raise BackendConfigError(f"a state takes one initial_state, got {len(entries)}")
    entry = entries[0]
    data_file = entry.get("data_file") or None
    return InitialState(
        name=str(entry.get("name", "")),
        data_type=str(entry.get("data_type") or fallback_type),
        dims=_dims(entry.get("dims")),
        zero_data=bool(entry.get("zero_data", False)),
        data_file=str(data_file) if data_file else None,
    )


def _parse_sequence(entry: Mapping[str, Any] | None) -> SequenceConfig | None:
    if entry is None:
        return None
    strategy = SequenceStrategy.OLDEST if entry.get("oldest") is not None else SequenceStrategy.DIRECT
    idle = int(entry.get("max_sequence_idle_microseconds", 0) or 0) or _DEFAULT_IDLE_US
    controls: dict[ControlKind, ControlInput] = {}
    for control_input in entry.get("control_input", []) or []:
        for control in control_input.get("control", []) or []:
            raw_kind = str(control.get("kind", ""))
            try:
                kind = ControlKind(raw_kind)
            except ValueError:
                raise BackendConfigError(
                    f"control_input {control_input.get('name')!r} has kind {raw_kind!r}; expected one of "
                    f"{', '.join(k.value for k in ControlKind)}"
                ) from None
            true_value = 1.0
            for key in ("int32_false_true", "fp32_false_true", "bool_false_true"):
                pair = control.get(key)
                if pair:
                    if len(pair) != 2:
                        raise BackendConfigError(
                            f"control_input {control_input.get('name')!r}: {key} must hold [false, true], "
                            f"got {pair}"
                        )
                    true_value = float(pair[1])
            controls[kind] = ControlInput(
                name=str(control_input.get("name", "")), kind=kind, true_value=true_value
            )
    states = []
    for state in entry.get("state", []) or []:
        data_type = str(state.get("data_type", ""))
        states.append(
            StateSpec(
                input_name=str(state.get("input_name", "")),
                output_name=str(state.get("output_name", "")),
                data_type=data_type,
                dims=_dims(state.get("dims")),
                initial=_parse_initial(state.get("initial_state"), fallback_type=data_type),
            )
        )
    return SequenceConfig(strategy=strategy, max_idle_us=idle, controls=controls, states=tuple(states))
