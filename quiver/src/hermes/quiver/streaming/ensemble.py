"""Build streaming models into an ensemble: :func:`add_streaming_inputs`, :func:`add_streaming_output`.

```
ensemble input <key> (1, C, s·B) ─▶ snapshotter ─▶ (B, C_i, K) ─▶ network ─▶ (B, [C,] K)
                                    (state: C*K)                              │
ensemble output <key> (1, [C,] s·B) ◀── online averager (state: [C,] (N-1)·s) ◀┘
```

Everything is validated before anything is written, so bad input fails when the ensemble
is built, not when it is served.

Two serving rules follow from Triton's ensemble scheduler (both measured on the local server):

* **Order.** Triton hands a step's result to the next step as soon as it is ready, so when a
  stateless member between the snapshotter and the averager runs several instances, two
  requests of one sequence can reach the averager out of order (measured: wrong averages, or
  "must specify the START flag"). :func:`add_streaming_output` therefore sets
  ``dynamic_batching { preserve_ordering: true }`` on the model that produces the averaged
  tensor, so its responses leave in request order and many requests per sequence may be in
  flight. A chain of several stateless models before the averager needs the same on each.
* **Slots.** Each stateful member holds ``instances * sequences_per_instance`` sequences.
  With more concurrent sequences than that, two members can give their slots to different
  sequences and the ensemble stalls: keep concurrent sequences within ``max_sequences``
  (recorded in the ensemble parameters). Each helper records what it built in the ensemble's
``parameters`` as a :class:`~hermes.quiver.StreamInputRecord` / :class:`~hermes.quiver.StreamOutputRecord`
(``hermes.streaming_input.<key>`` / ``hermes.streaming_output.<key>``), so clients can
discover the strides, batch sizes and start-up lengths.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import numpy.typing as npt

from hermes.quiver.config.streaming_record import StreamingRecords, StreamInputRecord, StreamOutputRecord
from hermes.quiver.exceptions import StreamingConfigError
from hermes.quiver.streaming.models import (
    OnlineAveragerModel,
    SnapshotterModel,
    write_online_averager,
    write_snapshotter,
)
from hermes.quiver.streaming.specs import (
    OnlineAveragerSpec,
    SequenceOptions,
    SnapshotterSpec,
    StreamingPlatform,
    StreamingTensor,
)

if TYPE_CHECKING:
    from hermes.quiver.ensemble import EnsembleModel
    from hermes.quiver.model import ExposedTensor, Model

__all__ = [
    "SequenceKeywords",
    "StreamingInputGroup",
    "StreamingInputOptions",
    "StreamingOutput",
    "StreamingOutputOptions",
    "add_streaming_inputs",
    "add_streaming_output",
    "sequence_options",
]

logger = logging.getLogger("hermes.quiver.streaming")


@dataclass(frozen=True)
class StreamingInputGroup:
    """What :func:`add_streaming_inputs` built.

    Attributes:
        model: the snapshotter model in the repository.
        input: the ensemble input that takes the updates ``(1, C, s·B)``.
        snapshotter: shapes, names and start-up numbers of the snapshotter.
    """

    model: Model
    input: ExposedTensor
    snapshotter: SnapshotterModel

    @property
    def update_shape(self) -> tuple[int, int, int]:
        """``(1, C, s·B)``: the shape of each update."""
        return self.snapshotter.spec.update_shape

    @property
    def zero_state_updates(self) -> int:
        """Updates at a sequence start whose windows still hold the zero initial state."""
        return self.snapshotter.zero_state_updates


@dataclass(frozen=True)
class StreamingOutput:
    """What :func:`add_streaming_output` built.

    Attributes:
        model: the online averager model in the repository.
        output: the ensemble output that returns ``(1, [C,] s·B)`` per update.
        averager: shapes, names, delay and start-up numbers of the averager.
    """

    model: Model
    output: ExposedTensor
    averager: OnlineAveragerModel

    @property
    def delay(self) -> int:
        """Samples by which the output trails the newest input sample: ``(N - 1)·s``."""
        return self.averager.delay

    @property
    def zero_state_updates(self) -> int:
        """Updates at a sequence start whose output covers times before the stream start."""
        return self.averager.zero_state_updates


class SequenceKeywords(TypedDict, total=False):
    """The :class:`SequenceOptions` fields a streaming helper takes as keywords."""

    idle_timeout_s: float
    instances: int
    sequences_per_instance: int
    max_queue_delay_us: int
    instance_kind: str
    streams_per_gpu: int  # the predecessor's name of ``instances``


class StreamingInputOptions(SequenceKeywords, total=False):
    """The keywords of :func:`add_streaming_inputs` after its positional arguments."""

    update_size: int | None
    key: str | None
    output_keys: Sequence[str] | None
    platform: StreamingPlatform | str
    initial_state: npt.ArrayLike | None


class StreamingOutputOptions(SequenceKeywords, total=False):
    """The keywords of :func:`add_streaming_output` after its positional arguments."""

    batch_size: int | None
    key: str | None
    platform: StreamingPlatform | str
    initial_state: npt.ArrayLike | None


_SEQUENCE_FIELDS = (
    "idle_timeout_s",
    "instances",
    "sequences_per_instance",
    "max_queue_delay_us",
    "instance_kind",
)


def sequence_options(options: Mapping[str, Any], allowed: Iterable[str] = ()) -> SequenceOptions:
    """The :class:`SequenceOptions` among ``options``; other keys must be in ``allowed``.

    Raises:
        TypeError: an unknown keyword (names it and the options there are).
    """
    kwargs = dict(options)
    if "streams_per_gpu" in kwargs:  # the predecessor's name
        if "instances" in kwargs:
            raise StreamingConfigError("pass instances or streams_per_gpu, not both")
        kwargs["instances"] = kwargs.pop("streams_per_gpu")
    unknown = sorted(set(kwargs) - set(_SEQUENCE_FIELDS) - set(allowed))
    if unknown:
        raise TypeError(
            f"unexpected keyword arguments {unknown}; streaming options are {sorted(_SEQUENCE_FIELDS)}"
        )
    return SequenceOptions(**{k: kwargs[k] for k in _SEQUENCE_FIELDS if k in kwargs})


def _quiver_platform(platform: StreamingPlatform) -> Any:
    from hermes.quiver.platform import Platform

    return Platform(platform.value)


def _check_model_name(ensemble: EnsembleModel, name: str | None, default: str) -> tuple[str, bool]:
    """The model name to add, and whether the repository may pick a free suffix."""
    if name is None:
        return default, True
    if name in ensemble.repository:
        raise StreamingConfigError(
            f"model name {name!r} collides with a model in the repository {ensemble.repository.root}: "
            "streaming models need a new name"
        )
    return name, False


def _check_key(ensemble: EnsembleModel, key: str, what: str) -> None:
    if key in ensemble._keys():
        raise StreamingConfigError(
            f"{what} {key!r} collides with a tensor of ensemble {ensemble.name!r}: ensemble tensor names "
            "must be unique"
        )


def _install(
    ensemble: EnsembleModel, name: str, force: bool, platform: StreamingPlatform, write: Any
) -> tuple[Model, Any]:
    """Add model ``name`` to the repository and fill it with what ``write(directory)`` exports."""
    repository = ensemble.repository
    model = repository.add(name, platform=_quiver_platform(platform), force=force)
    try:
        with tempfile.TemporaryDirectory(prefix="hermes-streaming-") as scratch:
            directory = Path(scratch) / model.name
            written = write(directory)
            for entry in sorted(directory.iterdir()):
                if entry.is_dir():
                    model.storage.put_dir(entry, model.name, entry.name)
        model.config.proto.CopyFrom(written.config)
        model.config.write()
    except BaseException:
        repository.remove(model)
        raise
    return model, written


def add_streaming_inputs(
    ensemble: EnsembleModel,
    inputs: ExposedTensor | Sequence[ExposedTensor],
    stride: int,
    batch_size: int | None = 1,
    name: str | None = None,
    **options: Unpack[StreamingInputOptions],
) -> StreamingInputGroup:
    """Feed ``inputs`` from a new snapshotter whose update is an ensemble input.

    Args:
        ensemble: the ensemble to extend.
        inputs: downstream tensors ``(B, C_i, K)`` or ``(B, K)`` sharing ``K``; their
            channels are stacked in this order in the update.
        stride: ``s``, samples between consecutive windows (``s < K``).
        batch_size: ``B``, windows per update (default 1).
        name: the snapshotter model's name; default ``"snapshotter"`` (``snapshotter_N`` if taken).
        **options: keywords of :class:`StreamingInputOptions`:

            * ``update_size``: alternatively, samples per update (``s·B``); a multiple of ``stride``.
            * ``key``: the ensemble input name (default ``"<model name>_update"``).
            * ``output_keys``: ensemble names of the windows, one per input (default ``"<model>.<input>"``).
            * ``platform``: ``"onnx"`` (default) or ``"torchscript"``.
            * ``initial_state``: ``(C, K)`` samples preceding every sequence; zeros if None.
            * :class:`SequenceOptions` fields: ``idle_timeout_s`` (default 60), ``instances``
              (alias ``streams_per_gpu``), ``sequences_per_instance``, ``max_queue_delay_us``,
              ``instance_kind``.

    Returns:
        The snapshotter model, the ensemble input and the start-up numbers.

    Raises:
        StreamingConfigError: stride ≥ K, K differing across tensors, an update size that is
            not a multiple of the stride, an unsupported rank, a batch axis that is not ``B``,
            or a colliding name (each names the tensor and the rule). Any failure rolls the
            ensemble's build back (see :func:`add_streaming_output`).
        TypeError: an unknown keyword.
    """
    with _all_or_nothing(ensemble):
        return _add_streaming_inputs(ensemble, inputs, stride, batch_size, name, options)


def _add_streaming_inputs(
    ensemble: EnsembleModel,
    inputs: ExposedTensor | Sequence[ExposedTensor],
    stride: int,
    batch_size: int | None,
    name: str | None,
    options: StreamingInputOptions,
) -> StreamingInputGroup:
    sequence = sequence_options(options, allowed=StreamingInputOptions.__annotations__)
    platform = StreamingPlatform.parse(options.get("platform", StreamingPlatform.ONNX))
    tensors = [inputs] if not isinstance(inputs, Sequence) else list(inputs)
    if not tensors:
        raise StreamingConfigError("add_streaming_inputs needs at least one input tensor, got none")
    batch = _windows_per_update(tensors, stride, batch_size, options.get("update_size"))
    model_name, force = _check_model_name(ensemble, name, "snapshotter")
    described, kernel = _describe_inputs(tensors, batch, sequence)
    keys = _window_keys(options.get("output_keys"), described)
    update_key = options.get("key") or f"{model_name}_update"
    spec = SnapshotterSpec(
        tensors=tuple(
            StreamingTensor(name=k, channels=t.channels) for k, t in zip(keys, described, strict=True)
        ),
        kernel_size=kernel,
        stride=stride,
        batch_size=batch,
        update_name=update_key,
    )
    _check_key(ensemble, update_key, "streaming update name")
    for k in keys:
        _check_key(ensemble, k, "streaming window name")
    write = functools.partial(
        write_snapshotter,
        spec=spec,
        platform=platform,
        sequence=sequence,
        initial_state=options.get("initial_state"),
    )
    model, snapshotter = _install(ensemble, model_name, force, platform, write)
    with _unwired_on_failure(ensemble, model):
        exposed = ensemble.add_input(model.inputs[snapshotter.update_input], key=update_key)
        for tensor, out_key in zip(tensors, keys, strict=True):
            ensemble.pipe(model.outputs[snapshotter.outputs[out_key]], tensor, key=out_key)
    record = StreamInputRecord(
        name=update_key, model=model.name, kernel_size=spec.kernel_size, stride=stride, batch_size=batch,
        channels=tuple(t.channels for t in described), tensors=tuple(t.name for t in described),
        zero_state_updates=snapshotter.zero_state_updates, max_sequences=sequence.max_sequences,
    )  # fmt: skip
    ensemble.config.parameters.update([record.to_parameter()])
    logger.info("streaming input %s: %s feeds %s", update_key, model.name, list(record.tensors))
    return StreamingInputGroup(model=model, input=exposed, snapshotter=snapshotter)


def _windows_per_update(
    tensors: Sequence[ExposedTensor], stride: int, batch_size: int | None, update_size: int | None
) -> int:
    """``B``: from ``batch_size``, or from ``update_size / stride`` (which must divide)."""
    if update_size is not None:
        _check_positive(update_size, "update_size")
        _check_positive(stride, "stride")
        if update_size % stride:
            names = ", ".join(f"{t.model.name}.{t.name}" for t in tensors)
            raise StreamingConfigError(
                f"update size {update_size} for streaming tensors {names} is not a multiple of the stride "
                f"{stride}: each update must carry whole strides"
            )
        derived = update_size // stride
        if batch_size not in (None, 1, derived):
            raise StreamingConfigError(
                f"batch_size {batch_size} disagrees with update_size {update_size} / stride {stride} = {derived}"
            )
        batch_size = derived
    batch = 1 if batch_size is None else batch_size
    _check_positive(batch, "batch_size")
    return batch


def _describe_inputs(
    tensors: Sequence[ExposedTensor], batch: int, sequence: SequenceOptions
) -> tuple[list[StreamingTensor], int]:
    """Each downstream tensor as a :class:`StreamingTensor` named ``model.input``, checked, and ``K``."""
    seen: set[str] = set()
    kernel: int | None = None
    described = []
    for tensor in tensors:
        label = f"{tensor.model.name}.{tensor.name}"
        if label in seen:
            raise StreamingConfigError(
                f"streaming tensor {label} is given twice: each tensor takes one stream"
            )
        seen.add(label)
        shape = _window_shape(tensor, sequence)
        described.append(StreamingTensor.from_shape(label, shape, kernel))
        kernel = int(shape[-1])  # type: ignore[arg-type]
        _check_window_batch(tensor, label, shape, batch, sequence)
    assert kernel is not None
    return described, kernel


def _window_shape(tensor: ExposedTensor, sequence: SequenceOptions) -> tuple[int | None, ...]:
    """The shape of one window batch: without the model's batch axis when it carries sequences."""
    shape = tuple(tensor.shape)
    if sequence.batched and tensor.model.config.max_batch_size > 0:
        return shape[1:]  # the model's batch axis carries the sequences: (S, B, C, K)
    return shape


