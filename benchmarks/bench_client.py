"""Benchmark: the hermes InferenceClient against a minimal raw tritonclient streaming loop.

All figures come from one local server (the python-backend test models of
``aeriel/tests/client_models``), measured side by side in one run, as medians over repeats:

(a) one stream through a stateful streaming ensemble (snapshotter -> two downstream models),
    hermes vs raw loop: requests/s, p50/p99 latency, client CPU per request; 1 and 16 in flight.
(b) the same on a stateless identity model, where client overhead dominates.

Targets (issue 17): client CPU per request <= 1.05x the raw loop's and requests/s >= 0.98x, at
1 and 16 in flight, on both models; medians of interleaved repetitions (raw, hermes in turn).
(c) hermes in-band vs hermes with system shared memory, for 256 KiB and 1 MiB updates.
(d) several concurrent sequences on the streaming ensemble: throughput as the count grows.

Run standalone (``python benchmarks/bench_client.py [--quick]``) to print a markdown table,
or through ``make bench`` (``run(quick)`` returns the rows).
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from hermes.aeriel import serve
from hermes.aeriel.client import InferenceClient

MODELS = Path(__file__).resolve().parents[1] / "aeriel" / "tests" / "client_models"
TOPIC = "client"


def _raw_loop(
    url: str, model: str, name: str, x: np.ndarray, n: int, in_flight: int, sequence_id: int
) -> dict:
    """The minimal raw loop: one stream, a semaphore for the window, outputs decoded to numpy."""
    client = grpcclient.InferenceServerClient(url)
    window = threading.Semaphore(in_flight)
    done = threading.Event()
    sent: dict[str, float] = {}
    latencies: list[float] = []
    errors: list[Any] = []

    def callback(result: Any, error: Any) -> None:
        now = time.perf_counter()
        if error is not None:
            errors.append(error)
        else:
            response = result.get_response()
            for output in response.outputs:
                result.as_numpy(output.name)
            latencies.append(now - sent[response.id])
        window.release()
        if len(latencies) + len(errors) == n:
            done.set()

    client.start_stream(callback=callback)
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(n):
        window.acquire()
        infer_input = grpcclient.InferInput(name, list(x.shape), "FP32")
        infer_input.set_data_from_numpy(x)
        rid = str(i)
        sent[rid] = time.perf_counter()
        client.async_stream_infer(
            model,
            [infer_input],
            request_id=rid,
            sequence_id=sequence_id,
            sequence_start=sequence_id != 0 and i == 0,
            sequence_end=sequence_id != 0 and i == n - 1,
        )
    done.wait(120)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    client.stop_stream()
    client.close()
    if errors:
        raise RuntimeError(f"raw loop errors: {errors[:3]}")
    return _summary(n, wall, cpu, latencies)


def _hermes_loop(
    url: str,
    model: str,
    x: np.ndarray,
    n: int,
    in_flight: int,
    sequence_id: int,
    shared_memory: str | None = None,
) -> dict:
    with InferenceClient(url, model, max_in_flight=in_flight, shared_memory=shared_memory) as client:
        client.warm_up(n=4, inputs=x)
        cpu0, t0 = time.process_time(), time.perf_counter()
        if sequence_id:
            with client.sequence(sequence_id) as seq:
                futures = [seq.send(x, end=i == n - 1) for i in range(n)]
        else:
            futures = [client.infer(x) for _ in range(n)]
        results = [f.result(timeout=120) for f in futures]
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return _summary(n, wall, cpu, [r.timings.latency_s for r in results])


def _sequences_loop(url: str, model: str, x: np.ndarray, n: int, count: int, base_id: int) -> dict:
    with InferenceClient(url, model, max_in_flight=16) as client:
        client.warm_up(n=4, inputs=x)
        steps = max(2, n // count)
        cpu0, t0 = time.process_time(), time.perf_counter()
        sequences = [client.sequence(base_id + i) for i in range(count)]
        futures = []
        for step in range(steps):
            for seq in sequences:
                futures.append(seq.send(x, end=step == steps - 1))
        results = [f.result(timeout=120) for f in futures]
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return _summary(len(results), wall, cpu, [r.timings.latency_s for r in results])


def _summary(n: int, wall: float, cpu: float, latencies: list[float]) -> dict:
    lat = np.array(latencies)
    return {
        "rps": n / wall,
        "cpu_us": 1e6 * cpu / n,
        "p50_ms": 1e3 * float(np.percentile(lat, 50)),
        "p99_ms": 1e3 * float(np.percentile(lat, 99)),
    }


def _median(runs: list[dict], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def _row(figure: str, value: float, unit: str, baseline: str, base: float, target: str | None) -> dict:
    return {
        "benchmark": TOPIC,
        "figure": figure,
        "value": round(value, 3),
        "unit": unit,
        "baseline": baseline,
        "baseline_value": round(base, 3),
        "ratio": round(value / base, 3) if base else float("nan"),
        "target": target,
    }


def _compare(
    label: str,
    repeats: int,
    hermes: Callable[[int], dict],
    raw: Callable[[int], dict],
    rps_target: str,
) -> list[dict]:
    h_runs, r_runs = [], []
    for rep in range(repeats):  # alternate, so drifting machine load hits both alike
        r_runs.append(raw(rep))
        h_runs.append(hermes(rep))
    base = "raw tritonclient stream loop"
    return [
        _row(
            f"requests/s, {label}", _median(h_runs, "rps"), "req/s", base, _median(r_runs, "rps"), rps_target
        ),
        _row(
            f"client CPU per request, {label}",
            _median(h_runs, "cpu_us"),
            "us",
            base,
            _median(r_runs, "cpu_us"),
            "<= 1.05",
        ),
        _row(f"p50 latency, {label}", _median(h_runs, "p50_ms"), "ms", base, _median(r_runs, "p50_ms"), None),
        _row(f"p99 latency, {label}", _median(h_runs, "p99_ms"), "ms", base, _median(r_runs, "p99_ms"), None),
    ]


def run(quick: bool = False) -> list[dict]:
    """Measure everything on one local server; returns the rows (see the module docstring)."""
    n = 300 if quick else 1500
    repeats = 3 if quick else 5
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        repo = Path(tmp) / "repo"
        for name in ("identity", "ens_stream", "snapshotter", "double_a", "double_b"):
            shutil.copytree(MODELS / name, repo / name)
        with serve(
            repo, models=["identity", "ens_stream"], log_file=Path(tmp) / "log", exit_timeout_s=2
        ) as server:
            url = server.grpc_url
            update = np.random.rand(1, 3, 2).astype(np.float32)
            small = np.random.rand(1, 64).astype(np.float32)
            sid = iter(range(1, 10**6))
            for in_flight in (1, 16):
                rows += _compare(
                    f"stateful ensemble, {in_flight} in flight",
                    repeats,
                    lambda rep, k=in_flight: _hermes_loop(url, "ens_stream", update, n, k, next(sid)),
                    lambda rep, k=in_flight: _raw_loop(
                        url, "ens_stream", "snapshot_update", update, n, k, next(sid)
                    ),
                    ">= 0.98",
                )
            for in_flight in (1, 16):
                rows += _compare(
                    f"stateless identity, {in_flight} in flight",
                    repeats,
                    lambda rep, k=in_flight: _hermes_loop(url, "identity", small, n, k, 0),
                    lambda rep, k=in_flight: _raw_loop(url, "identity", "INPUT0", small, n, k, 0),
                    ">= 0.98",
                )
            for size_kib in (256, 1024):
                big = np.random.rand(1, size_kib * 256).astype(np.float32)
                m = max(50, n // (8 if size_kib == 1024 else 4))
                inband = [_hermes_loop(url, "identity", big, m, 4, 0) for _ in range(repeats)]
                shm = [
                    _hermes_loop(url, "identity", big, m, 4, 0, shared_memory="system")
                    for _ in range(repeats)
                ]
                rows.append(
                    _row(
                        f"requests/s, {size_kib} KiB identity, shared memory, 4 in flight",
                        _median(shm, "rps"),
                        "req/s",
                        "hermes in-band",
                        _median(inband, "rps"),
                        ">= 2" if size_kib == 1024 else None,
                    )
                )
            single = None
            for count in (1, 4, 16, 64):
                runs = [
                    _sequences_loop(url, "ens_stream", update, n, count, next(sid) * 1000)
                    for _ in range(repeats)
                ]
                value = _median(runs, "rps")
                single = single or value
                rows.append(
                    _row(
                        f"requests/s, {count} concurrent sequences, 16 in flight",
                        value,
                        "req/s",
                        "1 sequence",
                        single,
                        None,
                    )
                )
    return rows


def _table(rows: list[dict]) -> str:
    head = "| figure | value | unit | baseline | baseline value | ratio | target |\n|---|---|---|---|---|---|---|"
    lines = [
        f"| {r['figure']} | {r['value']} | {r['unit']} | {r['baseline']} | {r['baseline_value']} "
        f"| {r['ratio']} | {r['target'] or ''} |"
        for r in rows
    ]
    return "\n".join([head, *lines])


if __name__ == "__main__":
    print(_table(run(quick="--quick" in sys.argv)))
