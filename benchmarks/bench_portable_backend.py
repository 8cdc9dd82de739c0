"""Per-request overhead of hermes' portable ``onnxruntime`` backend.

One small ONNX MLP (16 -> 64 -> 8, batch 1), timed three ways in the same run:

* onnxruntime ``session.run`` in-process (the floor);
* a minimal hand-written python-backend model making the same ``session.run`` call
  (Triton + gRPC + python backend, no hermes code);
* the unchanged ``onnxruntime_onnx`` folder served by hermes' portable backend.

Each is the median latency of sequential requests (1 in flight, gRPC sync client).

    python benchmarks/bench_portable_backend.py [--quick]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

BENCHMARK = "portable_backend"

_CONFIG = """\
name: "{name}"
{kind}
max_batch_size: 8
input [ {{ name: "INPUT" data_type: TYPE_FP32 dims: [ 16 ] }} ]
output [ {{ name: "OUTPUT" data_type: TYPE_FP32 dims: [ 8 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
parameters {{ key: "intra_op_thread_count" value: {{ string_value: "1" }} }}
"""

_HANDWRITTEN = textwrap.dedent(
    """\
    import os

    import onnxruntime as ort
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def initialize(self, args):
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

        def execute(self, requests):
            out = []
            for r in requests:
                x = pb_utils.get_input_tensor_by_name(r, "INPUT").as_numpy()
                (y,) = self.session.run(["OUTPUT"], {"INPUT": x})
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", y)]))
            return out
    """
)


def _export(path: Path) -> None:
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8)).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.ones(1, 16),),
            str(path),
            input_names=["INPUT"],
            output_names=["OUTPUT"],
            dynamic_axes={"INPUT": {0: "b"}, "OUTPUT": {0: "b"}},
            dynamo=False,
        )


def _build_repository(repo: Path) -> Path:
    onnx_file = repo / "portable" / "1" / "model.onnx"
    _export(onnx_file)
    (repo / "portable" / "config.pbtxt").write_text(
        _CONFIG.format(name="portable", kind='platform: "onnxruntime_onnx"')
    )
    (repo / "handwritten" / "1").mkdir(parents=True)
    (repo / "handwritten" / "1" / "model.onnx").write_bytes(onnx_file.read_bytes())
    (repo / "handwritten" / "1" / "model.py").write_text(_HANDWRITTEN)
    (repo / "handwritten" / "config.pbtxt").write_text(
        _CONFIG.format(name="handwritten", kind='backend: "python"')
    )
    return onnx_file


_DC_CONFIG = """\
name: "{name}"
{kind}
max_batch_size: 0
input [ {{ name: "INPUT" data_type: TYPE_FP32 dims: [ 8, 21, 4096 ] }} ]
output [ {{ name: "OUTPUT" data_type: TYPE_FP32 dims: [ 8, 4096 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
parameters {{ key: "intra_op_thread_count" value: {{ string_value: "1" }} }}
"""


def _build_deepclean(repo: Path) -> None:
    """The demo's DeepClean-shaped network, (8, 21, 4096) -> (8, 4096), portable and hand-written."""
    import torch

    from deepclean_demo.network import DeepCleanNet

    torch.manual_seed(0)
    onnx_file = repo / "portable_dc" / "1" / "model.onnx"
    onnx_file.parent.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            DeepCleanNet().eval(), (torch.randn(8, 21, 4096),), str(onnx_file), input_names=["INPUT"],
            output_names=["OUTPUT"], dynamo=False,
        )  # fmt: skip
    (repo / "portable_dc" / "config.pbtxt").write_text(
        _DC_CONFIG.format(name="portable_dc", kind='platform: "onnxruntime_onnx"')
    )
    (repo / "handwritten_dc" / "1").mkdir(parents=True)
    (repo / "handwritten_dc" / "1" / "model.onnx").write_bytes(onnx_file.read_bytes())
    (repo / "handwritten_dc" / "1" / "model.py").write_text(_HANDWRITTEN)
    (repo / "handwritten_dc" / "config.pbtxt").write_text(
        _DC_CONFIG.format(name="handwritten_dc", kind='backend: "python"')
    )


def _output_us(client: Any, model: str, x: np.ndarray, n: int) -> tuple[float, float]:
    """(median latency, mean compute_output per request) in us, from the statistics API."""
    before = client.get_inference_statistics(model).model_stats[0].inference_stats
    latency = _time_served(client, model, x, n)
    after = client.get_inference_statistics(model).model_stats[0].inference_stats
    count = after.success.count - before.success.count
    return latency, (after.compute_output.ns - before.compute_output.ns) / max(count, 1) / 1e3


def _deepclean_rows(client: Any, quick: bool) -> list[dict]:
    n, rounds = (30, 1) if quick else (100, 3)
    x = np.random.default_rng(1).standard_normal((8, 21, 4096)).astype(np.float32)
    port, hand = [], []
    for _ in range(rounds):  # interleaved
        hand.append(_output_us(client, "handwritten_dc", x, n))
        port.append(_output_us(client, "portable_dc", x, n))
    p_lat, h_lat = statistics.median(v[0] for v in port), statistics.median(v[0] for v in hand)
    p_out, h_out = statistics.median(v[1] for v in port), statistics.median(v[1] for v in hand)
    return [
        {"benchmark": BENCHMARK, "figure": f"median latency, DeepClean-shaped (8,21,4096)->(8,4096) via portable backend (n={n})",
         "value": p_lat, "unit": "us", "baseline": "hand-written python-backend model, same session.run",
         "baseline_value": h_lat, "ratio": p_lat / h_lat, "target": "<= 1.1"},
        {"benchmark": BENCHMARK, "figure": "Triton compute_output per request for the (8, 4096) output, portable backend",
         "value": p_out, "unit": "us", "baseline": "hand-written python-backend model", "baseline_value": h_out,
         "ratio": p_out / h_out, "target": None},
    ]  # fmt: skip


def _median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def _time_in_process(onnx_file: Path, x: np.ndarray, n: int) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    for _ in range(20):
        session.run(["OUTPUT"], {"INPUT": x})
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        session.run(["OUTPUT"], {"INPUT": x})
        samples.append(time.perf_counter() - t0)
    return _median_us(samples)


def _time_served(client: Any, model: str, x: np.ndarray, n: int) -> float:
    import tritonclient.grpc as grpcclient

    inp = grpcclient.InferInput("INPUT", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    for _ in range(20):
        client.infer(model, [inp])
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.infer(model, [inp])
        samples.append(time.perf_counter() - t0)
    return _median_us(samples)


def run(quick: bool = False) -> list[dict]:
    """Median per-request latency, portable backend vs onnxruntime in-process and a hand-written model."""
    import tritonclient.grpc as grpcclient

    from hermes.aeriel import serve

    n = 150 if quick else 500
    rounds = 1 if quick else 3
    x = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="bench-portable-") as tmp:
        repo = Path(tmp) / "repo"
        onnx_file = _build_repository(repo)
        _build_deepclean(repo)
        with (
            serve(
                repo, models=["portable", "handwritten", "portable_dc", "handwritten_dc"], exit_timeout_s=2
            ) as server,
            grpcclient.InferenceServerClient(server.grpc_url) as client,
        ):
            in_process, handwritten, portable = [], [], []
            for _ in range(rounds):  # interleaved, so drift on a shared machine hits all three
                in_process.append(_time_in_process(onnx_file, x, n))
                handwritten.append(_time_served(client, "handwritten", x, n))
                portable.append(_time_served(client, "portable", x, n))
            deepclean = _deepclean_rows(client, quick)
    base = statistics.median(in_process)
    hand = statistics.median(handwritten)
    port = statistics.median(portable)
    rows = [
        {
            "benchmark": BENCHMARK,
            "figure": f"median latency per request, ONNX MLP via portable backend (gRPC, 1 in flight, n={n})",
            "value": port,
            "unit": "us",
            "baseline": "onnxruntime session.run in-process",
            "baseline_value": base,
            "ratio": port / base,
            "target": None,
        },
        {
            "benchmark": BENCHMARK,
            "figure": "overhead per request of serving through the portable backend",
            "value": port - base,
            "unit": "us",
            "baseline": "onnxruntime session.run in-process",
            "baseline_value": base,
            "ratio": (port - base) / base,
            "target": None,
        },
        {
            "benchmark": BENCHMARK,
            "figure": "median latency per request, portable backend vs a minimal hand-written python model",
            "value": port,
            "unit": "us",
            "baseline": "hand-written python-backend model, same session.run",
            "baseline_value": hand,
            "ratio": port / hand,
            "target": "<= 1.2",
        },
    ]
    return rows + deepclean


def _markdown(rows: list[dict]) -> str:
    lines = [
        "| figure | value | baseline | baseline value | ratio | target |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['figure']} | {r['value']:.1f} {r['unit']} | {r['baseline']} | "
            f"{r['baseline_value']:.1f} {r['unit']} | {r['ratio']:.2f} | {r['target'] or '-'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(_markdown(run(quick="--quick" in sys.argv[1:])))