def _check_window_batch(
    tensor: ExposedTensor, label: str, shape: tuple[int | None, ...], batch: int, sequence: SequenceOptions
) -> None:
    if shape and shape[0] is not None and shape[0] != batch:
        hint = (
            f"; with sequences_per_instance {sequence.sequences_per_instance} the model's batch axis carries the "
            "sequences, so it must take (sequences, B, C, K): put a network that takes (N, C, K) behind "
            f"add_sequence_axis({tensor.model.name}, batch_size={batch})"
            if sequence.batched and tensor.model.config.max_batch_size > 0
            else ""
        )
        raise StreamingConfigError(
            f"streaming tensor {label} has batch axis {shape[0]} but the snapshotter emits batch_size={batch} "
            f"windows per update: they must agree{hint}"
        )
    limit = tensor.model.config.max_batch_size
    if shape and shape[0] is None and limit and batch > limit:
        raise StreamingConfigError(
            f"batch_size {batch} exceeds max_batch_size {limit} of {tensor.model.name} (input {tensor.name})"
        )
    if sequence.batched and limit == 0:
        raise StreamingConfigError(
            f"sequences_per_instance {sequence.sequences_per_instance} batches sequences along a leading axis, "
            f"but {label} has no batch axis for it (shape {list(shape)}); use sequences_per_instance=1 or a "
            "downstream model that takes (sequences, B, C, K) (add_sequence_axis writes one from an ONNX network "
            "with a variable batch axis)"
        )


