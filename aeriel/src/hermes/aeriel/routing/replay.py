"""The replay tail: how much recent input rebuilds a streaming sequence's state exactly.

A streaming ensemble's state is a function of its recent input (DESIGN.md §4): each
snapshotter holds the last ``K`` samples of its group, each online averager the pending sums
of the last ``N - 1`` predictions. Replaying, with START on another server (or version), the
last ``U`` updates where

```
U = max over input groups g of ceil(K_g / (s_g·B_g))     the snapshotter refills with real samples
  + max over outputs o of ceil((N_o - 1) / B_o)           the N-1 newest predictions see only them
```

leaves both in exactly the state of an uninterrupted run (the replayed outputs are dropped).
With ``B = 1`` that is ``K + (N - 1)·s`` samples per group: for DeepClean (21 channels at
4096 Hz, ``K = 4096``, ``s = 8``, ``N = 256``, float32) 767 updates, 6,136 samples, 515 KB per
stream. A stream younger than ``U`` updates is replayed from its first update, which is
exact as well (START restores the same initial state).

:func:`replay_plan` reads ``U`` from the streaming records quiver writes in the model's
parameters (``hermes.streaming_input.<key>`` with ``kernel_size``/``stride``/``batch_size``,
``hermes.streaming_output.<key>`` with ``num_updates``/``batch_size``); a record may instead
state ``replay_updates`` directly (a model with implicit state, such as a fused streaming
model, knows its own). Records it cannot read are named in the error.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

from hermes.aeriel.exceptions import SequenceError

__all__ = ["ReplayPlan", "replay_plan"]

_INPUT = "hermes.streaming_input."
_OUTPUT = "hermes.streaming_output."


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReplayPlan:
    """What a stream must keep to be rebuilt elsewhere.

    Attributes:
        updates: ``U``, the updates replayed (with START) to rebuild the state exactly.
        update_sizes: ``{input name: samples per update (s·B)}`` of each streaming group.
        delays: ``{output name: samples the output trails the input by ((N - 1)·s)}``.
        source: where ``updates`` came from (the records read, or "given").
    """

    updates: int
    update_sizes: Mapping[str, int] = dataclasses.field(default_factory=dict)
    delays: Mapping[str, int] = dataclasses.field(default_factory=dict)
    source: str = "given"

    def __post_init__(self) -> None:
        if isinstance(self.updates, bool) or not isinstance(self.updates, int) or self.updates < 0:
            raise ValueError(f"replay updates must be an integer >= 0, got {self.updates!r}")

    def tail_bytes(self, channels: Mapping[str, int], itemsize: int = 4) -> int:
        """Bytes of input a stream keeps: ``U`` updates of every group (``channels`` per input)."""
        return sum(
            self.updates * size * channels.get(name, 1) * itemsize for name, size in self.update_sizes.items()
        )


def _records(parameters: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for key, value in parameters.items():
        if not key.startswith((_INPUT, _OUTPUT)):
            continue
        text = (
            value.get("string_value", "")
            if isinstance(value, Mapping)
            else getattr(value, "string_value", value)
        )
        try:
            record = json.loads(text)
        except (TypeError, ValueError):
            raise SequenceError(f"streaming record {key} is not JSON: {str(text)[:80]!r}") from None
        if not isinstance(record, dict):
            raise SequenceError(f"streaming record {key} is not a JSON object: {str(text)[:80]!r}")
        out[key] = record
    return out


def _positive(record: Mapping[str, Any], key: str, field: str) -> int:
    value = record.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SequenceError(
            f"streaming record {key} has {field}={value!r}; expected a positive integer "
            "(or give the RoutingClient replay_updates=)"
        )
    return value


def replay_plan(parameters: Mapping[str, Any]) -> ReplayPlan | None:
    """The :class:`ReplayPlan` recorded in a model's parameters; None without streaming records.

    Args:
        parameters: the model config's ``parameters`` (JSON form ``{key: {"string_value": ...}}``,
            protobuf values, or plain strings).

    Raises:
        SequenceError: a streaming record is malformed (naming the record and the field).
    """
    records = _records(parameters)
    if not records:
        return None
    fill, average, sizes, delays = 0, 0, {}, {}
    for key, record in sorted(records.items()):
        if "replay_updates" in record:
            fill = max(fill, int(record["replay_updates"]) if record["replay_updates"] else 0)
            continue
        if key.startswith(_INPUT):
            kernel = _positive(record, key, "kernel_size")
            size = _positive(record, key, "stride") * _positive(record, key, "batch_size")
            sizes[key.removeprefix(_INPUT)] = size
            fill = max(fill, math.ceil(kernel / size))
        else:
            batch = _positive(record, key, "batch_size")
            average = max(average, math.ceil((_positive(record, key, "num_updates") - 1) / batch))
            delay = record.get("delay")
            if isinstance(delay, int) and not isinstance(delay, bool):
                delays[key.removeprefix(_OUTPUT)] = delay
    return ReplayPlan(
        updates=fill + average, update_sizes=sizes, delays=delays, source=", ".join(sorted(records))
    )
