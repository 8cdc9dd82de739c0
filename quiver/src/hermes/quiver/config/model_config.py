"""A typed builder over Triton's ``ModelConfig`` protobuf.

:class:`ModelConfig` holds a ``tritonclient.grpc.model_config_pb2.ModelConfig`` (``.proto``,
editable directly for anything the builder lacks) and adds checked methods for the fields
users set most. Text round-trips exactly: a config read from ``config.pbtxt`` and not changed
writes back the same bytes; a changed one is written in protobuf's canonical text format.

```python
config = ModelConfig(name="net", platform=Platform.ONNX)
config.max_batch_size = 8
config.add_input("x", [3, -1], "FP32")
config.add_instance_group(kind="cpu", count=2)
config.dynamic_batching(preferred_batch_sizes=[4, 8], max_queue_delay_us=100)
print(config.to_text())
```
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from hermes.quiver._types import Dims, normalize_dims
from hermes.quiver.config.dtypes import DataType
from hermes.quiver.config.sections import (
    Accelerator,
    ControlInput,
    DynamicBatching,
    InstanceGroup,
    InstanceKind,
    Optimization,
    SequenceBatching,
    SequenceState,
    Warmup,
)
from hermes.quiver.exceptions import ModelConfigError
from hermes.quiver.platform import Platform

__all__ = ["ModelConfig", "ParameterMap", "TensorSpec"]

#: Tensor names hermes writes into configs and graphs (Triton and ONNX take them verbatim).
_TENSOR_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/\-]*$")


def check_tensor_name(kind: str, name: str) -> None:
    """Refuse a tensor name with spaces or symbols (``kind`` names the field in the message)."""
    if not _TENSOR_NAME.match(name):
        raise ModelConfigError(
            f"{kind}.name {name!r}: expected letters, digits, '_', '.', '-', '/' and ':' only (no spaces "
            "or other symbols): clients, ensembles and exported graphs address the tensor by this name"
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TensorSpec:
    """An input or output as a config declares it.

    Attributes:
        name: the tensor name.
        dims: config dims (without the batch axis of a batched model; -1 variable).
        dtype: its type.
    """

    name: str
    dims: Dims
    dtype: DataType


class ParameterMap(MutableMapping[str, str]):
    """A live view of a config's ``parameters`` as ``{key: string_value}``, in key order.

    Setting, updating or deleting through it changes the config itself.
    """

    def __init__(self, proto: pb.ModelConfig) -> None:
        self._map = proto.parameters

    def __getitem__(self, key: str) -> str:
        if key not in self._map:
            raise KeyError(key)
        return str(self._map[key].string_value)

    def __setitem__(self, key: str, value: str) -> None:
        if not key or not isinstance(key, str):
            raise ModelConfigError(f"parameters: key must be a non-empty string, got {key!r}")
        if not isinstance(value, str):
            raise ModelConfigError(
                f"parameters[{key}]: Triton stores parameters as text, got {type(value).__name__} {value!r}; "
                "convert it with str() or use set_parameter()"
            )
        self._map[key].string_value = value

    def __delitem__(self, key: str) -> None:
        if key not in self._map:
            raise KeyError(key)
        del self._map[key]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._map))

    def __len__(self) -> int:
        return len(self._map)

    def __repr__(self) -> str:
        return f"ParameterMap({dict(self)!r})"


class ModelConfig:
    """A Triton model configuration with checked setters.

    Args:
        name: the model name (the folder name in the repository).
        platform: where it runs; the python backend is written as ``backend: "python"``.
        proto: start from this protobuf instead of an empty one (copied).
        writer: called with the text by :meth:`write` (set by :class:`~hermes.quiver.Model`).
    """

    def __init__(
        self,
        *,
        name: str,
        platform: Platform | str,
        proto: pb.ModelConfig | None = None,
        writer: Callable[[str], None] | None = None,
    ) -> None:
        platform = Platform(platform)
        self._proto = pb.ModelConfig() if proto is None else copy.deepcopy(proto)
        if not name:
            raise ModelConfigError("name: must not be empty")
        self._proto.name = name
        if platform.is_backend:
            self._proto.backend = platform.value
            self._proto.platform = ""
        else:
            self._proto.platform = platform.value
        self._writer = writer
        self._source: tuple[str, pb.ModelConfig] | None = None

    # -- text ---------------------------------------------------------------------------

    @classmethod
    def from_text(
        cls, text: str, *, writer: Callable[[str], None] | None = None, source: str = "config.pbtxt"
    ) -> ModelConfig:
        """Parse ``config.pbtxt`` text.

        Raises:
            ModelConfigError: the text does not parse, or names no known platform/backend
                (the message names ``source``).
        """
        proto = pb.ModelConfig()
        try:
            text_format.Parse(text, proto)
        except text_format.ParseError as exc:
            raise ModelConfigError(f"{source}: not a valid Triton model config: {exc}") from exc
        try:
            platform = Platform.from_config(proto.platform, proto.backend)
        except ModelConfigError as exc:
            raise ModelConfigError(f"{source}: {exc}") from None
        if not proto.name:
            raise ModelConfigError(f"{source}: name: missing")
        config = cls(name=proto.name, platform=platform, proto=proto, writer=writer)
        config._proto.CopyFrom(proto)  # keep the fields exactly as written (platform and backend)
        config._source = (text, copy.deepcopy(proto))
        return config

    def to_text(self) -> str:
        """The ``config.pbtxt`` text: the original text when read and unchanged, else canonical."""
        if self._source is not None and self._source[1] == self._proto:
            return self._source[0]
        return text_format.MessageToString(self._proto)

    def write(self) -> None:
        """Write the config to its model's ``config.pbtxt``.

        Raises:
            ModelConfigError: the config belongs to no model (built standalone).
        """
        if self._writer is None:
            raise ModelConfigError("write: this config belongs to no model; use to_text() instead")
        text = self.to_text()
        self._writer(text)
        self._source = (text, copy.deepcopy(self._proto))

    def copy(self) -> ModelConfig:
        """A deep copy (not bound to a model)."""
        other = ModelConfig(name=self.name, platform=self.platform, proto=self._proto)
        other._proto.CopyFrom(self._proto)
        return other

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelConfig) and self._proto == other._proto

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ModelConfig(name={self.name!r}, platform={self.platform.value!r})"

    def __str__(self) -> str:
        return self.to_text()

    # -- identity -----------------------------------------------------------------------

    @property
    def proto(self) -> pb.ModelConfig:
        """The underlying protobuf (edit it for fields the builder does not cover)."""
        return self._proto

    @property
    def name(self) -> str:
        return self._proto.name

    @property
    def platform(self) -> Platform:
        return Platform.from_config(self._proto.platform, self._proto.backend)

    @property
    def max_batch_size(self) -> int:
        """Largest batch Triton forms; 0 means the model has no batch axis."""
        return int(self._proto.max_batch_size)

    @max_batch_size.setter
    def max_batch_size(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ModelConfigError(f"max_batch_size: expected an integer >= 0, got {value!r}")
        self._proto.max_batch_size = value

    # -- inputs and outputs -----------------------------------------------------------------

    def _add_tensor(self, kind: str, name: str, dims: Sequence[int | None], dtype: Any) -> Any:
        if not name or not isinstance(name, str):
            raise ModelConfigError(f"{kind}.name: expected a non-empty string, got {name!r}")
        check_tensor_name(kind, name)
        field = self._proto.input if kind == "input" else self._proto.output
        if any(t.name == name for t in field):
            raise ModelConfigError(f"{kind}[{name}]: already declared")
        norm = normalize_dims(dims, f"{kind}[{name}].dims")
        data_type = DataType.of(dtype)
        return field.add(name=name, data_type=data_type.proto, dims=norm)

    def add_input(
        self, name: str, dims: Sequence[int | None], dtype: Any = DataType.FP32, *, optional: bool = False
    ) -> pb.ModelInput:
        """Declare an input.

        Args:
            name: tensor name.
            dims: config dims: without the batch axis when ``max_batch_size > 0``; -1 or None
                for a variable axis.
            dtype: any type :meth:`DataType.of` accepts (``"FP32"``, ``np.int64``, ``torch.float16``).
            optional: the input may be left out of a request.
        """
        tensor = self._add_tensor("input", name, dims, dtype)
        if optional:
            tensor.optional = True
        return tensor

    def add_output(self, name: str, dims: Sequence[int | None], dtype: Any = DataType.FP32) -> pb.ModelOutput:
        """Declare an output (same arguments as :meth:`add_input`)."""
        return self._add_tensor("output", name, dims, dtype)

    def remove_input(self, name: str) -> None:
        """Remove the input ``name`` (raises ModelConfigError if absent)."""
        self._remove("input", name)

    def remove_output(self, name: str) -> None:
        """Remove the output ``name`` (raises ModelConfigError if absent)."""
        self._remove("output", name)

    def _remove(self, kind: str, name: str) -> None:
        field = self._proto.input if kind == "input" else self._proto.output
        for i, tensor in enumerate(field):
            if tensor.name == name:
                del field[i]
                return
        raise ModelConfigError(f"{kind}[{name}]: not declared; declared are {[t.name for t in field]}")

    @property
    def inputs(self) -> list[TensorSpec]:
        """The declared inputs, in order."""
        return [
            TensorSpec(name=t.name, dims=tuple(t.dims), dtype=DataType.from_proto(t.data_type))
            for t in self._proto.input
        ]

    @property
    def outputs(self) -> list[TensorSpec]:
        """The declared outputs, in order."""
        return [
            TensorSpec(name=t.name, dims=tuple(t.dims), dtype=DataType.from_proto(t.data_type))
            for t in self._proto.output
        ]

    # -- instance groups ------------------------------------------------------------------

    def add_instance_group(
        self,
        *,
        kind: InstanceKind | str = InstanceKind.AUTO,
        count: int = 1,
        gpus: int | Sequence[int] | None = None,
        name: str = "",
    ) -> pb.ModelInstanceGroup:
        """Add an ``instance_group``; ``gpus=2`` means GPUs 0 and 1."""
        gpu_list: tuple[int, ...] = tuple(range(gpus)) if isinstance(gpus, int) else tuple(gpus or ())
        group = InstanceGroup(kind=InstanceKind.of(kind), count=count, gpus=gpu_list, name=name)
        if name and any(g.name == name for g in self._proto.instance_group):
            raise ModelConfigError(
                f"instance_group[{name}]: a group of that name exists; use scale_instance_group"
            )
        self._proto.instance_group.append(group.to_proto())
        return self._proto.instance_group[-1]

    @property
    def instance_groups(self) -> list[InstanceGroup]:
        """Every ``instance_group`` entry, typed (a copy: change groups with the methods below)."""
        return [InstanceGroup.from_proto(g) for g in self._proto.instance_group]

    def _select_group(self, name: str | None, index: int | None) -> pb.ModelInstanceGroup:
        groups = self._proto.instance_group
        if name is not None and index is not None:
            raise ModelConfigError("instance_group: give name or index, not both")
        if name is not None:
            matches = [g for g in groups if g.name == name]
            if not matches:
                raise ModelConfigError(
                    f"instance_group[{name}]: no group of that name; groups are {[g.name for g in groups]}"
                )
            return matches[0]
        if index is None:
            if len(groups) != 1:
                raise ModelConfigError(
                    f"instance_group: {len(groups)} groups; choose one with name= or index="
                )
            index = 0
        if isinstance(index, bool) or not isinstance(index, int) or not -len(groups) <= index < len(groups):
            raise ModelConfigError(f"instance_group[{index!r}]: no such group; the config has {len(groups)}")
        return groups[index]

    def scale_instance_group(self, count: int, *, name: str | None = None, index: int | None = None) -> None:
        """Set ``count`` of one group, chosen by ``name`` or ``index`` (default: the only group).

        Raises:
            ModelConfigError: no such group, several groups and none chosen, or a bad count.
        """
        self.set_instance_group(name=name, index=index, count=count)

    def set_instance_group(
        self,
        *,
        name: str | None = None,
        index: int | None = None,
        kind: InstanceKind | str | None = None,
        count: int | None = None,
        gpus: int | Sequence[int] | None = None,
    ) -> InstanceGroup:
        """Change the kind, count or GPUs of an existing group, chosen by ``name`` or ``index``.

        ``config.set_instance_group(kind="cpu")`` moves the only group to the CPU; its GPU list
        is cleared (Triton accepts GPUs only for GPU groups). Arguments left ``None`` keep
        their value.

        Returns:
            The group as it is now.

        Raises:
            ModelConfigError: no such group, several groups and none chosen, or a bad value.
        """
        target = self._select_group(name, index)
        current = InstanceGroup.from_proto(target)
        new_kind = current.kind if kind is None else InstanceKind.of(kind)
        if gpus is None:
            gpu_list = current.gpus if new_kind in (InstanceKind.GPU, InstanceKind.AUTO) else ()
        else:
            gpu_list = tuple(range(gpus)) if isinstance(gpus, int) else tuple(gpus)
        group = InstanceGroup(
            kind=new_kind,
            count=current.count if count is None else count,
            gpus=gpu_list,
            name=current.name,
        )
        target.CopyFrom(group.to_proto(base=target))
        return group

    def move_instance_groups_to_cpu(self) -> list[str]:
        """Turn every ``KIND_GPU`` group into a ``KIND_CPU`` group of the same count.

        What ``serve(..., instance_kind="cpu")`` does to a served copy of the config.

        Returns:
            A description of each group changed (empty when none was on the GPU).
        """
        changed = []
        for i, proto in enumerate(self._proto.instance_group):
            if proto.kind != pb.ModelInstanceGroup.Kind.KIND_GPU:
                continue
            label = proto.name or f"#{i}"
            gpus = f" on GPUs {list(proto.gpus)}" if proto.gpus else ""
            self.set_instance_group(index=i, kind=InstanceKind.CPU)
            changed.append(
                f"{self.name} instance group {label}: KIND_GPU{gpus} -> KIND_CPU (count {proto.count})"
            )
        return changed

    def ensure_instance_group(
        self,
        *,
        count: int,
        kind: InstanceKind | str = InstanceKind.AUTO,
        gpus: int | Sequence[int] | None = None,
        name: str = "",
    ) -> pb.ModelInstanceGroup:
        """Make sure a group exists with ``count`` instances: scale the group named ``name``
        (or the only group, when no name is given) or add one. Idempotent."""
        groups = self._proto.instance_group
        target = None
        if name:
            target = next((g for g in groups if g.name == name), None)
        elif len(groups) == 1:
            target = groups[0]
        elif len(groups) > 1:
            raise ModelConfigError(f"instance_group: {len(groups)} groups; name the one to ensure")
        if target is None:
            return self.add_instance_group(kind=kind, count=count, gpus=gpus, name=name)
        InstanceGroup(count=count)
        target.count = count
        return target

    # -- scheduling -------------------------------------------------------------------------

    def dynamic_batching(
        self,
        *,
        preferred_batch_sizes: Iterable[int] = (),
        max_queue_delay_us: int = 0,
        preserve_ordering: bool = False,
    ) -> None:
        """Enable dynamic batching (requires ``max_batch_size > 0``)."""
        section = DynamicBatching(
            preferred_batch_sizes=tuple(preferred_batch_sizes),
            max_queue_delay_us=max_queue_delay_us,
            preserve_ordering=preserve_ordering,
        )
        if self.max_batch_size == 0:
            raise ModelConfigError("dynamic_batching: needs max_batch_size > 0; set max_batch_size first")
        for size in section.preferred_batch_sizes:
            if size > self.max_batch_size:
                raise ModelConfigError(
                    f"dynamic_batching.preferred_batch_size: {size} exceeds max_batch_size {self.max_batch_size}"
                )
        section.apply(self._proto)

    def sequence_batching(
        self,
        *,
        strategy: str = "direct",
        max_sequence_idle_us: int | None = None,
        max_candidate_sequences: int | None = None,
        preferred_batch_sizes: Iterable[int] = (),
        max_queue_delay_us: int = 0,
        control_inputs: Iterable[ControlInput] = (),
        states: Iterable[SequenceState] = (),
        iterative: bool = False,
    ) -> None:
        """Set ``sequence_batching`` (replacing any present); see :class:`SequenceBatching`."""
        SequenceBatching(
            strategy=strategy,  # type: ignore[arg-type]
            max_sequence_idle_us=max_sequence_idle_us,
            max_candidate_sequences=max_candidate_sequences,
            preferred_batch_sizes=tuple(preferred_batch_sizes),
            max_queue_delay_us=max_queue_delay_us,
            control_inputs=tuple(control_inputs),
            states=tuple(states),
            iterative=iterative,
        ).apply(self._proto)

    def add_control_input(self, name: str, kind: str, dtype: Any = DataType.INT32) -> None:
        """Add a control input to the present ``sequence_batching`` (raises if none)."""
        self._require_sequence_batching("control_input")
        control = ControlInput(name=name, kind=kind, dtype=dtype)  # type: ignore[arg-type]
        if any(c.name == name for c in self._proto.sequence_batching.control_input):
            raise ModelConfigError(f"sequence_batching.control_input[{name}]: already declared")
        self._proto.sequence_batching.control_input.append(control.to_proto())

    def add_state(
        self,
        input_name: str,
        output_name: str,
        dims: Sequence[int | None],
        dtype: Any = DataType.FP32,
        *,
        initial: str | None = "zeros",
        initial_name: str = "",
        initial_dims: Sequence[int | None] | None = None,
    ) -> None:
        """Add an implicit state to the present ``sequence_batching``; see :class:`SequenceState`."""
        self._require_sequence_batching("state")
        state = SequenceState(
            input_name=input_name,
            output_name=output_name,
            dims=tuple(-1 if d is None else d for d in dims),
            dtype=DataType.of(dtype),
            initial=initial,
            initial_name=initial_name,
            initial_dims=None
            if initial_dims is None
            else tuple(-1 if d is None else d for d in initial_dims),
        )
        if any(s.input_name == input_name for s in self._proto.sequence_batching.state):
            raise ModelConfigError(f"sequence_batching.state[{input_name}]: already declared")
        self._proto.sequence_batching.state.append(state.to_proto())

    def _require_sequence_batching(self, what: str) -> None:
        if not self._proto.HasField("sequence_batching"):
            raise ModelConfigError(f"sequence_batching.{what}: call sequence_batching(...) first")

    # -- versions, warm-up, optimisation, parameters, cache -------------------------------

    def version_policy(
        self, *, latest: int | None = None, specific: Iterable[int] | None = None, all: bool = False
    ) -> None:
        """Which versions Triton serves: the ``latest`` N, ``specific`` ones, or ``all``."""
        chosen = [latest is not None, specific is not None, bool(all)]
        if sum(chosen) != 1:
            raise ModelConfigError("version_policy: give exactly one of latest=, specific= or all=True")
        policy = self._proto.version_policy
        policy.Clear()
        if latest is not None:
            if isinstance(latest, bool) or not isinstance(latest, int) or latest < 1:
                raise ModelConfigError(
                    f"version_policy.latest.num_versions: expected an integer >= 1, got {latest!r}"
                )
            policy.latest.num_versions = latest
        elif specific is not None:
            versions = list(specific)
            if not versions or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in versions):
                raise ModelConfigError(
                    f"version_policy.specific.versions: expected integers >= 1, got {versions!r}"
                )
            policy.specific.versions.extend(versions)
        else:
            policy.all.SetInParent()

    def add_warmup(
        self,
        name: str,
        *,
        batch_size: int = 1,
        data: str | Mapping[str, str] = "zeros",
        count: int = 1,
        shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        """Add a warm-up sample whose inputs are generated from the declared inputs; see :class:`Warmup`."""
        if self.max_batch_size and batch_size > self.max_batch_size:
            raise ModelConfigError(
                f"model_warmup.batch_size: {batch_size} exceeds max_batch_size {self.max_batch_size}"
            )
        Warmup(name=name, batch_size=batch_size, data=data, count=count, shapes=dict(shapes or {})).apply(
            self._proto
        )

    def optimization(
        self,
        *,
        graph_level: int | None = None,
        gpu_accelerators: Iterable[Accelerator] = (),
        cpu_accelerators: Iterable[Accelerator] = (),
        cuda_graphs: bool = False,
        input_pinned_memory: bool | None = None,
        output_pinned_memory: bool | None = None,
        priority: str = "default",
    ) -> None:
        """Set ``optimization`` (replacing any present); see :class:`Optimization`."""
        Optimization(
            graph_level=graph_level,
            gpu_accelerators=tuple(gpu_accelerators),
            cpu_accelerators=tuple(cpu_accelerators),
            cuda_graphs=cuda_graphs,
            input_pinned_memory=input_pinned_memory,
            output_pinned_memory=output_pinned_memory,
            priority=priority,
        ).apply(self._proto)

    @property
    def parameters(self) -> ParameterMap:
        """The ``parameters`` map as text, live: ``config.parameters["k"] = "v"`` changes the config."""
        return ParameterMap(self._proto)

    def set_parameter(self, key: str, value: Any) -> None:
        """Set ``parameters[key]`` (the value is stored as text)."""
        self.parameters[key] = str(value)

    def response_cache(self, enable: bool = True) -> None:
        """Cache responses for identical requests (the server needs ``--cache-config``)."""
        self._proto.response_cache.enable = bool(enable)