def _window_keys(output_keys: Sequence[str] | None, described: Sequence[StreamingTensor]) -> list[str]:
    if isinstance(output_keys, str):
        raise StreamingConfigError(
            f"output_keys must be a list of names, one per streaming tensor, got the string {output_keys!r}; "
            f"write output_keys=[{output_keys!r}]"
        )
    keys = list(output_keys) if output_keys is not None else [t.name for t in described]
    if len(keys) != len(described):
        raise StreamingConfigError(
            f"output_keys has {len(keys)} names for {len(described)} streaming tensors"
        )
    return keys


@contextmanager
def _unwired_on_failure(ensemble: EnsembleModel, model: Model) -> Iterator[None]:
    """Remove ``model`` and its steps from the ensemble when wiring it fails."""
    try:
        yield
    except Exception:
        _unwire(ensemble, model.name)
        ensemble.repository.remove(model)
        raise


def add_streaming_output(
    ensemble: EnsembleModel,
    output: ExposedTensor,
    stride: int,
    num_updates: int,
    name: str | None = None,
    **options: Unpack[StreamingOutputOptions],
) -> StreamingOutput:
    """Average ``output`` online into a continuous ensemble output.

    Args:
        ensemble: the ensemble to extend.
        output: per-window predictions ``(B, K)`` or ``(B, C, K)``, one per window of stride ``s``.
        stride: ``s``, samples between the windows' ends.
        num_updates: ``N``, predictions averaged into each sample (``N·s ≤ K``); the output
            trails the input by ``(N - 1)·s`` samples.
        name: the averager model's name; default ``"aggregator"`` (``aggregator_N`` if taken).
        **options: keywords of :class:`StreamingOutputOptions`:

            * ``batch_size``: ``B``, needed when the batch axis of ``output`` is variable.
            * ``key``: the ensemble output name (default ``"<name>_stream"``).
            * ``platform``: ``"onnx"`` (default) or ``"torchscript"``.
            * ``initial_state``: ``([C,] (N - 1)·s)`` pending sums to start from; zeros if None.
            * :class:`SequenceOptions` fields, as for :func:`add_streaming_inputs`.

    Returns:
        The averager model, the ensemble output and its delay.

    Raises:
        StreamingConfigError: an unsupported rank, ``N·s > K``, a variable axis, a stride or
            batch size differing from the streaming input that feeds ``output``'s model, or a
            colliding name.
        TypeError: an unknown keyword.

    Building an ensemble is all-or-nothing: when a streaming helper or the ensemble's first
    ``export_version()`` fails, the streaming models the ensemble's build added and the
    unexported ensemble itself are removed from the repository (an ensemble exported
    before goes back to its exported config), so neither a rerun nor ``serve(repo)`` meets a
    half-built ensemble. The exception's notes list what was removed.
    """
    with _all_or_nothing(ensemble):
        return _add_streaming_output(ensemble, output, stride, num_updates, name, options)


