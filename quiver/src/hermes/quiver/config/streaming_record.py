"""The streaming record: what a streaming model tells its clients, kept in its ``parameters``.

quiver writes one record per streaming input and per streaming output of a streaming
ensemble (:func:`~hermes.quiver.streaming.add_streaming_inputs`,
:func:`~hermes.quiver.streaming.add_streaming_output`) or fused model
(:func:`~hermes.quiver.streaming.add_fused_streaming_model`); aeriel's client reads them back
to learn strides, batch sizes, start-up lengths and how many sequences the model serves::

    parameters { key: "hermes.streaming_input.<update input>"  value { string_value: "<JSON>" } }
    parameters { key: "hermes.streaming_output.<averaged output>" value { string_value: "<JSON>" } }

```python
record = StreamInputRecord(name="update", model="snapshotter", kernel_size=64, stride=4,
                           batch_size=8, channels=(2, None), tensors=("net.strain", "net.aux"),
                           zero_state_updates=2, max_sequences=1)
config.parameters.update([record.to_parameter()])
StreamingRecords.from_parameters(config.parameters).inputs == (record,)
```

Versions (the ``"version"`` field of the JSON):

* 1 — the first format. Records written before the field existed carry no ``"version"``
  and read as version 1.

A record of a newer version raises :class:`~hermes.quiver.exceptions.StreamingRecordError`
telling the reader to upgrade; unknown fields of a known version are ignored.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Self

from hermes.quiver.exceptions import StreamingRecordError, StreamingRecordVersionError

__all__ = [
    "INPUT_PREFIX",
    "OUTPUT_PREFIX",
    "RECORD_VERSION",
    "StreamInputRecord",
    "StreamOutputRecord",
    "StreamingRecords",
]

RECORD_VERSION = 1
"""The newest record version this hermes writes and reads."""

INPUT_PREFIX = "hermes.streaming_input."
OUTPUT_PREFIX = "hermes.streaming_output."


class _Reader:
    """Typed access to the fields of one decoded record; errors name the parameter and field."""

    def __init__(self, parameter: str, data: Mapping[str, Any]) -> None:
        self.parameter = parameter
        self.data = data

    def fail(self, field: str, expected: str) -> StreamingRecordError:
        value = self.data.get(field, "<missing>")
        return StreamingRecordError(
            f"streaming record {self.parameter}: {field}={value!r}; expected {expected}"
        )

    def integer(self, field: str, *, minimum: int = 1) -> int:
        value = self.data.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(field, f"an integer >= {minimum}")
        return value

    def text(self, field: str) -> str:
        value = self.data.get(field)
        if not isinstance(value, str) or not value:
            raise self.fail(field, "a non-empty string")
        return value

    def optional_str(self, field: str) -> str | None:
        return None if self.data.get(field) is None else self.text(field)

    def optional_int(self, field: str) -> int | None:
        return None if self.data.get(field) is None else self.integer(field, minimum=0)

    def flag(self, field: str) -> bool:
        value = self.data.get(field, False)
        if not isinstance(value, bool):
            raise self.fail(field, "true or false")
        return value

    def strings(self, field: str) -> tuple[str, ...]:
        value = self.data.get(field)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(field, "a list of names")
        return tuple(value)

    def channels(self, field: str) -> tuple[int | None, ...]:
        value = self.data.get(field)
        if not isinstance(value, list) or not all(
            v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0) for v in value
        ):
            raise self.fail(field, "a list of positive channel counts (null for a (B, K) tensor)")
        return tuple(value)


def _decode(parameter: str, text: str, *, prefix: str, kind: str) -> _Reader:
    """The JSON object of a ``kind`` record, refused when its name lacks ``prefix``, or it is
    malformed or from a newer hermes."""
    if not parameter.startswith(prefix):
        raise StreamingRecordError(f"{parameter!r} is not a streaming {kind} record (no prefix {prefix!r})")
    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        raise StreamingRecordError(
            f"streaming record {parameter}: not JSON: {str(text)[:80]!r}; expected a JSON object"
        ) from None
    if not isinstance(data, dict):
        raise StreamingRecordError(
            f"streaming record {parameter}: expected a JSON object, got {str(text)[:80]!r}"
        )
    reader = _Reader(parameter, data)
    version = reader.integer("version") if "version" in data else 1
    if version > RECORD_VERSION:
        raise StreamingRecordVersionError(
            f"streaming record {parameter} has version {version}, but this hermes reads versions up to "
            f"{RECORD_VERSION}: the model was built by a newer hermes-quiver; upgrade hermes-quiver and "
            "hermes-aeriel on the client"
        )
    return reader


def _encode(fields: Mapping[str, Any]) -> str:
    return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in fields.items() if v is not None})


@dataclasses.dataclass(frozen=True, kw_only=True)
class StreamInputRecord:
    """One streaming input: a snapshotter (or a fused model's group) fed by updates.

    Attributes:
        name: the input that takes the updates ``(1, C, s·B)`` (the parameter's suffix).
        model: the model that holds the state (the snapshotter, or the fused model).
        kernel_size: ``K``, samples per window.
        stride: ``s``, samples between consecutive windows.
        batch_size: ``B``, windows per update.
        channels: channels of each fed tensor, in update order (None: a ``(B, K)`` tensor, one channel).
        tensors: the fed tensors, ``"model.input"`` (ensembles) or the network input (fused).
        zero_state_updates: updates at a sequence start whose windows still hold initial state.
        max_sequences: sequences the model serves at once.
        fused: written by a fused streaming model.
        group: fused only: the group's key as the caller named it.
        network: fused only: the network model fused in.
        network_version: fused only: the network version fused in.
        version: the record format version.
    """

    prefix: ClassVar[str] = INPUT_PREFIX

    name: str
    model: str
    kernel_size: int
    stride: int
    batch_size: int
    channels: tuple[int | None, ...]
    tensors: tuple[str, ...]
    zero_state_updates: int
    max_sequences: int
    fused: bool = False
    group: str | None = None
    network: str | None = None
    network_version: int | None = None
    version: int = RECORD_VERSION

    @property
    def parameter(self) -> str:
        """The ``parameters`` key holding this record."""
        return self.prefix + self.name

    @property
    def update_size(self) -> int:
        """Samples per channel in each update: ``s·B``."""
        return self.stride * self.batch_size

    @property
    def total_channels(self) -> int:
        """``C``, channels of an update (a ``(B, K)`` tensor counts one)."""
        return sum(c or 1 for c in self.channels)

    def to_parameter(self) -> tuple[str, str]:
        """``(parameters key, JSON text)``."""
        return self.parameter, _encode({
            "version": self.version, "model": self.model, "key": self.group,
            "fused": True if self.fused else None, "network": self.network,
            "network_version": self.network_version, "kernel_size": self.kernel_size, "stride": self.stride,
            "batch_size": self.batch_size, "channels": self.channels, "tensors": self.tensors,
            "zero_state_updates": self.zero_state_updates, "max_sequences": self.max_sequences,
        })  # fmt: skip

    @classmethod
    def from_parameter(cls, parameter: str, text: str) -> Self:
        """Read the record stored under ``parameter``.

        Raises:
            StreamingRecordError: not a streaming input record, malformed, or of a newer version.
        """
        r = _decode(parameter, text, prefix=cls.prefix, kind="input")
        return cls(
            name=parameter.removeprefix(cls.prefix), model=r.text("model"), kernel_size=r.integer("kernel_size"),
            stride=r.integer("stride"), batch_size=r.integer("batch_size"), channels=r.channels("channels"),
            tensors=r.strings("tensors"), zero_state_updates=r.integer("zero_state_updates", minimum=0),
            max_sequences=r.integer("max_sequences"), fused=r.flag("fused"), group=r.optional_str("key"),
            network=r.optional_str("network"), network_version=r.optional_int("network_version"),
        )  # fmt: skip


@dataclasses.dataclass(frozen=True, kw_only=True)
class StreamOutputRecord:
    """One streaming output: an online averager (or a fused model's averaged output).

    Attributes:
        name: the output that returns ``(1, [C,] s·B)`` per update (the parameter's suffix).
        model: the model that holds the state (the averager, or the fused model).
        stride: ``s``, samples between the windows' ends.
        batch_size: ``B``, windows per update.
        num_updates: ``N``, predictions averaged into each sample.
        delay: samples by which the output trails the newest input sample, ``(N - 1)·s``.
        zero_state_updates: updates at a sequence start whose output covers times before it.
        max_sequences: sequences the model serves at once.
        fused: written by a fused streaming model.
        group: fused only: the output's key as the caller named it.
        version: the record format version.
    """

    prefix: ClassVar[str] = OUTPUT_PREFIX

    name: str
    model: str
    stride: int
    batch_size: int
    num_updates: int
    delay: int
    zero_state_updates: int
    max_sequences: int
    fused: bool = False
    group: str | None = None
    version: int = RECORD_VERSION

    @property
    def parameter(self) -> str:
        """The ``parameters`` key holding this record."""
        return self.prefix + self.name

    def to_parameter(self) -> tuple[str, str]:
        """``(parameters key, JSON text)``."""
        return self.parameter, _encode({
            "version": self.version, "model": self.model, "key": self.group,
            "fused": True if self.fused else None, "stride": self.stride, "batch_size": self.batch_size,
            "num_updates": self.num_updates, "delay": self.delay, "zero_state_updates": self.zero_state_updates,
            "max_sequences": self.max_sequences,
        })  # fmt: skip

    @classmethod
    def from_parameter(cls, parameter: str, text: str) -> Self:
        """Read the record stored under ``parameter`` (errors as :meth:`StreamInputRecord.from_parameter`)."""
        r = _decode(parameter, text, prefix=cls.prefix, kind="output")
        return cls(
            name=parameter.removeprefix(cls.prefix), model=r.text("model"), stride=r.integer("stride"),
            batch_size=r.integer("batch_size"), num_updates=r.integer("num_updates"), delay=r.integer("delay", minimum=0),
            zero_state_updates=r.integer("zero_state_updates", minimum=0), max_sequences=r.integer("max_sequences"),
            fused=r.flag("fused"), group=r.optional_str("key"),
        )  # fmt: skip


def _text(value: Any) -> str:
    """The string of a parameter value: text, a protobuf ``ModelParameter`` or Triton's JSON form."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return str(value.get("string_value", ""))
    return str(getattr(value, "string_value", value))


@dataclasses.dataclass(frozen=True)
class StreamingRecords:
    """Every streaming record of one model, in parameter-name order.

    Attributes:
        inputs: the streaming inputs.
        outputs: the streaming outputs.
    """

    inputs: tuple[StreamInputRecord, ...] = ()
    outputs: tuple[StreamOutputRecord, ...] = ()

    @classmethod
    def from_parameters(
        cls, parameters: Mapping[str, Any], *, on_error: Callable[[StreamingRecordError], None] | None = None
    ) -> StreamingRecords:
        """The records among a config's ``parameters``; other parameters are ignored.

        Args:
            parameters: ``ModelConfig.parameters``, the protobuf map (``ModelParameter`` values)
                or Triton's JSON form (``{key: {"string_value": ...}}``).
            on_error: called with the error of each record that cannot be read, which is then
                skipped; without it the first such error is raised.

        Raises:
            StreamingRecordError: a record is malformed (no ``on_error``).
            StreamingRecordVersionError: a record is of a newer version (no ``on_error``).
        """
        inputs: list[StreamInputRecord] = []
        outputs: list[StreamOutputRecord] = []
        for key in sorted(parameters):
            try:
                if key.startswith(INPUT_PREFIX):
                    inputs.append(StreamInputRecord.from_parameter(key, _text(parameters[key])))
                elif key.startswith(OUTPUT_PREFIX):
                    outputs.append(StreamOutputRecord.from_parameter(key, _text(parameters[key])))
            except StreamingRecordError as exc:
                if on_error is None:
                    raise
                on_error(exc)
        return cls(inputs=tuple(inputs), outputs=tuple(outputs))

    def __bool__(self) -> bool:
        return bool(self.inputs or self.outputs)

    @property
    def all(self) -> tuple[StreamInputRecord | StreamOutputRecord, ...]:
        """Every record, inputs first."""
        return (*self.inputs, *self.outputs)

    @property
    def models(self) -> frozenset[str]:
        """The models that hold the streaming state."""
        return frozenset(r.model for r in self.all)

    @property
    def max_sequences(self) -> int | None:
        """Sequences the model serves at once (the smallest record's), None without records."""
        limits = [r.max_sequences for r in self.all]
        return min(limits) if limits else None

    def input(self, name: str) -> StreamInputRecord | None:
        """The record of streaming input ``name``, or None."""
        return next((r for r in self.inputs if r.name == name), None)
