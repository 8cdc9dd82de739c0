"""StageCounters: per-stage item counts and source lag, in one shared-memory table.

The pipeline (the owner) creates the table and unlinks it; each stage process writes only
its own row (aligned 8-byte stores, one writer per cell), and the parent reads any time.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from hermes.stillwater.channel import SHM_PREFIX

__all__ = ["StageCounters", "StageStats"]

_FIELDS = 3  # items in, items out, lag (ns)


@dataclass(frozen=True, kw_only=True)
class StageStats:
    """A snapshot of one stage's counters.

    Attributes:
        name: the stage name.
        items_in: items received from upstream.
        items_out: items sent downstream (or consumed, for a sink).
        lag_s: for a throttled source, how late (s) its last item left after its scheduled time.
    """

    name: str
    items_in: int
    items_out: int
    lag_s: float


class StageCounters:
    """The counters table; created by the owner, attached by name in stage processes."""

    def __init__(self, n_stages: int, *, name: str | None = None) -> None:
        self.n_stages = n_stages
        self.owner = name is None
        if name is None:
            name = f"{SHM_PREFIX}{os.getpid()}-stats-{secrets.token_hex(4)}"
            self._shm = SharedMemory(name=name, create=True, size=max(8, n_stages * _FIELDS * 8))
        else:
            self._shm = SharedMemory(name=name)
        self.name = name
        self.table: np.ndarray | None = np.ndarray((n_stages, _FIELDS), dtype=np.int64, buffer=self._shm.buf)
        if self.owner:
            self.table[:] = 0
        assert self._shm.buf is not None
        self._cells: memoryview | None = self._shm.buf.cast("q")
        self._closed = False

    def add(self, stage: int, field: int, n: int = 1) -> None:
        """Add ``n`` to a counter (field 0: items in, 1: items out); only the stage's own process writes."""
        assert self._cells is not None
        self._cells[stage * _FIELDS + field] += n

    def set_lag(self, stage: int, lag_s: float) -> None:
        """Record a source's current lag (s)."""
        assert self._cells is not None
        self._cells[stage * _FIELDS + 2] = int(lag_s * 1e9)

    def __reduce__(self) -> tuple[object, ...]:
        return _attach_counters, (self.n_stages, self.name)

    def snapshot(self, names: list[str]) -> list[StageStats]:
        """Current counters of every stage, in pipeline order."""
        if self.table is None:
            raise ValueError("the counters are closed")
        rows = self.table.copy()
        return [
            StageStats(name=n, items_in=int(r[0]), items_out=int(r[1]), lag_s=float(r[2]) * 1e-9)
            for n, r in zip(names, rows, strict=True)
        ]

    def close(self) -> None:
        """Unmap; the owner also unlinks (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.table = None
        if self._cells is not None:
            self._cells.release()
            self._cells = None
        self._shm.close()
        if self.owner:
            self._shm.unlink()


def _attach_counters(n_stages: int, name: str) -> StageCounters:
    return StageCounters(n_stages, name=name)
