"""hermes.stillwater benchmark: per-hop latency and 1 MiB frame throughput vs multiprocessing.Queue.

Measured in one run, side by side:

* **per-hop latency** of small messages (a timestamp) through ``Source >> Map >> Map >>
  parent`` (3 hops), median over items sent 1 ms apart so nothing queues; baseline: the same
  three processes linked by ``multiprocessing.Queue``; floor: bare pipes relaying bytes.
* **throughput** of 1 MiB float32 frames through ``Source >> Map >> Map`` (3 stage
  processes; the last emits a timestamp per frame to the parent), from the first to the last
  frame at the consumer so process start-up is excluded; baseline: the same processes linked
  by ``multiprocessing.Queue(maxsize=8)``; ceiling: ``numpy.copyto`` bandwidth of 1 MiB.

Run standalone (``python benchmarks/bench_stillwater.py [--quick]``) to print a markdown table,
or through ``make bench`` (``run(quick)`` returns the rows).
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

# Stage functions below must be importable by name in spawned stage processes.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from hermes.stillwater import ArraySpec, Map, Source  # noqa: E402

FRAME_SHAPE = (262144,)  # 1 MiB of float32
FRAME_BYTES = 262144 * 4
MiB = 1024 * 1024
_CTX = mp.get_context("spawn")


# ------------------------------------------------------------------ stage functions (children)
def timestamps(n: int, interval_s: float) -> Iterator[int]:
    """Yield ``n`` perf_counter_ns stamps taken at send time, ``interval_s`` apart."""
    for _ in range(n):
        time.sleep(interval_s)
        yield time.perf_counter_ns()


def identity(x: Any) -> Any:
    return x


def frames(n: int) -> Iterator[np.ndarray]:
    frame = np.random.default_rng(0).standard_normal(FRAME_SHAPE).astype(np.float32)
    for _ in range(n):
        yield frame


def frame_arrival(frame: np.ndarray) -> float:
    return time.perf_counter()


def _queue_source(out_q: Any, n: int, kind: str, interval_s: float) -> None:
    items = timestamps(n, interval_s) if kind == "latency" else frames(n)
    for item in items:
        out_q.put(item)
    out_q.put(None)


def _queue_map(in_q: Any, out_q: Any, stamp: bool) -> None:
    while (item := in_q.get()) is not None:
        out_q.put(time.perf_counter() if stamp else item)
    out_q.put(None)


def _pipe_source(conn: Any, n: int, interval_s: float) -> None:
    for stamp in timestamps(n, interval_s):
        conn.send_bytes(stamp.to_bytes(8, "little"))
    conn.send_bytes(b"")


def _pipe_relay(inbox: Any, outbox: Any) -> None:
    while data := inbox.recv_bytes():
        outbox.send_bytes(data)
    outbox.send_bytes(b"")


# ------------------------------------------------------------------ measurements (parent)
def latency_raw_pipe_us(n: int) -> float:
    """A reference: bytes relayed over bare pipes by the same three processes."""
    pipes = [_CTX.Pipe(duplex=False) for _ in range(3)]
    procs = [
        _CTX.Process(target=_pipe_source, args=(pipes[0][1], n, 1e-3)),
        _CTX.Process(target=_pipe_relay, args=(pipes[0][0], pipes[1][1])),
        _CTX.Process(target=_pipe_relay, args=(pipes[1][0], pipes[2][1])),
    ]
    for p in procs:
        p.start()
    delays = []
    while data := pipes[2][0].recv_bytes():
        delays.append(time.perf_counter_ns() - int.from_bytes(data, "little"))
    for p in procs:
        p.join()
    for reader, writer in pipes:
        reader.close()
        writer.close()
    return statistics.median(delays[10:]) / 3 / 1e3


def _queue_chain(n: int, kind: str, interval_s: float = 0.0) -> list[Any]:
    queues = [_CTX.Queue(maxsize=8) for _ in range(3)]
    procs = [
        _CTX.Process(target=_queue_source, args=(queues[0], n, kind, interval_s)),
        _CTX.Process(target=_queue_map, args=(queues[0], queues[1], False)),
        _CTX.Process(target=_queue_map, args=(queues[1], queues[2], kind == "frames")),
    ]
    for p in procs:
        p.start()
    out = []
    while (item := queues[2].get()) is not None:
        out.append(time.perf_counter_ns() - item if kind == "latency" else item)
    for p in procs:
        p.join()
    for q in queues:
        q.close()
        q.join_thread()
    return out


def latency_stillwater_us(n: int) -> float:
    pipeline = Source(timestamps, args=(n, 1e-3)) >> Map(identity) >> Map(identity)
    with pipeline:
        delays = [time.perf_counter_ns() - stamp for stamp in pipeline]
    return statistics.median(delays[10:]) / 3 / 1e3


def latency_queue_us(n: int) -> float:
    delays = _queue_chain(n, "latency", 1e-3)
    return statistics.median(delays[10:]) / 3 / 1e3


def _rate_mib_s(arrivals: list[float]) -> float:
    return (len(arrivals) - 1) * FRAME_BYTES / MiB / (arrivals[-1] - arrivals[0])


def throughput_stillwater_mib_s(n: int, copy: bool) -> float:
    spec = ArraySpec(shape=FRAME_SHAPE, dtype="float32")
    pipeline = (
        Source(frames, args=(n,), output=spec)
        >> Map(identity, output=spec, copy=copy)
        >> Map(frame_arrival, copy=copy)
    )
    with pipeline:
        arrivals = list(pipeline)
    return _rate_mib_s(arrivals)


def throughput_queue_mib_s(n: int) -> float:
    return _rate_mib_s(_queue_chain(n, "frames"))


def memcpy_mib_s(repeats: int = 2000) -> float:
    src = np.random.default_rng(1).standard_normal(FRAME_SHAPE).astype(np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    samples = []
    for _ in range(repeats // 100):
        t0 = time.perf_counter()
        for _ in range(100):
            np.copyto(dst, src)
        samples.append(100 * FRAME_BYTES / MiB / (time.perf_counter() - t0))
    return statistics.median(samples)


def _median_of(fn: Any, repeats: int, *args: Any) -> float:
    return statistics.median(fn(*args) for _ in range(repeats))


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure and return the benchmark rows (see the module docstring)."""
    repeats = 1 if quick else 3
    n_small = 300 if quick else 2000
    n_frames = 300 if quick else 1500
    lat_sw = _median_of(latency_stillwater_us, repeats, n_small)
    lat_q = _median_of(latency_queue_us, repeats, n_small)
    lat_raw = _median_of(latency_raw_pipe_us, repeats, n_small)
    thr_view = _median_of(throughput_stillwater_mib_s, repeats, n_frames, False)
    thr_copy = _median_of(throughput_stillwater_mib_s, repeats, n_frames, True)
    thr_q = _median_of(throughput_queue_mib_s, repeats, n_frames)
    ceiling = memcpy_mib_s()
    row = {"benchmark": "stillwater"}
    return [
        {**row, "figure": "median latency per hop, small message (us; ratio = Queue/stillwater)",
         "value": lat_sw, "unit": "us", "baseline": "multiprocessing.Queue, same 3 hops",
         "baseline_value": lat_q, "ratio": lat_q / lat_sw, "target": "value <= 50 us"},
        {**row, "figure": "median latency per hop, small message, vs a bare-pipe relay (ratio = pipes/stillwater)",
         "value": lat_sw, "unit": "us", "baseline": "bare multiprocessing Pipe relay, same 3 hops",
         "baseline_value": lat_raw, "ratio": lat_raw / lat_sw, "target": None},
        {**row, "figure": "1 MiB float32 frames, 3-stage pipeline, shared-memory views (copy=False)",
         "value": thr_view, "unit": "MiB/s", "baseline": "multiprocessing.Queue(maxsize=8), same 3 stages",
         "baseline_value": thr_q, "ratio": thr_view / thr_q, "target": ">= 5"},
        {**row, "figure": "1 MiB float32 frames, 3-stage pipeline, default receive copy (copy=True)",
         "value": thr_copy, "unit": "MiB/s", "baseline": "multiprocessing.Queue(maxsize=8), same 3 stages",
         "baseline_value": thr_q, "ratio": thr_copy / thr_q, "target": ">= 5"},
        {**row, "figure": "1 MiB float32 frames, 3-stage pipeline (copy=False) vs memcpy ceiling",
         "value": thr_view, "unit": "MiB/s", "baseline": "numpy.copyto of 1 MiB, same run",
         "baseline_value": ceiling, "ratio": thr_view / ceiling, "target": None},
    ]  # fmt: skip


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| figure | value | unit | baseline | baseline value | ratio | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['figure']} | {r['value']:.1f} | {r['unit']} | {r['baseline']} | "
            f"{r['baseline_value']:.1f} | {r['ratio']:.2f} | {r['target'] or ''} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(_table(run(quick="--quick" in sys.argv)))
