"""Validated descriptions of the streaming models: what they take, keep and emit.

These frozen dataclasses hold every number a streaming model needs, check them when
they are built (not when the model is served), and derive the shapes, delays and
warm-up lengths from them. They need neither torch nor a repository.

Names used in shapes (samples are along the last axis):

* ``K``: ``kernel_size``, the window length every downstream tensor sees.
* ``s``: ``stride``, samples between the ends of consecutive windows.
* ``B``: ``batch_size``, windows per update; an update carries ``s·B`` new samples.
* ``C_i``: channels of downstream tensor ``i`` (``None`` for a 2-D ``(B, K)`` tensor,
  which takes one channel of the update); ``C = Σ max(C_i, 1)``.
* ``N``: ``num_updates``, the overlapping predictions averaged into each output sample.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from hermes.quiver.exceptions import StreamingConfigError

__all__ = [
    "OnlineAveragerSpec",
    "SequenceOptions",
    "SnapshotterSpec",
    "StreamingPlatform",
    "StreamingTensor",
]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/]*$")


def _check_name(what: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise StreamingConfigError(
            f"{what} {name!r} is not a valid tensor/model name: expected letters, digits, '_', '.', "
            "'-' or '/', starting with a letter or '_'"
        )


def _check_positive_int(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise StreamingConfigError(f"{what} must be a positive integer, got {value!r}")


class StreamingPlatform(StrEnum):
    """How a streaming model is exported (and which Triton backend serves it)."""

    ONNX = "onnxruntime_onnx"
    TORCHSCRIPT = "pytorch_libtorch"

    @property
    def backend(self) -> str:
        """The Triton backend name for this platform."""
        return "onnxruntime" if self is StreamingPlatform.ONNX else "pytorch"

    @property
    def filename(self) -> str:
        """The model file Triton expects in a version directory."""
        return "model.onnx" if self is StreamingPlatform.ONNX else "model.pt"

    @classmethod
    def parse(cls, value: object) -> StreamingPlatform:
        """Accept a :class:`StreamingPlatform`, its value, or ``"onnx"``/``"torchscript"``.

        Also accepts an enum from elsewhere (e.g. quiver's ``Platform``) by its ``value``/``name``.
        """
        if isinstance(value, cls):
            return value
        candidates = [value, getattr(value, "value", None), getattr(value, "name", None)]
        for candidate in candidates:
            if not isinstance(candidate, str):
                continue
            key = candidate.lower()
            if key in ("onnx", "onnxruntime", "onnxruntime_onnx"):
                return cls.ONNX
            if key in ("torchscript", "pytorch", "pytorch_libtorch", "torch"):
                return cls.TORCHSCRIPT
        raise StreamingConfigError(
            f"platform {value!r} cannot serve a streaming model: expected ONNX or TORCHSCRIPT"
        )


@dataclass(frozen=True, kw_only=True)
class StreamingTensor:
    """One downstream tensor fed by a snapshotter.

    Args:
        name: the snapshotter output name that carries this tensor's windows.
        channels: ``C_i`` for a ``(B, C_i, K)`` tensor, or ``None`` for a ``(B, K)`` tensor.
    """

    name: str
    channels: int | None = None

    def __post_init__(self) -> None:
        _check_name("streaming tensor name", self.name)
        if self.channels is not None:
            _check_positive_int(f"channels of streaming tensor {self.name!r}", self.channels)

    @property
    def width(self) -> int:
        """Channels of the update this tensor takes (1 for a 2-D tensor)."""
        return 1 if self.channels is None else self.channels

    @classmethod
    def from_shape(
        cls, name: str, shape: Sequence[int | None], kernel_size: int | None = None
    ) -> StreamingTensor:
        """Describe a downstream tensor from its full shape ``(B, K)`` or ``(B, C, K)``.

        Raises:
            StreamingConfigError: the rank is not 2 or 3, or a channel/kernel axis is variable.
        """
        shape = tuple(shape)
        if len(shape) not in (2, 3):
            raise StreamingConfigError(
                f"streaming tensor {name!r} has shape {list(shape)} of rank {len(shape)}: a snapshotter "
                "feeds tensors of rank 2 (B, K) or 3 (B, C, K)"
            )
        if shape[-1] is None or shape[-1] < 1:
            raise StreamingConfigError(
                f"streaming tensor {name!r} has a variable window axis in shape {list(shape)}: "
                "the last axis (the kernel length K) must be fixed"
            )
        if kernel_size is not None and shape[-1] != kernel_size:
            raise StreamingConfigError(
                f"streaming tensor {name!r} has kernel length {shape[-1]} but the other tensors of the "
                f"group have {kernel_size}: every tensor of a streaming group must share K"
            )
        if len(shape) == 2:
            return cls(name=name, channels=None)
        channels = shape[1]
        if channels is None or channels < 1:
            raise StreamingConfigError(
                f"streaming tensor {name!r} has a variable channel axis in shape {list(shape)}: "
                "the channel axis must be fixed"
            )
        return cls(name=name, channels=int(channels))


@dataclass(frozen=True, kw_only=True)
class SequenceOptions:
    """How Triton schedules the sequences of a stateful streaming model.

    Args:
        idle_timeout_s: seconds a sequence may stay silent before Triton drops its state
            (``max_sequence_idle_microseconds``).
        instances: model instances (``instance_group.count``) per device.
        sequences_per_instance: sequences one instance serves at once. 1 (default) uses the
            direct strategy (one instance holds one sequence, ``max_batch_size: 0``); more
            uses batched state with the oldest strategy (``max_batch_size`` = this value), so
            concurrency = instances * sequences_per_instance.
        max_queue_delay_us: with batched state, how long the oldest strategy waits to fill a
            batch (microseconds).
        instance_kind: ``"auto"``, ``"cpu"`` or ``"gpu"`` (``KIND_AUTO``/``KIND_CPU``/``KIND_GPU``).
    """

    idle_timeout_s: float = 60.0
    instances: int = 1
    sequences_per_instance: int = 1
    max_queue_delay_us: int = 0
    instance_kind: str = "auto"

    def __post_init__(self) -> None:
        if not (isinstance(self.idle_timeout_s, int | float) and math.isfinite(self.idle_timeout_s)) or (
            self.idle_timeout_s <= 0
        ):
            raise StreamingConfigError(
                f"idle_timeout_s must be a positive finite number of seconds, got {self.idle_timeout_s!r}"
            )
        if self.idle_timeout_s * 1e6 >= 2**63:
            raise StreamingConfigError(
                f"idle_timeout_s={self.idle_timeout_s!r} does not fit Triton's uint64 µs"
            )
        _check_positive_int("instances", self.instances)
        _check_positive_int("sequences_per_instance", self.sequences_per_instance)
        if (
            isinstance(self.max_queue_delay_us, bool)
            or not isinstance(self.max_queue_delay_us, int)
            or (self.max_queue_delay_us < 0)
        ):
            raise StreamingConfigError(
                f"max_queue_delay_us must be a non-negative integer, got {self.max_queue_delay_us!r}"
            )
        if self.instance_kind not in ("auto", "cpu", "gpu"):
            raise StreamingConfigError(
                f"instance_kind must be 'auto', 'cpu' or 'gpu', got {self.instance_kind!r}"
            )

    @property
    def max_sequences(self) -> int:
        """Sequences served at once: ``instances * sequences_per_instance``."""
        return self.instances * self.sequences_per_instance

    @property
    def batched(self) -> bool:
        """Whether sequences share an instance through batched state (oldest strategy)."""
        return self.sequences_per_instance > 1

    @property
    def idle_timeout_us(self) -> int:
        """``max_sequence_idle_microseconds``."""
        return round(self.idle_timeout_s * 1e6)


@dataclass(frozen=True, kw_only=True)
class SnapshotterSpec:
    """A streaming input group: the update it takes and the windows it emits.

    The snapshotter keeps the last ``K`` samples of each of the ``C`` channels. Each update
    ``(1, C, s·B)`` is appended, and window ``j`` (0 ≤ j < B) of the update ends ``(j + 1)·s``
    samples after the previous update's last sample, so the last window ends at the newest
    sample. Window ``w`` of the stream (counting from 0 over all updates) covers samples
    ``[(w + 1)·s - K, (w + 1)·s)``; samples before the stream start come from the initial
    state (zeros unless an initial history is given).

    Args:
        tensors: the downstream tensors, in update channel order.
        kernel_size: ``K``, samples per window.
        stride: ``s``, samples between consecutive windows (``1 ≤ s < K``).
        batch_size: ``B``, windows per update.
        update_name: the name of the update input (the ensemble input).
    """

    tensors: tuple[StreamingTensor, ...]
    kernel_size: int
    stride: int
    batch_size: int = 1
    update_name: str = "update"

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensors", tuple(self.tensors))
        if not self.tensors:
            raise StreamingConfigError("a streaming input group needs at least one tensor, got none")
        for tensor in self.tensors:
            if not isinstance(tensor, StreamingTensor):
                raise StreamingConfigError(f"tensors must be StreamingTensor objects, got {tensor!r}")
        _check_positive_int("kernel_size", self.kernel_size)
        _check_positive_int("stride", self.stride)
        _check_positive_int("batch_size", self.batch_size)
        _check_name("update_name", self.update_name)
        if self.stride >= self.kernel_size:
            names = ", ".join(t.name for t in self.tensors)
            raise StreamingConfigError(
                f"stride {self.stride} must be smaller than the kernel length K={self.kernel_size} "
                f"of streaming tensors {names}: windows with stride >= K skip or repeat no samples and "
                "need no snapshotter"
            )
        seen: set[str] = {self.update_name}
        for tensor in self.tensors:
            if tensor.name in seen:
                raise StreamingConfigError(
                    f"streaming tensor name {tensor.name!r} collides with another tensor of the group "
                    "(names of the update and of every output must be unique)"
                )
            seen.add(tensor.name)

    @property
    def num_channels(self) -> int:
        """``C``: channels of the update (2-D tensors count one)."""
        return sum(t.width for t in self.tensors)

    @property
    def update_size(self) -> int:
        """``s·B``: new samples per channel in each update."""
        return self.stride * self.batch_size

    @property
    def update_shape(self) -> tuple[int, int, int]:
        """``(1, C, s·B)``: the shape of one update."""
        return (1, self.num_channels, self.update_size)

    @property
    def state_shape(self) -> tuple[int, int]:
        """``(C, K)``: the state kept per sequence (the newest ``K`` samples of each channel)."""
        return (self.num_channels, self.kernel_size)

    def output_shape(self, tensor: StreamingTensor) -> tuple[int, ...]:
        """``(B, C_i, K)`` or ``(B, K)``: the windows emitted for ``tensor`` per update."""
        if tensor.channels is None:
            return (self.batch_size, self.kernel_size)
        return (self.batch_size, tensor.channels, self.kernel_size)

    @property
    def channel_slices(self) -> tuple[slice, ...]:
        """Which update channels each tensor takes, in order."""
        slices, start = [], 0
        for tensor in self.tensors:
            slices.append(slice(start, start + tensor.width))
            start += tensor.width
        return tuple(slices)

    @property
    def zero_state_windows(self) -> int:
        """Windows at the start of a sequence that still contain initial-state samples.

        Window ``w`` reaches back before the stream start while ``(w + 1)·s < K``.
        """
        return math.ceil(self.kernel_size / self.stride) - 1

    @property
    def zero_state_updates(self) -> int:
        """Updates at the start of a sequence whose windows contain initial-state samples."""
        return math.ceil(self.zero_state_windows / self.batch_size)

    @property
    def traffic_reduction(self) -> float:
        """Samples sent as full windows divided by samples sent as updates (``K / s``)."""
        return self.kernel_size / self.stride

    def check_update_size(self, update_size: int) -> None:
        """Raise unless ``update_size`` samples make whole strides for this group."""
        if update_size % self.stride:
            raise StreamingConfigError(
                f"update size {update_size} of {self.update_name!r} is not a multiple of the stride "
                f"{self.stride}: each update must carry whole strides"
            )


@dataclass(frozen=True, kw_only=True)
class OnlineAveragerSpec:
    """A streaming output: per-window predictions averaged into one continuous output.

    Prediction ``w`` (of the window ending at sample ``(w + 1)·s``) covers samples
    ``[(w + 1)·s - K, (w + 1)·s)``; only its newest ``N·s`` samples are used. Each stride
    block of ``s`` output samples is the mean of the ``N`` predictions covering it, so it is
    final ``(N - 1)·s`` samples after its end: the output lags the newest input by
    :attr:`delay` samples. Each update emits ``s·B`` samples.

    Args:
        kernel_size: ``K``, samples per prediction.
        stride: ``s``.
        batch_size: ``B``, predictions per update.
        num_updates: ``N``, predictions averaged per sample (``N·s ≤ K``).
        channels: ``C`` for ``(B, C, K)`` predictions, ``None`` for ``(B, K)``.
        input_name: name of the prediction input.
        output_name: name of the continuous output (the ensemble output).
    """

    kernel_size: int
    stride: int
    batch_size: int
    num_updates: int
    channels: int | None = None
    input_name: str = "update"
    output_name: str = "output_stream"

    def __post_init__(self) -> None:
        _check_positive_int("kernel_size", self.kernel_size)
        _check_positive_int("stride", self.stride)
        _check_positive_int("batch_size", self.batch_size)
        _check_positive_int("num_updates", self.num_updates)
        if self.channels is not None:
            _check_positive_int("channels", self.channels)
        _check_name("input_name", self.input_name)
        _check_name("output_name", self.output_name)
        if self.input_name == self.output_name:
            raise StreamingConfigError(
                f"online averager input and output are both named {self.input_name!r}: names must differ"
            )
        if self.num_updates * self.stride > self.kernel_size:
            raise StreamingConfigError(
                f"num_updates {self.num_updates} * stride {self.stride} = {self.num_updates * self.stride} "
                f"exceeds the prediction length K={self.kernel_size} of {self.input_name!r}: "
                f"at most {self.kernel_size // self.stride} predictions overlap each sample"
            )

    @classmethod
    def from_shape(
        cls,
        shape: Sequence[int | None],
        *,
        stride: int,
        num_updates: int,
        batch_size: int | None = None,
        **kwargs: str,
    ) -> OnlineAveragerSpec:
        """Describe the averager from the prediction shape ``(B, K)`` or ``(B, C, K)``.

        Raises:
            StreamingConfigError: bad rank, a variable axis, or a batch size that disagrees.
        """
        shape = tuple(shape)
        name = kwargs.get("input_name", "update")
        if len(shape) not in (2, 3):
            raise StreamingConfigError(
                f"streaming output {name!r} has shape {list(shape)} of rank {len(shape)}: an online "
                "averager takes predictions of rank 2 (B, K) or 3 (B, C, K)"
            )
        if any(d is None or d < 1 for d in shape[1:]):
            raise StreamingConfigError(
                f"streaming output {name!r} has a variable non-batch axis in shape {list(shape)}: "
                "channel and kernel axes must be fixed"
            )
        batch = shape[0]
        if batch is None or batch < 1:
            if batch_size is None:
                raise StreamingConfigError(
                    f"streaming output {name!r} has a variable batch axis: pass batch_size"
                )
        elif batch_size is not None and batch_size != batch:
            raise StreamingConfigError(
                f"batch_size {batch_size} disagrees with the batch axis {batch} of streaming output {name!r}"
            )
        else:
            batch_size = batch
        return cls(
            kernel_size=int(shape[-1]),  # type: ignore[arg-type]
            stride=stride,
            batch_size=batch_size,  # type: ignore[arg-type]
            num_updates=num_updates,
            channels=int(shape[1]) if len(shape) == 3 else None,  # type: ignore[arg-type]
            **kwargs,
        )

    @property
    def update_size(self) -> int:
        """``s·B``: output samples per update."""
        return self.stride * self.batch_size

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(B, [C,] K)``."""
        if self.channels is None:
            return (self.batch_size, self.kernel_size)
        return (self.batch_size, self.channels, self.kernel_size)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """``(1, [C,] s·B)``."""
        if self.channels is None:
            return (1, self.update_size)
        return (1, self.channels, self.update_size)

    @property
    def state_length(self) -> int:
        """Samples of partial sums kept per channel: ``(N - 1)·s`` (one stride when ``N = 1``)."""
        return max(self.num_updates - 1, 1) * self.stride

    @property
    def state_shape(self) -> tuple[int, ...]:
        """``([C,] state_length)``: the state kept per sequence."""
        if self.channels is None:
            return (self.state_length,)
        return (self.channels, self.state_length)

    @property
    def delay(self) -> int:
        """Samples by which the output trails the newest input sample: ``(N - 1)·s``.

        Output sample ``i`` of a sequence (counting all updates' outputs) belongs to stream
        time ``i - delay``.
        """
        return (self.num_updates - 1) * self.stride

    @property
    def zero_state_updates(self) -> int:
        """Initial updates whose output includes samples from before the stream start."""
        return math.ceil(self.delay / self.update_size)

    def zero_state_updates_after(self, snapshotter: SnapshotterSpec) -> int:
        """Initial updates whose output depends on the snapshotter's initial state.

        Output blocks of update ``u`` average windows from ``u·B - N + 1`` on; window ``w``
        holds initial-state samples while ``w < zero_state_windows``.
        """
        first_clean_block = snapshotter.zero_state_windows + self.num_updates - 1
        return math.ceil(first_clean_block / self.batch_size)
