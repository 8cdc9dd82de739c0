"""Typed sections of a Triton model configuration.

Each section is a frozen, keyword-only dataclass that validates itself (errors name the
field and the value) and turns itself into Triton's protobuf with ``apply(config_pb)``.
:class:`~hermes.quiver.ModelConfig` builds them from keyword arguments, so most users never
construct them directly.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence

from tritonclient.grpc import model_config_pb2 as pb

from hermes.quiver._types import Dims, normalize_dims
from hermes.quiver.config.dtypes import DataType
from hermes.quiver.exceptions import ModelConfigError

__all__ = [
    "Accelerator",
    "ControlInput",
    "ControlKind",
    "DynamicBatching",
    "InstanceGroup",
    "InstanceKind",
    "Optimization",
    "SequenceBatching",
    "SequenceState",
    "SequenceStrategy",
    "Warmup",
]


def _positive(field: str, value: int, *, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ModelConfigError(f"{field}: expected an integer >= {low}, got {value!r}")


class InstanceKind(enum.StrEnum):
    """Where Triton places model instances (``instance_group.kind``)."""

    AUTO = "KIND_AUTO"
    CPU = "KIND_CPU"
    GPU = "KIND_GPU"
    MODEL = "KIND_MODEL"

    @classmethod
    def of(cls, value: str | InstanceKind) -> InstanceKind:
        """Accept ``"gpu"``, ``"KIND_GPU"`` or an InstanceKind."""
        if isinstance(value, InstanceKind):
            return value
        text = str(value).upper()
        text = text if text.startswith("KIND_") else f"KIND_{text}"
        for member in cls:
            if member.value == text:
                return member
        raise ModelConfigError(
            f"instance_group.kind: unknown value {value!r}; expected one of auto, cpu, gpu, model"
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class InstanceGroup:
    """One ``instance_group`` entry.

    Args:
        kind: where the instances run.
        count: instances per listed GPU (or in all, for CPU).
        gpus: GPU indices (relative to the server's visible devices); empty means all.
        name: optional group name, used by ``scale_instance_group(name=...)``.
    """

    kind: InstanceKind = InstanceKind.AUTO
    count: int = 1
    gpus: tuple[int, ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", InstanceKind.of(self.kind))
        _positive("instance_group.count", self.count)
        gpus = tuple(self.gpus)
        for gpu in gpus:
            _positive("instance_group.gpus", gpu, allow_zero=True)
        if gpus and self.kind not in (InstanceKind.GPU, InstanceKind.AUTO):
            raise ModelConfigError(
                f"instance_group.gpus: {gpus} given for kind {self.kind.value}; only GPU groups"
            )
        object.__setattr__(self, "gpus", gpus)

    @classmethod
    def from_proto(cls, group: pb.ModelInstanceGroup) -> InstanceGroup:
        """The typed view of one ``instance_group`` entry."""
        kind = pb.ModelInstanceGroup.Kind.Name(group.kind)
        return cls(kind=InstanceKind.of(kind), count=group.count, gpus=tuple(group.gpus), name=group.name)

    def to_proto(self, base: pb.ModelInstanceGroup | None = None) -> pb.ModelInstanceGroup:
        """The protobuf entry; fields this type does not model (profile, ...) are kept from ``base``."""
        group = pb.ModelInstanceGroup()
        if base is not None:
            group.CopyFrom(base)
        group.count = self.count
        group.kind = pb.ModelInstanceGroup.Kind.Value(self.kind.value)
        group.name = self.name
        del group.gpus[:]
        group.gpus.extend(self.gpus)
        return group


@dataclasses.dataclass(frozen=True, kw_only=True)
class DynamicBatching:
    """``dynamic_batching``: let Triton combine requests into batches.

    Args:
        preferred_batch_sizes: batch sizes the scheduler aims for.
        max_queue_delay_us: how long (microseconds) a request may wait for a batch to fill.
        preserve_ordering: return responses in request order.
    """

    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    preserve_ordering: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "preferred_batch_sizes", tuple(self.preferred_batch_sizes))
        for size in self.preferred_batch_sizes:
            _positive("dynamic_batching.preferred_batch_size", size)
        _positive("dynamic_batching.max_queue_delay_microseconds", self.max_queue_delay_us, allow_zero=True)

    def apply(self, config: pb.ModelConfig) -> None:
        config.dynamic_batching.Clear()
        config.dynamic_batching.SetInParent()
        config.dynamic_batching.preferred_batch_size.extend(self.preferred_batch_sizes)
        config.dynamic_batching.max_queue_delay_microseconds = self.max_queue_delay_us
        config.dynamic_batching.preserve_ordering = self.preserve_ordering


@dataclasses.dataclass(frozen=True, kw_only=True)
class Warmup:
    """One ``model_warmup`` sample, its inputs generated from the config's inputs.

    Args:
        name: the sample's name.
        batch_size: batch size of the warm-up request (1 for unbatched models).
        data: ``"zeros"``, ``"random"``, or ``{input name: file name}`` for files in the model's
            ``warmup/`` folder.
        count: how many times Triton runs the sample.
        shapes: sizes for the variable (-1) dims of inputs, ``{input name: dims}``.
    """

    name: str
    batch_size: int = 1
    data: str | Mapping[str, str] = "zeros"
    count: int = 1
    shapes: Mapping[str, Sequence[int]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ModelConfigError("model_warmup.name: must not be empty")
        _positive("model_warmup.batch_size", self.batch_size)
        _positive("model_warmup.count", self.count)
        if isinstance(self.data, str) and self.data not in ("zeros", "random"):
            raise ModelConfigError(
                f"model_warmup.inputs: data {self.data!r} is not 'zeros', 'random' or a {{input: file}} mapping"
            )

    def apply(self, config: pb.ModelConfig) -> None:
        if not config.input:
            raise ModelConfigError("model_warmup: the config has no inputs to generate warm-up data for")
        sample = config.model_warmup.add(name=self.name, batch_size=self.batch_size, count=self.count)
        for tensor in config.input:
            dims = list(self.shapes.get(tensor.name, tensor.dims))
            if any(d < 1 for d in dims):
                raise ModelConfigError(
                    f"model_warmup.inputs[{tensor.name}].dims: {dims} has variable dims; "
                    f"give their sizes with shapes={{{tensor.name!r}: [...]}}"
                )
            item = sample.inputs[tensor.name]
            item.data_type = tensor.data_type
            item.dims.extend(dims)
            if self.data == "zeros":
                item.zero_data = True
            elif self.data == "random":
                item.random_data = True
            else:
                assert isinstance(self.data, Mapping)
                if tensor.name not in self.data:
                    raise ModelConfigError(
                        f"model_warmup.inputs: no data file given for input {tensor.name!r}"
                    )
                item.input_data_file = self.data[tensor.name]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Accelerator:
    """An execution accelerator, e.g. ``Accelerator(name="tensorrt", parameters={"precision_mode": "FP16"})``
    or ``Accelerator(name="openvino")``."""

    name: str
    parameters: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ModelConfigError("optimization.execution_accelerators.name: must not be empty")
        object.__setattr__(self, "parameters", {str(k): str(v) for k, v in self.parameters.items()})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Optimization:
    """``optimization``: graph level, accelerators, CUDA graphs and pinned memory.

    Args:
        graph_level: framework graph optimisation level (-1 disables, 1 enables more).
        gpu_accelerators: e.g. ONNX Runtime's TensorRT provider.
        cpu_accelerators: e.g. ``openvino``.
        cuda_graphs: capture CUDA graphs (TensorRT models).
        input_pinned_memory: use pinned host memory for transfers (``None`` leaves Triton's default).
        output_pinned_memory: use pinned host memory for transfers (``None`` leaves Triton's default).
        priority: ``"default"``, ``"max"`` or ``"min"``.
    """

    graph_level: int | None = None
    gpu_accelerators: tuple[Accelerator, ...] = ()
    cpu_accelerators: tuple[Accelerator, ...] = ()
    cuda_graphs: bool = False
    input_pinned_memory: bool | None = None
    output_pinned_memory: bool | None = None
    priority: str = "default"

    def __post_init__(self) -> None:
        if self.graph_level is not None and (
            isinstance(self.graph_level, bool) or not isinstance(self.graph_level, int)
        ):
            raise ModelConfigError(f"optimization.graph.level: expected an integer, got {self.graph_level!r}")
        object.__setattr__(self, "gpu_accelerators", tuple(self.gpu_accelerators))
        object.__setattr__(self, "cpu_accelerators", tuple(self.cpu_accelerators))
        if self.priority not in ("default", "max", "min"):
            raise ModelConfigError(
                f"optimization.priority: {self.priority!r} is not 'default', 'max' or 'min'"
            )

    def apply(self, config: pb.ModelConfig) -> None:
        opt = config.optimization
        opt.Clear()
        opt.SetInParent()
        if self.graph_level is not None:
            opt.graph.level = self.graph_level
        for field, accelerators in (
            (opt.execution_accelerators.gpu_execution_accelerator, self.gpu_accelerators),
            (opt.execution_accelerators.cpu_execution_accelerator, self.cpu_accelerators),
        ):
            for acc in accelerators:
                field.add(name=acc.name).parameters.update(acc.parameters)
        if self.cuda_graphs:
            opt.cuda.graphs = True
        if self.input_pinned_memory is not None:
            opt.input_pinned_memory.enable = self.input_pinned_memory
        if self.output_pinned_memory is not None:
            opt.output_pinned_memory.enable = self.output_pinned_memory
        if self.priority != "default":
            opt.priority = pb.ModelOptimizationPolicy.ModelPriority.Value(f"PRIORITY_{self.priority.upper()}")


class SequenceStrategy(enum.StrEnum):
    """How the sequence batcher assigns sequences to batch slots."""

    DIRECT = "direct"
    OLDEST = "oldest"


class ControlKind(enum.StrEnum):
    """Which sequence signal a control input carries."""

    START = "CONTROL_SEQUENCE_START"
    END = "CONTROL_SEQUENCE_END"
    READY = "CONTROL_SEQUENCE_READY"
    CORRID = "CONTROL_SEQUENCE_CORRID"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ControlInput:
    """A ``sequence_batching.control_input``: Triton feeds the signal as an input tensor.

    Args:
        name: the model input that receives it.
        kind: START, END, READY (1 on true, 0 on false) or CORRID (the correlation id).
        dtype: tensor type (INT32 default; CORRID supports UINT64/INT64/BYTES too).
    """

    name: str
    kind: ControlKind
    dtype: DataType = DataType.INT32

    def __post_init__(self) -> None:
        if not self.name:
            raise ModelConfigError("sequence_batching.control_input.name: must not be empty")
        kind = self.kind
        if not isinstance(kind, ControlKind):
            text = str(kind).upper()
            text = text if text.startswith("CONTROL_SEQUENCE_") else f"CONTROL_SEQUENCE_{text}"
            try:
                kind = ControlKind(text)
            except ValueError:
                raise ModelConfigError(
                    f"sequence_batching.control_input[{self.name}].kind: unknown value {self.kind!r}; "
                    "expected start, end, ready or corrid"
                ) from None
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "dtype", DataType.of(self.dtype))

    def to_proto(self) -> pb.ModelSequenceBatching.ControlInput:
        kinds = pb.ModelSequenceBatching.Control.Kind
        control = pb.ModelSequenceBatching.Control(kind=kinds.Value(self.kind.value))
        if self.kind is ControlKind.CORRID:
            control.data_type = self.dtype.proto
        elif self.dtype in (DataType.FP32,):
            control.fp32_false_true.extend([0.0, 1.0])
        elif self.dtype is DataType.BOOL:
            control.bool_false_true.extend([False, True])
        elif self.dtype is DataType.INT32:
            control.int32_false_true.extend([0, 1])
        else:
            raise ModelConfigError(
                f"sequence_batching.control_input[{self.name}].data_type: {self.dtype.value} is not "
                "supported for this kind; expected INT32, FP32 or BOOL"
            )
        return pb.ModelSequenceBatching.ControlInput(name=self.name, control=[control])


@dataclasses.dataclass(frozen=True, kw_only=True)
class SequenceState:
    """An implicit state kept by Triton between the requests of one sequence.

    Args:
        input_name: the model input that receives the state.
        output_name: the model output whose value becomes the next state.
        dims: the state's shape (-1 for variable dims).
        dtype: its type.
        initial: ``"zeros"`` or a file name (in the model's ``initial_state/`` folder).
        initial_name: name of the initial state entry (default: ``input_name``).
        initial_dims: the initial state's dims when ``dims`` has variable entries.
    """

    input_name: str
    output_name: str
    dims: Dims
    dtype: DataType = DataType.FP32
    initial: str | None = "zeros"
    initial_name: str = ""
    initial_dims: Dims | None = None

    def __post_init__(self) -> None:
        if not self.input_name or not self.output_name:
            raise ModelConfigError("sequence_batching.state: input_name and output_name must not be empty")
        object.__setattr__(
            self, "dims", normalize_dims(self.dims, f"sequence_batching.state[{self.input_name}].dims")
        )
        object.__setattr__(self, "dtype", DataType.of(self.dtype))
        if self.initial_dims is not None:
            object.__setattr__(
                self,
                "initial_dims",
                normalize_dims(
                    self.initial_dims, f"sequence_batching.state[{self.input_name}].initial_state.dims"
                ),
            )
        if self.initial is not None and not self.initial:
            raise ModelConfigError(
                f"sequence_batching.state[{self.input_name}].initial_state: expected 'zeros' or a file name, got ''"
            )
        init_dims = self.initial_dims if self.initial_dims is not None else self.dims
        if self.initial is not None and any(d < 1 for d in init_dims):
            raise ModelConfigError(
                f"sequence_batching.state[{self.input_name}].initial_state.dims: {list(init_dims)} has variable "
                "dims; give initial_dims"
            )

    def to_proto(self) -> pb.ModelSequenceBatching.State:
        state = pb.ModelSequenceBatching.State(
            input_name=self.input_name,
            output_name=self.output_name,
            data_type=self.dtype.proto,
            dims=self.dims,
        )
        if self.initial is not None:
            init = state.initial_state.add(
                name=self.initial_name or self.input_name,
                data_type=self.dtype.proto,
                dims=self.initial_dims if self.initial_dims is not None else self.dims,
            )
            if self.initial == "zeros":
                init.zero_data = True
            else:
                init.data_file = self.initial
        return state


@dataclasses.dataclass(frozen=True, kw_only=True)
class SequenceBatching:
    """``sequence_batching``: route the requests of each sequence (correlation id) to one slot.

    Args:
        strategy: ``direct`` (one slot per sequence) or ``oldest`` (dynamic batches of the
            oldest sequences).
        max_sequence_idle_us: drop a sequence's slot (and state) after this many microseconds
            without a request; ``None`` keeps Triton's default (1 s).
        max_candidate_sequences: oldest only: sequences considered for a batch.
        preferred_batch_sizes: oldest only.
        max_queue_delay_us: oldest: delay to fill a batch; direct: ``max_queue_delay_microseconds``.
        control_inputs: signals fed as inputs.
        states: implicit states kept by Triton.
        iterative: Triton's iterative sequence mode.
    """

    strategy: SequenceStrategy = SequenceStrategy.DIRECT
    max_sequence_idle_us: int | None = None
    max_candidate_sequences: int | None = None
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    control_inputs: tuple[ControlInput, ...] = ()
    states: tuple[SequenceState, ...] = ()
    iterative: bool = False

    def __post_init__(self) -> None:
        try:
            object.__setattr__(
                self,
                "strategy",
                SequenceStrategy(str(getattr(self.strategy, "value", self.strategy)).lower()),
            )
        except ValueError:
            raise ModelConfigError(
                f"sequence_batching.strategy: unknown value {self.strategy!r}; expected 'direct' or 'oldest'"
            ) from None
        if self.max_sequence_idle_us is not None:
            _positive("sequence_batching.max_sequence_idle_microseconds", self.max_sequence_idle_us)
        _positive("sequence_batching.max_queue_delay_microseconds", self.max_queue_delay_us, allow_zero=True)
        object.__setattr__(self, "preferred_batch_sizes", tuple(self.preferred_batch_sizes))
        object.__setattr__(self, "control_inputs", tuple(self.control_inputs))
        object.__setattr__(self, "states", tuple(self.states))
        if self.strategy is SequenceStrategy.DIRECT:
            if self.max_candidate_sequences is not None or self.preferred_batch_sizes:
                raise ModelConfigError(
                    "sequence_batching.direct: max_candidate_sequences and preferred_batch_sizes apply to the "
                    "'oldest' strategy only"
                )
        else:
            if self.max_candidate_sequences is not None:
                _positive("sequence_batching.oldest.max_candidate_sequences", self.max_candidate_sequences)
            for size in self.preferred_batch_sizes:
                _positive("sequence_batching.oldest.preferred_batch_size", size)
        for field, names in (
            ("control_input", [c.name for c in self.control_inputs]),
            ("state.input_name", [s.input_name for s in self.states]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ModelConfigError(f"sequence_batching.{field}: duplicate names {dupes}")

    def apply(self, config: pb.ModelConfig) -> None:
        seq = config.sequence_batching
        seq.Clear()
        seq.SetInParent()
        if self.max_sequence_idle_us is not None:
            seq.max_sequence_idle_microseconds = self.max_sequence_idle_us
        if self.strategy is SequenceStrategy.DIRECT:
            seq.direct.SetInParent()
            if self.max_queue_delay_us:
                seq.direct.max_queue_delay_microseconds = self.max_queue_delay_us
        else:
            seq.oldest.SetInParent()
            if self.max_candidate_sequences is not None:
                seq.oldest.max_candidate_sequences = self.max_candidate_sequences
            seq.oldest.preferred_batch_size.extend(self.preferred_batch_sizes)
            if self.max_queue_delay_us:
                seq.oldest.max_queue_delay_microseconds = self.max_queue_delay_us
        seq.control_input.extend(c.to_proto() for c in self.control_inputs)
        seq.state.extend(s.to_proto() for s in self.states)
        if self.iterative:
            seq.iterative_sequence = True