def _add_streaming_output(
    ensemble: EnsembleModel,
    output: ExposedTensor,
    stride: int,
    num_updates: int,
    name: str | None,
    options: StreamingOutputOptions,
) -> StreamingOutput:
    sequence = sequence_options(options, allowed=StreamingOutputOptions.__annotations__)
    platform = StreamingPlatform.parse(options.get("platform", StreamingPlatform.ONNX))
    label = f"{output.model.name}.{output.name}"
    model_name, force = _check_model_name(ensemble, name, "aggregator")
    out_key = options.get("key") or f"{model_name}_stream"
    spec = OnlineAveragerSpec.from_shape(
        _window_shape(output, sequence), stride=stride, num_updates=num_updates,
        batch_size=options.get("batch_size"), input_name=_safe(output.name), output_name=_safe(out_key),
    )  # fmt: skip
    if sequence.batched and output.model.config.max_batch_size == 0:
        raise StreamingConfigError(
            f"sequences_per_instance {sequence.sequences_per_instance} needs {label} to carry a leading "
            "sequence axis; use sequences_per_instance=1"
        )
    _check_matches_input(ensemble, output, stride, spec.batch_size)
    _check_key(ensemble, out_key, "streaming output name")
    write = functools.partial(
        write_online_averager,
        spec=spec,
        platform=platform,
        sequence=sequence,
        initial_state=options.get("initial_state"),
    )
    model, averager = _install(ensemble, model_name, force, platform, write)
    with _unwired_on_failure(ensemble, model):
        ensemble.pipe(output, model.inputs[averager.input])
        exposed = ensemble.add_output(model.outputs[averager.output], key=out_key)
    _preserve_order(output.model)
    record = StreamOutputRecord(
        name=out_key, model=model.name, stride=stride, batch_size=spec.batch_size, num_updates=num_updates,
        delay=averager.delay, zero_state_updates=averager.zero_state_updates, max_sequences=sequence.max_sequences,
    )  # fmt: skip
    ensemble.config.parameters.update([record.to_parameter()])
    logger.info(
        "streaming output %s: %s averages %s over %d updates", out_key, model.name, label, num_updates
    )
    return StreamingOutput(model=model, output=exposed, averager=averager)


