"""Chunks of any length in, fixed streaming updates out, with positions, gaps and order checks.

```
push({"strain": (C, n), "aux": (C', m)}, position=p)      any lengths, per group
   │ order check: p against the position each group expects next
   │   p earlier   -> StreamOrderError (duplicated / out of order), nothing sent
   │   p later     -> a gap: gap="raise" (StreamOrderError), "zero_fill" (up to max_fill
   │                  samples of zeros, reported on the blocks), or "restart" (END the sequence,
   │                  open a new one: the state starts afresh at p, reported on the blocks)
   ▼ per-group buffers
 as soon as every group holds s·B samples: send {"strain": (1, C, s·B), ...} -> Future[Block]
 finish(): the remainder is zero-padded to one update, sent with END and its outputs trimmed
   to the real samples (flush="pad"), or dropped (flush="drop": a zero update carries END and
   its outputs are discarded); with no remainder a zero update carries END, outputs dropped.
```

Each :class:`Block` says which input samples its outputs belong to: output ``o`` of the
update whose first input sample is at index ``i`` covers input samples
``[i - delay_o, i - delay_o + s·B)`` (``delay_o = (N - 1)·s``, from the ensemble's record).

Positions are sample indices of the first group (the default) or, with ``sample_rates``, times
in seconds (GPS-like): a group at rate ``r`` expects its next chunk at ``p + n / r``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hermes.aeriel.exceptions import InputValidationError, StreamOrderError

if TYPE_CHECKING:
    from hermes.aeriel.client import Result, SequenceLike

__all__ = ["Block", "ChunkedStream", "Gap"]


def _fmt(position: float) -> str:
    """A position for a message: ``6`` for a sample index, ``1000000001.1015625`` for a GPS time."""
    return f"{position:.9f}".rstrip("0").rstrip(".")


@dataclasses.dataclass(frozen=True)
class Gap:
    """A jump in the positions of a stream and what was done about it.

    Attributes:
        position: where the chunk after the gap starts.
        expected: where the stream expected it.
        samples: missing samples of the first group.
        action: ``"zero_fill"`` or ``"restart"``.
    """

    position: float
    expected: float
    samples: int
    action: str


@dataclasses.dataclass(frozen=True)
class Block:
    """The answer to one fixed update, aligned to input sample positions.

    Attributes:
        index: the update's number in the stream (from 0, across restarts).
        position: position of the update's first input sample.
        outputs: ``{output name: array}`` (trimmed at a padded END).
        starts: ``{output name: position of the input sample its first output sample belongs to}``
            (the update's position minus the output's delay).
        gaps: gaps handled just before this update (zero-filled or restarted).
        filled: zero samples (of the first group) this update carries for a gap or the END pad.
    """

    index: int
    position: float
    outputs: Mapping[str, np.ndarray]
    starts: Mapping[str, float]
    gaps: tuple[Gap, ...] = ()
    filled: int = 0


class ChunkedStream:
    """Feed a streaming sequence with chunks of any length (see the module docstring).

    Args:
        open_sequence: returns a new sequence (any :class:`~hermes.aeriel.client.SequenceLike`);
            called once at start and again on each restart after a gap.
        update_sizes: ``{input group: s·B samples per update}`` (from the ensemble's record).
        delays: ``{output: samples it trails the input by}``.
        position: where the stream starts (sample index of the first group, or seconds).
        sample_rates: ``{group: samples per second}``: positions are then times.
        gap: ``"raise"`` (default), ``"zero_fill"`` or ``"restart"``.
        max_fill: with ``gap="zero_fill"``, the most missing samples (first group) filled with
            zeros; a longer gap raises.
        flush: at :meth:`finish`, ``"pad"`` (zero-pad, trim the outputs) or ``"drop"``.
    """

    def __init__(
        self,
        open_sequence: Callable[[], SequenceLike[Future[Result]]],
        update_sizes: Mapping[str, int],
        delays: Mapping[str, int] | None = None,
        *,
        position: float = 0,
        sample_rates: Mapping[str, float] | None = None,
        gap: Literal["raise", "zero_fill", "restart"] = "raise",
        max_fill: int = 0,
        flush: Literal["pad", "drop"] = "pad",
    ):
        if not update_sizes:
            raise ValueError("update_sizes is empty: the model records no streaming input groups")
        if gap not in ("raise", "zero_fill", "restart"):
            raise ValueError(f"gap must be 'raise', 'zero_fill' or 'restart', got {gap!r}")
        if flush not in ("pad", "drop"):
            raise ValueError(f"flush must be 'pad' or 'drop', got {flush!r}")
        self._open = open_sequence
        self.sizes = dict(update_sizes)
        self.groups = list(self.sizes)
        self.delays = dict(delays or {})
        self.rates = {g: float((sample_rates or {}).get(g, 1.0)) for g in self.groups}
        missing = set(sample_rates or {}) - set(self.groups)
        if missing:
            raise ValueError(f"sample_rates names unknown groups {sorted(missing)}; groups are {self.groups}")
        self.gap, self.max_fill, self.flush = gap, int(max_fill), flush
        self.sequence = open_sequence()
        self._buffers: dict[str, list[np.ndarray]] = {g: [] for g in self.groups}
        self._held = dict.fromkeys(self.groups, 0)
        self._channels: dict[str, int] = {}
        self._dtype: dict[str, np.dtype[Any]] = {}
        self._next = dict.fromkeys(self.groups, float(position))  # where each group's next chunk starts
        self._sent_at = float(position)  # position of the next update's first sample
        self._index = 0
        self._pending_gaps: list[Gap] = []
        self._filled = 0
        self.gaps: list[Gap] = []
        self.finished = False

    # ------------------------------------------------------------------ input
    def _as_2d(self, group: str, chunk: Any) -> np.ndarray:
        data = np.asarray(chunk)
        if data.ndim == 3 and data.shape[0] == 1:
            data = data[0]
        elif data.ndim == 1:
            data = data[None]
        if data.ndim != 2:
            raise InputValidationError(
                f"sequence {self.sequence.sequence_id}: chunk of group {group!r} has shape {data.shape}; "
                "expected (channels, samples), (samples,) or (1, channels, samples)"
            )
        want = self._channels.setdefault(group, data.shape[0])
        dtype = self._dtype.setdefault(group, data.dtype)
        if data.shape[0] != want or data.dtype != dtype:
            raise InputValidationError(
                f"sequence {self.sequence.sequence_id}: chunk of group {group!r} is {data.shape[0]} x {data.dtype}; "
                f"the stream's earlier chunks were {want} x {dtype}"
            )
        return data

    def _missing(self, group: str, position: float) -> int:
        """Samples of ``group`` between where it expects its next chunk and ``position``."""
        return round((position - self._next[group]) * self.rates[group])

    def _check_order(self, chunks: Mapping[str, np.ndarray], position: float) -> int:
        """Raise for an overlap (or a refused gap); return the first group's missing samples."""
        sid = self.sequence.sequence_id
        first = self.groups[0]
        for group in chunks:
            missing = self._missing(group, position)
            if missing < 0:
                raise StreamOrderError(
                    f"sequence {sid}: the chunk of group {group!r} at position {_fmt(position)} overlaps samples "
                    f"already given (the group expects position {_fmt(self._next[group])}): duplicated or out of order"
                )
        missing = self._missing(first, position) if first in chunks else 0
        if missing > 0 and self.gap == "raise":
            raise StreamOrderError(
                f"sequence {sid}: the chunk at position {_fmt(position)} leaves a gap of {missing} samples after "
                f"position {_fmt(self._next[first])} (gap policy 'raise'; use gap='zero_fill' or 'restart')"
            )
        if missing > 0 and self.gap == "zero_fill" and missing > self.max_fill:
            raise StreamOrderError(
                f"sequence {sid}: the gap of {missing} samples from position {_fmt(self._next[first])} to "
                f"{_fmt(position)} exceeds max_fill={self.max_fill} (gap policy 'zero_fill')"
            )
        return missing

    def push(self, chunks: Mapping[str, Any], *, position: float | None = None) -> list[Future[Block]]:
        """Add the next chunk of one or more groups (all starting at ``position``).

        Args:
            chunks: ``{group: (channels, samples)}``; lengths may differ and need not divide
                the update size.
            position: where the chunks start; default: right after the previous chunk of the
                first group given.

        Returns:
            One future per update sent (none while a group still lacks samples).

        Raises:
            StreamOrderError: a duplicated, out-of-order chunk, or a gap the policy refuses
                (naming the sequence and the positions). Nothing is sent.
            InputValidationError: an unknown group or a wrong shape.
        """
        if self.finished:
            raise StreamOrderError(f"sequence {self.sequence.sequence_id}: the stream was finished")
        unknown = set(chunks) - set(self.groups)
        if unknown:
            raise InputValidationError(
                f"unknown streaming groups {sorted(unknown)}; the groups are {self.groups}"
            )
        data = {g: self._as_2d(g, c) for g, c in chunks.items()}
        start = self._next[next(iter(data))] if position is None else float(position)
        missing = self._check_order(data, start)
        futures: list[Future[Block]] = []
        if missing > 0:
            futures += self._handle_gap(start, missing)
        for group, array in data.items():
            self._buffers[group].append(array)
            self._held[group] += array.shape[1]
            self._next[group] = start + array.shape[1] / self.rates[group]
        futures += self._send_ready()
        return futures

    def _handle_gap(self, position: float, missing: int) -> list[Future[Block]]:
        first = self.groups[0]
        gap = Gap(position=position, expected=self._next[first], samples=missing, action=self.gap)
        self.gaps.append(gap)
        if self.gap == "zero_fill":
            self._pending_gaps.append(gap)
            for group in self.groups:
                n = self._missing(group, position)
                channels = self._channels.get(group, 1)
                self._buffers[group].append(np.zeros((channels, n), self._dtype.get(group, np.float32)))
                self._held[group] += n
                self._next[group] = position
            self._filled += missing
            return []
        futures = self._flush(end=True)  # restart: END the old state, start afresh at the gap's end
        concurrent.futures.wait(futures)  # the id is free again once END is answered
        self.sequence = self._open()
        self._pending_gaps.append(gap)  # reported on the first block of the new sequence
        self._next = dict.fromkeys(self.groups, position)
        self._sent_at = position
        return futures

    # ------------------------------------------------------------------ output
    def _take(self, group: str, count: int) -> np.ndarray:
        """The next ``count`` buffered samples of ``group`` (zero-padded when fewer are held)."""
        parts, need = [], count
        while need and self._buffers[group]:
            head = self._buffers[group][0]
            parts.append(head[:, :need])
            if head.shape[1] <= need:
                self._buffers[group].pop(0)
            else:
                self._buffers[group][0] = head[:, need:]
            need -= parts[-1].shape[1]
        self._held[group] -= count - need
        channels = self._channels.get(group, 1)
        if need:
            parts.append(np.zeros((channels, need), self._dtype.get(group, np.float32)))
        return np.concatenate(parts, axis=1)[None]

    def _send_ready(self) -> list[Future[Block]]:
        futures = []
        while all(self._held[g] >= self.sizes[g] for g in self.groups):
            futures.append(self._send_one(end=False, keep=self.sizes[self.groups[0]]))
        return futures

    def _send_one(self, *, end: bool, keep: int) -> Future[Block]:
        first = self.groups[0]
        size = self.sizes[first]
        filled = min(self._filled, size)
        self._filled -= filled
        inputs = {g: self._take(g, self.sizes[g]) for g in self.groups}
        position, index, gaps = self._sent_at, self._index, tuple(self._pending_gaps)
        self._pending_gaps.clear()
        self._sent_at += size / self.rates[first]
        self._index += 1
        answer = self.sequence.send(inputs, end=end)
        block: Future[Block] = Future()

        def relay(done: Future[Result]) -> None:
            error = done.exception()
            if error is not None:
                block.set_exception(error)
                return
            try:
                outputs = {
                    name: np.asarray(array)[..., : keep * array.shape[-1] // size]
                    for name, array in done.result().outputs.items()
                }
                starts = {name: position - self.delays.get(name, 0) / self.rates[first] for name in outputs}
                block.set_result(Block(index, position, outputs, starts, gaps, filled))
            except Exception as exc:  # never leave the block unanswered
                block.set_exception(exc)

        answer.add_done_callback(relay)
        return block

    def _flush(self, *, end: bool) -> list[Future[Block]]:
        futures = self._send_ready()
        first = self.groups[0]
        left = self._held[first]
        keep = left if self.flush == "pad" else 0
        if self.flush == "drop":
            for group in self.groups:
                self._buffers[group].clear()
                self._held[group] = 0
        futures.append(self._send_one(end=end, keep=keep))
        return futures

    def finish(self) -> list[Future[Block]]:
        """Send what is buffered (by the flush policy) with END; the stream takes no more chunks."""
        if self.finished:
            return []
        self.finished = True
        return self._flush(end=True)
