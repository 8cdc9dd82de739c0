"""What a request resolves to, and the client's running latency statistics."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Callback", "LatencyStats", "LatencyTracker", "Result", "Timings"]


@dataclass(kw_only=True, slots=True)
class Timings:
    """Timings of one request.

    Attributes:
        latency_s: client send to response received, seconds (``time.perf_counter``).
        sent_at: ``time.perf_counter()`` when the request was handed to the stream.
        server_queue_s: time in the server's queue, when Triton reports it per request
            (its gRPC responses do not; see ``InferenceClient.server_stats()`` for averages).
        server_compute_s: time computing, under the same condition.
    """

    latency_s: float
    sent_at: float
    server_queue_s: float | None = None
    server_compute_s: float | None = None


@dataclass(kw_only=True, slots=True)
class Result:
    """The outputs of one request.

    Attributes:
        outputs: ``{output name: array}``; arrays decoded from the response are read-only views.
        timings: see :class:`Timings`.
        request_id: the caller's request id (or the client's counter when none was given).
        sequence_id: the sequence the request belonged to, or None.
        model_version: the version that answered ("" if the server did not say).
    """

    outputs: dict[str, np.ndarray]
    timings: Timings
    request_id: Any
    sequence_id: int | str | None = None
    model_version: str = ""

    def __getitem__(self, name: str) -> np.ndarray:
        return self.outputs[name]

    @property
    def output(self) -> np.ndarray:
        """The only output (raises if the model has several)."""
        if len(self.outputs) != 1:
            raise KeyError(f"the model has {len(self.outputs)} outputs {sorted(self.outputs)}; index by name")
        return next(iter(self.outputs.values()))


Callback = Callable[[Result | None, BaseException | None], Any]
"""``callback(result, error)``: exactly one of the two is None."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LatencyStats:
    """Client send-to-receive latency over the most recent requests, in seconds.

    Attributes:
        count: requests the percentiles are computed over (the most recent ``window``).
        last_s: the latest request's latency (None before the first).
        p50_s: median (None before the first).
        p99_s: 99th percentile (None before the first).
        mean_s: mean (None before the first).
    """

    count: int
    last_s: float | None
    p50_s: float | None
    p99_s: float | None
    mean_s: float | None


class LatencyTracker:
    """Keeps the last ``window`` latencies; appending is O(1), statistics are computed on demand."""

    def __init__(self, window: int = 10_000) -> None:
        if window < 1:
            raise ValueError(f"latency window must be >= 1, got {window}")
        self._values: deque[float] = deque(maxlen=window)
        self.add = self._values.append

    def reset(self) -> None:
        """Forget every latency recorded so far."""
        self._values.clear()

    def stats(self) -> LatencyStats:
        """The current statistics."""
        values = np.array(list(self._values), dtype=np.float64)
        if values.size == 0:
            return LatencyStats(count=0, last_s=None, p50_s=None, p99_s=None, mean_s=None)
        p50, p99 = np.percentile(values, [50, 99])
        return LatencyStats(
            count=int(values.size),
            last_s=float(values[-1]),
            p50_s=float(p50),
            p99_s=float(p99),
            mean_s=float(values.mean()),
        )