def _preserve_order(model: Model) -> None:
    """Make a stateless member answer in request order, whatever its instance count."""
    proto = model.config.proto
    if proto.HasField("sequence_batching") or (
        proto.HasField("dynamic_batching") and proto.dynamic_batching.preserve_ordering
    ):
        return
    proto.dynamic_batching.preserve_ordering = True
    model.config.write()
    logger.info(
        "%s: dynamic_batching.preserve_ordering set so the averager sees updates in order", model.name
    )


def _safe(name: str) -> str:
    """A tensor name the spec accepts (ensemble keys may hold characters ONNX names avoid)."""
    return "".join(c if c.isalnum() or c in "_.-/" else "_" for c in name) or "tensor"


def _check_positive(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise StreamingConfigError(f"{what} must be a positive integer, got {value!r}")


def _unwire(ensemble: EnsembleModel, model_name: str) -> None:
    """Drop the steps of ``model_name`` (after a failed wiring) and the ensemble tensors only they used."""
    steps = ensemble.config.proto.ensemble_scheduling.step
    removed = [s for s in steps if s.model_name == model_name]
    keys = {k for s in removed for k in list(s.input_map.values()) + list(s.output_map.values())}
    for step in removed:
        steps.remove(step)
    still = {k for s in steps for k in list(s.input_map.values()) + list(s.output_map.values())}
    for field in (ensemble.config.proto.input, ensemble.config.proto.output):
        for tensor in [t for t in field if t.name in keys - still]:
            field.remove(tensor)
    for step in steps:
        for k in [k for k, v in step.input_map.items() if v in keys]:
            del step.input_map[k]


def _upstream_inputs(ensemble: EnsembleModel, model_name: str) -> list[StreamInputRecord]:
    """The records of every streaming input whose windows reach ``model_name``."""
    records = StreamingRecords.from_parameters(ensemble.config.parameters).inputs
    steps = list(ensemble.config.proto.ensemble_scheduling.step)
    producer = {key: step.model_name for step in steps for key in step.output_map.values()}
    found: list[StreamInputRecord] = []
    seen: set[str] = set()
    todo = [model_name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        found += [r for r in records if r.model == current]
        for step in steps:
            if step.model_name == current:
                todo += [producer[k] for k in step.input_map.values() if k in producer]
    return found


def _check_matches_input(ensemble: EnsembleModel, output: ExposedTensor, stride: int, batch: int) -> None:
    """The averager must advance by the stride and batch of the snapshotter feeding ``output``."""
    label = f"{output.model.name}.{output.name}"
    for group in _upstream_inputs(ensemble, output.model.name):
        if group.stride != stride:
            raise StreamingConfigError(
                f"streaming output of {label}: stride {stride} differs from stride {group.stride} of the "
                f"streaming input {group.name!r} that feeds {output.model.name}; each update of "
                f"{group.update_size} samples would come back as {stride * batch} samples. Use stride={group.stride}"
            )
        if group.batch_size != batch:
            raise StreamingConfigError(
                f"streaming output of {label}: batch_size {batch} differs from batch_size {group.batch_size} "
                f"of the streaming input {group.name!r} that feeds {output.model.name}. Use batch_size={group.batch_size}"
            )


def _members(parameters: Mapping[str, str]) -> frozenset[str]:
    """Names of the streaming models an ensemble's recorded parameters point to."""
    return StreamingRecords.from_parameters(parameters).models


@contextmanager
def _all_or_nothing(ensemble: EnsembleModel) -> Iterator[None]:
    """Roll the ensemble's build back when the body raises; see :func:`add_streaming_output`."""
    check_buildable(ensemble)
    try:
        yield
    except BaseException as exc:
        removed = roll_back(ensemble)
        if removed:
            exc.add_note(
                f"the ensemble build was rolled back: removed {', '.join(removed)} from "
                f"{ensemble.repository.root}; fix the call and build the ensemble again"
            )
        raise


def check_buildable(ensemble: EnsembleModel) -> None:
    """Refuse to extend an ensemble that a failed build removed from its repository."""
    if ensemble.repository.models.get(ensemble.name) is not ensemble:
        raise StreamingConfigError(
            f"ensemble {ensemble.name!r} is no longer in {ensemble.repository.root} (a failed build step "
            f"rolled it back, or it was removed): start again with "
            f"repo.add({ensemble.name!r}, platform=Platform.ENSEMBLE)"
        )


def roll_back(ensemble: EnsembleModel) -> list[str]:
    """Undo an ensemble's unexported build; returns the names of the models removed.

    Without an exported version the ensemble and every streaming model its parameters name
    are removed. With one, its config goes back to the exported ``config.pbtxt`` and only
    the streaming models added since are removed.
    """
    repository = ensemble.repository
    if repository.models.get(ensemble.name) is not ensemble:
        return []
    exported = bool(ensemble.versions)
    stored = ensemble.config.from_text(ensemble.storage.read_text(ensemble.name, "config.pbtxt"))
    doomed = _members(ensemble.config.parameters) - (_members(stored.parameters) if exported else set())
    removed = [name for name in sorted(doomed) if name in repository]
    for name in removed:
        repository.remove(name)
    if exported:
        ensemble.config.proto.CopyFrom(stored.proto)
    else:
        repository.remove(ensemble)
        removed.append(ensemble.name)
    logger.warning("rolled back the build of ensemble %s: removed %s", ensemble.name, removed)
    return removed
