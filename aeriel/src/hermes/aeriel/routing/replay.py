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
parameters (:class:`~hermes.quiver.StreamInputRecord` with ``kernel_size``/``stride``/``batch_size``,
:class:`~hermes.quiver.StreamOutputRecord` with ``num_updates``/``batch_size``). Records it
cannot read are named in the error.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from hermes.aeriel.exceptions import SequenceError
from hermes.quiver.config import StreamingRecords
from hermes.quiver.exceptions import StreamingRecordError

__all__ = ["ReplayPlan", "replay_plan"]


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


def replay_plan(parameters: Mapping[str, Any]) -> ReplayPlan | None:
    """The :class:`ReplayPlan` recorded in a model's parameters; None without streaming records.

    Args:
        parameters: the model config's ``parameters`` (JSON form ``{key: {"string_value": ...}}``,
            protobuf values, or plain strings).

    Raises:
        SequenceError: a streaming record cannot be read (naming the record and the field).
    """
    try:
        records = StreamingRecords.from_parameters(parameters)
    except StreamingRecordError as exc:
        raise SequenceError(f"{exc} (or give the RoutingClient replay_updates=)") from exc
    if not records:
        return None
    fill = max((math.ceil(r.kernel_size / r.update_size) for r in records.inputs), default=0)
    average = max((math.ceil((r.num_updates - 1) / r.batch_size) for r in records.outputs), default=0)
    return ReplayPlan(
        updates=fill + average,
        update_sizes={r.name: r.update_size for r in records.inputs},
        delays={r.name: r.delay for r in records.outputs},
        source=", ".join(sorted(r.parameter for r in records.all)),
    )
