"""Stream real sequences through a model and measure: data rate, requests/s, latency, CPU, server split.

Every stream is one sequence (START on its first update, END on its last) on its own gRPC
stream, with at most ``in_flight`` requests outstanding; updates are sent as fast as allowed
or paced at a multiple of real time. The requests are built before the clock starts, so the
client's CPU per request is the cost of sending and receiving, not of building the data.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hermes.aeriel._lifecycle import Deadline
from hermes.aeriel.control.client import ControlClient, channel_args
from hermes.aeriel.exceptions import AerielError, ProfileError
from hermes.aeriel.profile._target import StreamTarget

__all__ = ["Measurement", "make_data", "process_cpu_s", "run_streams"]

_SEQUENCE_BASE = 1_000_000


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """One point of a sweep.

    Attributes:
        streams, in_flight, instances: the configuration.
        updates: requests per stream.
        seconds_of_data: stream time covered (all streams).
        wall_s: from the first send to the last response.
        latencies_s: per request, send to response.
        client_cpu_s: CPU time of this process during the run.
        server_cpu_s: CPU time of the server processes during the run (None when unknown).
        server_split_us: ``{model: µs per request}`` from the statistics API (queue + compute).
        floor_rate: seconds of data per second of the network in-process (None without ``--floor``).
    """

    streams: int
    in_flight: int
    instances: int | None
    updates: int
    seconds_of_data: float
    wall_s: float
    latencies_s: Sequence[float]
    client_cpu_s: float
    server_cpu_s: float | None
    server_split_us: dict[str, float] = field(default_factory=dict)
    floor_rate: float | None = None

    @property
    def requests(self) -> int:
        return self.streams * self.updates

    @property
    def data_rate(self) -> float:
        """Seconds of data per second of wall time."""
        return self.seconds_of_data / self.wall_s

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s

    def latency_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1e3)

    @property
    def client_cpu_us(self) -> float:
        return self.client_cpu_s / self.requests * 1e6

    @property
    def server_cpu_us(self) -> float | None:
        return None if self.server_cpu_s is None else self.server_cpu_s / self.requests * 1e6

    @property
    def floor_ratio(self) -> float | None:
        return None if not self.floor_rate else self.data_rate / self.floor_rate


def make_data(target: StreamTarget, streams: int, updates: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Per stream, ``{update input: (C, updates·n) float32}`` of seeded noise."""
    rng = np.random.default_rng(seed)
    return [
        {
            g.input: rng.standard_normal((g.channels, updates * g.update_size), dtype=np.float32)
            for g in target.groups
        }
        for _ in range(streams)
    ]


