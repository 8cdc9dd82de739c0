"""Benchmark: streaming at the speed of the network: fused vs ensemble, served vs the in-process floor.

One local server per stream shape serves, from one repository, the same DeepClean-shaped
network (21 witnesses, K = 4096, ONNX, variable batch axis) as

* ``ensemble``: snapshotter -> network -> online averager (three models);
* ``fused1``: the same in one stateful ONNX graph, one instance (the one-stream form);
* ``fused``: fused, one sequence per instance, one instance per stream (4 or 8); the portable
  backend gives each instance its share of the cores (``cpus // instances`` threads);
* ``fused_batched``: fused with batched state (all sequences on one instance, oldest strategy).

Every figure is a median over interleaved repetitions (ensemble, fused, floor, ... in turn),
so drift on a shared machine hits both sides of each ratio:

(a) server CPU per update (all server processes) and end-to-end seconds of data per second,
    fused vs ensemble, one stream, 1 in flight;
(b) end to end vs the in-process floor (the network with onnxruntime in this process, with the
    served model's thread settings, on the same windows in the same batches: for 4 streams
    4 concurrent calls of B windows against one sequence per instance, one call of 4·B against
    batched state; one pass after a warm-up of each batch shape), 1 and 4 streams, for the demo's
    stream (stride 16, B = 8) and a DeepClean-shaped one (stride 8, B = 8);
(c) 8 concurrent streams: batched state on one instance vs one sequence per instance, and the
    same two forms in-process (one call of 8·B windows vs 8 concurrent calls of B): what batching
    itself gains on these cores, the most batched state can gain end to end.

    python benchmarks/bench_streaming.py [--quick]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hermes.aeriel.profile import FloorForm

TOPIC = "streaming"
K, CHANNELS = 4096, 21
SHAPES = {"demo (stride 16, B=8, N=32)": (16, 8, 32), "DeepClean-shaped (stride 8, B=8, N=64)": (8, 8, 64)}


def _build(
    root: Path, stride: int, batch: int, num_updates: int, instances: int, fused_instances: int
) -> None:
    import torch

    from deepclean_demo.network import DeepCleanNet
    from hermes.quiver import ModelRepository, Platform
    from hermes.quiver.streaming import add_fused_streaming_model

    torch.manual_seed(0)
    repo = ModelRepository(root)
    net = repo.add("net", platform=Platform.ONNX)
    net.config.max_batch_size = 64
    net.config.add_input("witness", [CHANNELS, K])
    net.config.add_output("noise", [K])
    net.config.add_instance_group(kind="cpu", count=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net.export_version(DeepCleanNet().eval(), example_inputs=[torch.randn(batch, CHANNELS, K)])
    ensemble = repo.add("ensemble", platform=Platform.ENSEMBLE)
    ensemble.add_streaming_inputs(
        net.inputs["witness"], stride=stride, batch_size=batch, key="witness", instances=instances
    )
    ensemble.add_streaming_output(
        net.outputs["noise"], stride=stride, num_updates=num_updates, batch_size=batch, key="noise_stream",
        instances=instances,
    )  # fmt: skip
    ensemble.export_version()
    common = {
        "stride": stride,
        "batch_size": batch,
        "num_updates": num_updates,
        "outputs": {"noise": "noise"},
    }
    add_fused_streaming_model(net, name="fused1", inputs={"witness": "witness"}, instances=1, **common)
    add_fused_streaming_model(
        net, name="fused", inputs={"witness": "witness"}, instances=fused_instances, **common
    )
    add_fused_streaming_model(
        net, name="fused_batched", inputs={"witness": "witness"}, sequences_per_instance=8, max_queue_delay_us=500,
        **common,
    )  # fmt: skip


class _Bench:
    """One server on one repository; measures a model by streaming, or the floor in-process."""

    def __init__(self, server: Any, root: Path, updates: int):
        import tritonclient.grpc as grpcclient

        from hermes.aeriel.profile import discover_target, load_network
        from hermes.aeriel.server._server import _session_members

        self.url = server.grpc_url
        self.pids = [server.pid, *_session_members(server.pid)]
        self.updates = updates
        with grpcclient.InferenceServerClient(self.url) as client:
            self.targets = {
                m: discover_target(client.get_model_config(m, as_json=True)["config"])
                for m in ("ensemble", "fused1", "fused", "fused_batched")
            }
        self.network = load_network(root, "net")

    def stream(self, model: str, streams: int) -> Any:
        from hermes.aeriel.profile import make_data, run_streams

        target = self.targets[model]
        data = make_data(target, streams, self.updates)
        return run_streams(self.url, target, data, server_pids=self.pids)

    def floor(self, streams: int, form: FloorForm = "concurrent") -> float:
        """The network in-process on the windows ``stream()`` sends, in the batches of ``form``."""
        from hermes.aeriel.profile import floor_rate, make_data

        target = self.targets["fused"]
        return floor_rate(self.network, target, make_data(target, streams, self.updates), form=form)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _row(
    figure: str, value: float, unit: str, baseline: str, base: float, target: str | None, n: int
) -> dict:
    return {
        "benchmark": TOPIC, "figure": f"{figure} (median of {n} interleaved runs)", "value": value, "unit": unit,
        "baseline": baseline, "baseline_value": base, "ratio": value / base if base else None, "target": target,
    }  # fmt: skip


def _interleave(repeats: int, measures: dict[str, Callable[[], Any]]) -> dict[str, list[Any]]:
    results: dict[str, list[Any]] = {k: [] for k in measures}
    for _ in range(repeats):
        for key, measure in measures.items():
            results[key].append(measure())
    return results


def _shape_rows(label: str, bench: _Bench, repeats: int, first: bool) -> list[dict]:
    rows: list[dict] = []
    measures: dict[str, Callable[[], Any]] = {
        "ensemble1": lambda: bench.stream("ensemble", 1),
        "fused1": lambda: bench.stream("fused1", 1),
        "floor1": lambda: bench.floor(1),
        "fused4": lambda: bench.stream("fused", 4),
        "batched4": lambda: bench.stream("fused_batched", 4),
        "floor4": lambda: bench.floor(4, "concurrent"),  # what 4 instances run: 4 calls of B at once
        "floor4b": lambda: bench.floor(4, "batched"),  # what batched state runs: one call of 4·B
    }
    if first:
        measures["fused8"] = lambda: bench.stream("fused", 8)
        measures["batched8"] = lambda: bench.stream("fused_batched", 8)
        measures["floor8"] = lambda: bench.floor(8, "concurrent")
        measures["floor8b"] = lambda: bench.floor(8, "batched")
    r = _interleave(repeats, measures)
    cpu_e = _median([m.server_cpu_us for m in r["ensemble1"]])
    cpu_f = _median([m.server_cpu_us for m in r["fused1"]])
    rows.append(
        _row(
            f"{label}: server CPU per update, fused, 1 stream",
            cpu_f,
            "us",
            "ensemble",
            cpu_e,
            "<= 0.4",
            repeats,
        )
    )
    rate_e = _median([m.data_rate for m in r["ensemble1"]])
    rate_f = _median([m.data_rate for m in r["fused1"]])
    rows.append(
        _row(f"{label}: s of data per s, fused, 1 stream", rate_f, "s/s", "ensemble", rate_e, None, repeats)
    )
    ratios1 = [m.data_rate / f for m, f in zip(r["fused1"], r["floor1"], strict=True)]
    rows.append(_row(
        f"{label}: s of data per s end to end (fused), 1 stream, 1 in flight", rate_f, "s/s",
        "network in-process, same windows", _median(r["floor1"]), ">= 0.6", repeats,
    ))  # fmt: skip
    rows[-1]["ratio"] = _median(ratios1)
    best4 = (
        "batched4"
        if _median([m.data_rate for m in r["batched4"]]) > _median([m.data_rate for m in r["fused4"]])
        else "fused4"
    )
    floor4 = "floor4b" if best4 == "batched4" else "floor4"  # the same batches on both sides
    ratios4 = [m.data_rate / f for m, f in zip(r[best4], r[floor4], strict=True)]
    form = "fused, batched state" if best4 == "batched4" else "fused, one sequence per instance"
    rows.append(_row(
        f"{label}: s of data per s end to end ({form}), 4 streams", _median([m.data_rate for m in r[best4]]), "s/s",
        "network in-process, same windows, same batches", _median(r[floor4]), ">= 0.8", repeats,
    ))  # fmt: skip
    rows[-1]["ratio"] = _median(ratios4)
    if first:
        rate8 = _median([m.data_rate for m in r["batched8"]])
        base8 = _median([m.data_rate for m in r["fused8"]])
        rows.append(_row(
            f"{label}: s of data per s, 8 streams, batched state on one instance", rate8, "s/s",
            "one sequence per instance (8 instances)", base8, ">= 2", repeats,
        ))  # fmt: skip
        rows.append(_row(
            f"{label}: in-process, 8 streams, one call of 8·B windows per update", _median(r["floor8b"]), "s/s",
            "8 concurrent calls of B (a session each, cpus // 8 threads)", _median(r["floor8"]), None, repeats,
        ))  # fmt: skip
    fused_us = _median([m.server_split_us.get("fused1", 0.0) for m in r["fused1"]])
    steps = {
        k: _median([m.server_split_us.get(k, 0.0) for m in r["ensemble1"]])
        for k in r["ensemble1"][0].server_split_us
    }
    steps.pop("ensemble", None)
    split = ", ".join(f"{k} {v:.0f}" for k, v in steps.items())
    rows.append(_row(
        f"{label}: server time per update (statistics: queue + compute), fused, 1 stream", fused_us, "us",
        f"ensemble steps summed ({split})", sum(steps.values()), None, repeats,
    ))  # fmt: skip
    return rows


def run(quick: bool = False) -> list[dict]:
    """Every row of the module docstring, from one server per stream shape."""
    from hermes.aeriel import serve

    repeats = 3 if quick else 5
    updates = 30 if quick else 100
    rows: list[dict] = []
    for index, (label, (stride, batch, num)) in enumerate(SHAPES.items()):
        with tempfile.TemporaryDirectory(prefix="bench-streaming-") as tmp:
            root = Path(tmp) / "repo"
            _build(root, stride, batch, num, instances=4, fused_instances=8 if index == 0 else 4)
            with serve(root, models=["ensemble", "fused1", "fused", "fused_batched"], log_file=Path(tmp) / "log",
                       exit_timeout_s=10) as server:  # fmt: skip
                bench = _Bench(server, root, updates)
                rows += _shape_rows(label, bench, repeats, first=index == 0)
    return rows


if __name__ == "__main__":
    quick = "--quick" in sys.argv[1:]
    for row in run(quick=quick):
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
        print(f"{row['figure']}: {row['value']:.3g} {row['unit']} vs {row['baseline']} {row['baseline_value']:.3g} "
              f"-> {ratio} (target {row['target'] or '-'})")  # fmt: skip
