"""Benchmark: hermes.quiver exports — the cost of verification, and batching in the python backend.

Measured side by side in one run, medians over repeats:

(a) TorchScript and ONNX (dynamo) export of a small MLP with verification (run the artifact
    at batch 1 and max batch and compare with eager torch) against the same export with
    ``verify=False``: seconds per export, and their ratio (the price of the proof).
(b) The exported python-backend model served by the local Triton: requests/s with 8
    requests in flight, with dynamic batching (Triton hands several requests to one
    ``execute``, which runs them as one torch call) against the same model without batching
    (``max_batch_size: 0``, one call per request).

Run standalone (``python benchmarks/bench_quiver.py [--quick]``) to print a markdown table,
or through ``make bench`` (``run(quick)`` returns the rows).
"""

from __future__ import annotations

import importlib.util
import logging
import queue
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

TOPIC = "quiver"

NET_SOURCE = textwrap.dedent(
    """
    import torch


    class MLP(torch.nn.Module):
        def __init__(self, features: int = 64, hidden: int = 1024):
            super().__init__()
            self.body = torch.nn.Sequential(
                torch.nn.Linear(features, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden),
                torch.nn.GELU(), torch.nn.Linear(hidden, 8),
            )

        def forward(self, x):
            return self.body(x)
    """
)


def _net_module(folder: Path) -> Any:
    path = folder / "quiver_bench_net.py"
    path.write_text(NET_SOURCE)
    spec = importlib.util.spec_from_file_location("quiver_bench_net", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["quiver_bench_net"] = module
    spec.loader.exec_module(module)
    return module


def _export_seconds(platform: str, net: Any, verify: bool, repeats: int, **options: Any) -> float:
    import torch

    from hermes.quiver import ModelRepository

    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="bench-quiver-") as tmp:
            repo = ModelRepository(Path(tmp) / "repo")
            model = repo.add("net", platform=platform)
            model.config.max_batch_size = 16
            start = time.perf_counter()
            model.export_version(net, example_inputs=torch.randn(4, 64), verify=verify, **options)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _requests_per_s(url: str, model: str, n: int, in_flight: int) -> float:
    import tritonclient.grpc as grpcclient

    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    done: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url=url)
    try:

        def send() -> None:
            tensor = grpcclient.InferInput("x", [1, 64], "FP32")
            tensor.set_data_from_numpy(x)
            client.async_infer(model, [tensor], callback=lambda result, error: done.put(error))

        for _ in range(5):  # warm up
            send()
            if done.get(timeout=60) is not None:
                raise RuntimeError(f"{model}: warm-up request failed")
        start = time.perf_counter()
        sent = 0
        for _ in range(min(in_flight, n)):
            send()
            sent += 1
        for _ in range(n):
            error = done.get(timeout=60)
            if error is not None:
                raise RuntimeError(f"{model}: {error}")
            if sent < n:
                send()
                sent += 1
        return n / (time.perf_counter() - start)
    finally:
        client.close()


def _row(
    figure: str,
    value: float,
    unit: str,
    baseline: str,
    baseline_value: float,
    ratio: float,
    target: str | None,
) -> dict:
    return {
        "benchmark": TOPIC,
        "figure": figure,
        "value": float(value),
        "unit": unit,
        "baseline": baseline,
        "baseline_value": float(baseline_value),
        "ratio": float(ratio),
        "target": target,
    }


def run(quick: bool = False) -> list[dict]:
    """Measure and return the rows (see the module docstring)."""
    import torch

    from hermes.aeriel import serve
    from hermes.quiver import ModelRepository

    logging.getLogger("hermes.quiver").setLevel(logging.WARNING)
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-quiver-net-") as tmp:
        nets = _net_module(Path(tmp))
        try:
            net = nets.MLP()
            repeats = 3 if quick else 7
            for platform, label, reps, target in (
                ("pytorch_libtorch", "TorchScript", repeats, None),  # a tiny export: the ratio says little
                ("onnxruntime_onnx", "ONNX (dynamo)", 1 if quick else 3, "<= 1.5"),
            ):
                options: dict[str, Any] = {}
                _export_seconds(platform, net, False, 1, **options)  # warm up: first-use imports and caches
                verified = _export_seconds(platform, net, True, reps, **options)
                plain = _export_seconds(platform, net, False, reps, **options)
                rows.append(
                    _row(
                        f"{label} export + verification (batch 1 and 16), s",
                        verified,
                        "s",
                        "same export, verify=False",
                        plain,
                        verified / plain,
                        target,
                    )
                )

            repo = ModelRepository(Path(tmp) / "repo")
            for name, mbs in (("batched", 16), ("unbatched", 0)):
                model = repo.add(name, platform="python")
                model.config.max_batch_size = mbs
                model.config.add_instance_group(kind="cpu", count=1)
                if mbs:
                    model.config.dynamic_batching(max_queue_delay_us=500)
                example = torch.randn(1 if mbs == 0 else 4, 64)
                model.export_version(
                    net,
                    example_inputs=example,
                    module_kwargs={},
                    code_paths=[nets.__file__],
                )
            n = 300 if quick else 2000
            with serve(repo.root, models=["batched", "unbatched"], exit_timeout_s=15) as server:
                batched = statistics.median(
                    _requests_per_s(server.grpc_url, "batched", n, 8) for _ in range(1 if quick else 3)
                )
                unbatched = statistics.median(
                    _requests_per_s(server.grpc_url, "unbatched", n, 8) for _ in range(1 if quick else 3)
                )
            rows.append(
                _row(
                    "python-backend export served, 8 in flight, dynamic batching",
                    batched,
                    "requests/s",
                    "same model, max_batch_size 0 (one torch call per request)",
                    unbatched,
                    batched / unbatched,
                    ">= 1.0",
                )
            )
        finally:
            sys.modules.pop("quiver_bench_net", None)
    return rows


def _markdown(rows: list[dict]) -> str:
    head = "| figure | value | unit | baseline | baseline value | ratio | target |\n|---|---|---|---|---|---|---|"
    lines = [
        f"| {r['figure']} | {r['value']:.3g} | {r['unit']} | {r['baseline']} | {r['baseline_value']:.3g} | "
        f"{r['ratio']:.2f} | {r['target'] or '-'} |"
        for r in rows
    ]
    return "\n".join([head, *lines])


if __name__ == "__main__":
    print(_markdown(run(quick="--quick" in sys.argv)))
