"""What a streaming model takes: discovered from its config (quiver's streaming records, else its inputs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hermes.aeriel.exceptions import ProfileError
from hermes.quiver.config import StreamingRecords, StreamInputRecord

__all__ = ["StreamGroup", "StreamTarget", "discover_target"]


@dataclass(frozen=True, kw_only=True)
class StreamGroup:
    """One update input of a streaming model.

    Attributes:
        input: the Triton input name.
        channels: ``C`` of the update ``(1, C, s·B)``.
        update_size: ``s·B`` samples per update.
        kernel_size, stride, batch_size: the windowing (0 when unknown).
        tensors: the network inputs its channels feed, in order, with their channel counts.
    """

    input: str
    channels: int
    update_size: int
    kernel_size: int = 0
    stride: int = 0
    batch_size: int = 0
    tensors: tuple[tuple[str, int | None], ...] = ()


@dataclass(frozen=True, kw_only=True)
class StreamTarget:
    """A model the profiler streams through.

    Attributes:
        model: the model (ensemble or fused or any stateful model) name.
        groups: its update inputs.
        outputs: its outputs.
        steps: the models whose statistics make up the server-side split (itself included).
        network: the network run by ``--floor`` (None when unknown).
        fused: whether it is a fused streaming model.
    """

    model: str
    groups: tuple[StreamGroup, ...]
    outputs: tuple[str, ...]
    steps: tuple[str, ...] = field(default=())
    network: str | None = None
    fused: bool = False

    @property
    def update_size(self) -> int:
        """Samples per channel of each update (the stream advances by this much per request)."""
        return self.groups[0].update_size


def _records(config: dict[str, Any]) -> StreamingRecords:
    """quiver's streaming records of a config (JSON form); unreadable ones are skipped."""
    return StreamingRecords.from_parameters(config.get("parameters") or {}, on_error=lambda _: None)


def _group(record: StreamInputRecord, network: str | None) -> StreamGroup:
    tensors = tuple(
        (_tensor_name(t, network), c) for t, c in zip(record.tensors, record.channels, strict=False)
    )
    return StreamGroup(
        input=record.name, channels=record.total_channels, update_size=record.update_size,
        kernel_size=record.kernel_size, stride=record.stride, batch_size=record.batch_size, tensors=tensors,
    )  # fmt: skip


def _tensor_name(label: str, network: str | None) -> str:
    if network and label.startswith(network + "."):
        return label[len(network) + 1 :]
    return label


def discover_target(config: dict[str, Any]) -> StreamTarget:
    """Describe the model of ``config`` (Triton's JSON model config) for streaming.

    Raises:
        ProfileError: it has no input the profiler can stream.
    """
    name = config["name"]
    records = _records(config)
    steps = [s["model_name"] for s in (config.get("ensemble_scheduling") or {}).get("step", [])]
    fused = any(r.fused for r in records.inputs)
    if fused:
        network = records.inputs[0].network
    else:
        rest = [s for s in steps if s not in records.models]
        network = rest[0] if len(rest) == 1 else None
    groups = [_group(record, network) for record in records.inputs]
    if not groups:
        groups = _plain_groups(config)
    outputs = tuple(o["name"] for o in config.get("output", []))
    return StreamTarget(
        model=name, groups=tuple(groups), outputs=outputs, steps=tuple(dict.fromkeys([name, *steps])),
        network=network, fused=fused,
    )  # fmt: skip


def _plain_groups(config: dict[str, Any]) -> list[StreamGroup]:
    """Update inputs of a model without streaming parameters: every non-state input, shape ``(1, C, n)``."""
    states = {s["input_name"] for s in (config.get("sequence_batching") or {}).get("state", [])}
    batched = int(config.get("max_batch_size", 0)) > 0
    groups = []
    for spec in config.get("input", []):
        if spec["name"] in states:
            continue
        dims = [int(d) for d in spec.get("dims", [])]
        full = [1, *dims] if batched else dims
        if len(full) != 3 or full[0] != 1 or min(full) < 1:
            raise ProfileError(
                f"model {config['name']!r}: input {spec['name']!r} has shape {full}; the profiler streams "
                "updates of shape (1, C, n) (quiver streaming models record theirs in the config parameters)"
            )
        groups.append(StreamGroup(input=spec["name"], channels=full[1], update_size=full[2]))
    if not groups:
        raise ProfileError(f"model {config['name']!r} has no input to stream")
    sizes = {g.update_size for g in groups}
    if len(sizes) > 1:
        raise ProfileError(
            f"model {config['name']!r}: inputs advance by different sample counts {sorted(sizes)}"
        )
    return groups