def process_cpu_s(pids: Sequence[int]) -> float | None:
    """User + system CPU seconds of ``pids`` (from /proc), None if any cannot be read."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
        except OSError:
            return None
        total += int(fields[11]) + int(fields[12])
    return total / ticks


_STEPS = ("queue", "compute_input", "compute_infer", "compute_output")


def _statistics(control: ControlClient, models: Sequence[str]) -> dict[str, tuple[int, int]]:
    """``{model: (inference count, queue + compute ns)}``."""
    out: dict[str, tuple[int, int]] = {}
    for model in models:
        try:
            stats = control.statistics(model).get("model_stats", [])
        except AerielError:  # a model of another version or not loaded: no split for it
            continue
        for entry in stats:
            s = entry.get("inference_stats", {})
            ns = sum(int(s.get(step, {}).get("ns", 0)) for step in _STEPS)
            count, old = out.get(model, (0, 0))
            out[model] = (count + int(s.get("success", {}).get("count", 0)), old + ns)
    return out


class _Stream:
    """One sequence on its own gRPC stream, ``in_flight`` requests at most."""

    def __init__(
        self, url: str, target: StreamTarget, data: dict[str, np.ndarray], index: int, in_flight: int
    ):
        import tritonclient.grpc as grpcclient

        self.client = grpcclient.InferenceServerClient(
            url, channel_args=channel_args(url)
        )  # no proxy to loopback
        self.target = target
        self.sequence_id = _SEQUENCE_BASE + index
        self.slots = threading.Semaphore(in_flight)
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.done = threading.Event()
        self.requests = self._build(grpcclient, data)
        self.outputs = [grpcclient.InferRequestedOutput(o) for o in target.outputs]

    def _build(self, grpcclient: Any, data: dict[str, np.ndarray]) -> list[list[Any]]:
        size = self.target.update_size
        count = next(iter(data.values())).shape[-1] // size
        requests = []
        for u in range(count):
            tensors = []
            for name, array in data.items():
                part = np.ascontiguousarray(array[None, :, u * size : (u + 1) * size])
                tensor = grpcclient.InferInput(name, list(part.shape), "FP32")
                tensor.set_data_from_numpy(part)
                tensors.append(tensor)
            requests.append(tensors)
        return requests

    def _callback(self, result: Any, error: Any) -> None:
        now = time.perf_counter()
        if error is not None:
            self.errors.append(str(error))
            self.done.set()
        else:
            rid = result.get_response().id
            self.latencies.append(now - self.sent.pop(rid))
            if len(self.latencies) == len(self.requests):
                self.done.set()
        self.slots.release()

    def run(self, interval_s: float | None, start: float) -> None:
        self.client.start_stream(callback=self._callback)
        last = len(self.requests) - 1
        for u, tensors in enumerate(self.requests):
            if interval_s is not None:
                delay = start + u * interval_s - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            self.slots.acquire()
            if self.errors:
                break
            rid = str(u)
            self.sent[rid] = time.perf_counter()
            self.client.async_stream_infer(
                self.target.model, tensors, outputs=self.outputs, request_id=rid, sequence_id=self.sequence_id,
                sequence_start=u == 0, sequence_end=u == last,
            )  # fmt: skip

    def close(self) -> None:
        try:
            self.client.stop_stream()
        finally:
            self.client.close()


def run_streams(
    url: str,
    target: StreamTarget,
    data: Sequence[dict[str, np.ndarray]],
    *,
    in_flight: int = 1,
    rate: float | None = None,
    sample_rate: float = 4096.0,
    server_pids: Sequence[int] = (),
    instances: int | None = None,
    timeout_s: float = 600.0,
) -> Measurement:
    """Stream every entry of ``data`` as one sequence, all at once, and measure.

    Args:
        url: the server's gRPC address.
        target: the model.
        data: per stream ``{update input: (C, T)}`` (see :func:`make_data`).
        in_flight: requests outstanding per stream.
        rate: a multiple of real time per stream (``sample_rate`` samples per second), or None
            for as fast as possible.
        sample_rate: samples per second of the data.
        server_pids: the server's processes (CPU per request); empty for none.
        instances: recorded in the result.
        timeout_s: the longest a run may take.

    Raises:
        ProfileError: a request failed (quotes the server's message) or the run timed out.
    """
    if in_flight < 1:
        raise ProfileError(f"in_flight must be >= 1, got {in_flight}")
    streams = [_Stream(url, target, d, i, in_flight) for i, d in enumerate(data)]
    interval = None if rate is None else target.update_size / (rate * sample_rate)
    with ControlClient(url) as control:
        before = _statistics(control, target.steps)
        server0 = process_cpu_s(server_pids) if server_pids else None
        cpu0, start = time.process_time(), time.perf_counter()
        threads = [threading.Thread(target=s.run, args=(interval, start), daemon=True) for s in streams]
        try:
            for thread in threads:
                thread.start()
            deadline = Deadline(timeout_s)
            for stream in streams:
                if not stream.done.wait(deadline.remaining_s):
                    raise ProfileError(f"streaming {target.model!r} did not finish within {timeout_s:.0f} s")
            wall = time.perf_counter() - start
            cpu = time.process_time() - cpu0
            server1 = process_cpu_s(server_pids) if server_pids else None
        finally:
            for thread in threads:
                thread.join(timeout=5)
            for stream in streams:
                stream.close()
        errors = [e for s in streams for e in s.errors]
        if errors:
            raise ProfileError(f"streaming {target.model!r} failed: {errors[0]}")
        after = _statistics(control, target.steps)
    split = {}
    for model, (count, ns) in after.items():
        n = count - before.get(model, (0, 0))[0]
        if n > 0:
            split[model] = (ns - before.get(model, (0, 0))[1]) / n / 1e3
    updates = len(streams[0].requests)
    return Measurement(
        streams=len(streams), in_flight=in_flight, instances=instances, updates=updates,
        seconds_of_data=len(streams) * updates * target.update_size / sample_rate, wall_s=wall,
        latencies_s=[x for s in streams for x in s.latencies], client_cpu_s=cpu,
        server_cpu_s=None if server0 is None or server1 is None else server1 - server0, server_split_us=split,
    )  # fmt: skip
