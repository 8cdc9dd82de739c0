"""The main job end to end: a DeepClean-shaped noise regression streamed through every part of hermes.

1. build a DeepClean-shaped network (21 witnesses at 4096 Hz -> 1 noise channel) and train it
   for a few seconds on synthetic coupled data;
2. export it with quiver, verified against eager torch, as a fused streaming model (snapshotter,
   network and online averager in one ONNX graph with implicit state; the default, fastest form)
   or as a three-step streaming ensemble (``form="ensemble"``);
3. serve the repository on the local Triton runtime;
4. stream several sequences through a stillwater pipeline: source -> aeriel inference stage ->
   checker, as fast as possible or at a real-time rate;
5. check every served sample against the network run offline with the same windowing and
   averaging, run the network in-process on the same windows (the compute floor) and print the
   served rate's ratio to it, and write a summary, a figure and a record of the run.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, cast

import numpy as np

__all__ = ["DemoConfig", "DemoError", "DemoReport", "run_demo"]

logger = logging.getLogger("hermes.aeriel.demo")

SAMPLE_RATE_HZ = 4096


class DemoError(RuntimeError):
    """The demo's numerical check failed."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """Options of :func:`run_demo`.

    Args:
        seconds: length of each stream (s of data at 4096 Hz).
        streams: concurrent sequences.
        rate: ``None`` streams as fast as possible; a number streams at that multiple of
            real time (1.0 = 4096 samples per second per stream).
        output: folder for the figure, the records and the model repository.
        kernel_size: K, samples per window.
        stride: s, samples between windows (>= 8).
        batch_size: B, windows per request (>= 8).
        num_updates: N, predictions averaged into each output sample.
        train_steps: Adam steps of training before export (0 keeps random weights).
        network_instances: instances of the network model on the server.
        max_in_flight: requests the client keeps outstanding.
        rtol, atol: tolerance of the served-vs-offline check (float32 arithmetic).
        seed: seed of the data and of the weights.
        progress: show a live progress bar.
        form: ``"fused"`` (one stateful model, default) or ``"ensemble"`` (snapshotter ->
            network -> averager as three models).
    """

    seconds: float = 8.0
    streams: int = 4
    rate: float | None = None
    output: Path = Path("demo-output")
    kernel_size: int = 4096
    stride: int = 16
    batch_size: int = 8
    num_updates: int = 32
    train_steps: int = 300
    network_instances: int = 2
    max_in_flight: int = 16
    rtol: float = 1e-4
    atol: float = 1e-4
    seed: int = 0
    progress: bool = True
    form: str = "fused"

    def __post_init__(self) -> None:
        if self.form not in ("fused", "ensemble"):
            raise ValueError(f"form must be 'fused' or 'ensemble', got {self.form!r}")
        if self.seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {self.seconds}")
        if self.streams < 1:
            raise ValueError(f"streams must be >= 1, got {self.streams}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate must be > 0 (a multiple of real time) or None, got {self.rate}")
        if self.stride < 8 or self.batch_size < 8:
            raise ValueError(f"stride and batch_size must be >= 8, got {self.stride} and {self.batch_size}")
        if self.seconds * SAMPLE_RATE_HZ < self.stride * self.batch_size:
            raise ValueError(
                f"seconds={self.seconds} is shorter than one update ({self.stride * self.batch_size} samples)"
            )


@dataclasses.dataclass
class DemoReport:
    """What the demo measured; ``summary()`` formats it."""

    config: DemoConfig
    seconds_of_data: float
    wall_s: float
    stream_wall_s: float
    requests: int
    latencies_s: list[float]
    max_abs_error: float
    reference_scale: float
    passed: bool
    noise_reduction_db: float
    export_report: str
    server_ready_s: float
    files: dict[str, str]
    floor_rate: float | None = None

    @property
    def data_rate(self) -> float:
        """Seconds of data processed per second of wall time (all streams)."""
        return self.seconds_of_data / self.stream_wall_s

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.stream_wall_s

    @property
    def floor_ratio(self) -> float | None:
        """Served seconds of data per second over the network's in-process rate on the same windows."""
        return self.data_rate / self.floor_rate if self.floor_rate else None

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1e3) if self.latencies_s else float("nan")

    def _floor_text(self) -> str:
        if not self.floor_rate or self.floor_ratio is None:
            return "not measured"
        return (
            f"the network in-process on the same windows runs {self.floor_rate:.2f} s of data per second; "
            f"served / floor = {self.floor_ratio:.2f}"
        )

    def summary(self) -> str:
        c = self.config
        mode = "as fast as possible" if c.rate is None else f"at {c.rate:g}x real time"
        lines = [
            f"hermes demo: {c.streams} streams x {c.seconds:g} s of 21 witness channels at 4096 Hz, {mode}",
            f"  {'fused model' if c.form == 'fused' else 'ensemble'}: snapshotter (K={c.kernel_size}, stride "
            f"{c.stride}, B={c.batch_size}) -> network -> online averager (N={c.num_updates}, delay "
            f"{(c.num_updates - 1) * c.stride} samples)",
            f"  server ready in {self.server_ready_s:.2f} s; streamed in {self.stream_wall_s:.2f} s "
            f"(whole demo {self.wall_s:.1f} s)",
            f"  data rate:    {self.data_rate:.2f} s of data per second ({self.data_rate / c.streams:.2f}x "
            "real time per stream)",
            f"  floor:        {self._floor_text()}",
            f"  requests/s:   {self.requests_per_s:.1f} ({self.requests} requests)",
            f"  latency:      p50 {self.percentile_ms(50):.2f} ms, p99 {self.percentile_ms(99):.2f} ms",
            f"  max |served - offline|: {self.max_abs_error:.3g} (outputs up to {self.reference_scale:.3g}; "
            f"tolerance atol {c.atol:g} + rtol {c.rtol:g})  -> {'PASS' if self.passed else 'FAIL'}",
            f"  noise removed from the strain: {self.noise_reduction_db:.1f} dB",
            "  export " + self.export_report.strip().replace("\n", "\n  "),
            "  files: " + ", ".join(f"{k} {v}" for k, v in self.files.items()),
        ]
        return "\n".join(lines)


def _export(config: DemoConfig, repo_dir: Path, net: Any) -> tuple[str, str, str, str]:
    import shutil

    import torch

    from hermes.quiver import EnsembleModel, ModelRepository, Platform

    if repo_dir.exists():
        shutil.rmtree(repo_dir)
    repo = ModelRepository(repo_dir)
    model = repo.add("deepclean", platform=Platform.ONNX)
    model.config.add_input("witness", [config.batch_size, 21, config.kernel_size])
    model.config.add_output("noise", [config.batch_size, config.kernel_size])
    model.config.add_instance_group(kind="cpu", count=config.network_instances)
    result = model.export_version(
        net, example_inputs=[torch.randn(config.batch_size, 21, config.kernel_size)]
    )
    if config.form == "fused":
        from hermes.quiver.streaming import FusedInput, FusedOutput, add_fused_streaming_model

        fused = add_fused_streaming_model(
            model, stride=config.stride, batch_size=config.batch_size, num_updates=config.num_updates,
            name="deepclean-stream", inputs=[FusedInput(key="witness", tensors=("witness",))],
            outputs=[FusedOutput(key="noise_estimate", tensor="noise")], instances=config.streams,
            idle_timeout_s=120,
        )  # fmt: skip
        return fused.name, fused.inputs["witness"], fused.outputs["noise_estimate"], str(result.report)
    ensemble = cast(EnsembleModel, repo.add("deepclean-stream", platform=Platform.ENSEMBLE))
    group = ensemble.add_streaming_inputs(
        model.inputs["witness"], stride=config.stride, batch_size=config.batch_size, key="witness",
        instances=config.streams, idle_timeout_s=120,
    )  # fmt: skip
    out = ensemble.add_streaming_output(
        model.outputs["noise"], stride=config.stride, num_updates=config.num_updates, key="noise_estimate",
        instances=config.streams, idle_timeout_s=120,
    )  # fmt: skip
    ensemble.export_version()
    return "deepclean-stream", group.input.name, out.output.name, str(result.report)


def _figure(path: Path, record: dict[str, Any], plan: Any, latencies_s: list[float], delay: int) -> float:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = plan.stream(record["stream"])
    served = record["served"]
    # served[t] estimates the noise at input time t - delay
    estimate = served[delay:]
    strain = data.strain[: estimate.size]
    truth = data.noise[: estimate.size]
    cleaned = strain - estimate
    skip = min(plan.kernel_size, estimate.size // 2)  # past the zero initial state
    reduction = 10 * np.log10(np.var(strain[skip:]) / max(np.var(cleaned[skip:]), 1e-30))
    t = np.arange(strain.size) / SAMPLE_RATE_HZ
    window = slice(skip, min(skip + SAMPLE_RATE_HZ // 4, strain.size))
    fig, axes = plt.subplots(4, 1, figsize=(10, 11), constrained_layout=True)
    axes[0].plot(t[window], strain[window], lw=0.6, color="tab:gray")
    axes[0].set_title(f"raw strain (stream {record['stream']})")
    axes[1].plot(t[window], truth[window], lw=0.8, label="true coupled noise")
    axes[1].plot(t[window], estimate[window], lw=0.8, ls="--", label="estimated by the served network")
    axes[1].legend(loc="upper right")
    axes[1].set_title("noise")
    axes[2].plot(t[window], strain[window], lw=0.5, color="tab:gray", alpha=0.6, label="raw")
    axes[2].plot(t[window], cleaned[window], lw=0.7, color="tab:green", label="cleaned")
    axes[2].legend(loc="upper right")
    axes[2].set_title(f"cleaned strain ({reduction:.1f} dB less variance)")
    axes[2].set_xlabel("time (s)")
    axes[3].hist(np.asarray(latencies_s) * 1e3, bins=50, color="tab:blue")
    axes[3].set_xlabel("request latency (ms), client send to receive")
    axes[3].set_ylabel("requests")
    axes[3].set_title("latency")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return float(reduction)


def run_demo(config: DemoConfig) -> DemoReport:
    """Run the demo; raises :class:`DemoError` if a served sample differs from the offline network."""
    import torch

    from hermes.aeriel.demo.network import DeepCleanNet, train
    from hermes.aeriel.demo.stages import Checker, StreamPlan, WitnessSource
    from hermes.aeriel.server import serve
    from hermes.stillwater import InferenceStage, Map, Source

    started = time.monotonic()
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)

    logger.info("building and training the network (%d steps)", config.train_steps)
    network_kwargs: dict[str, Any] = {}
    net = DeepCleanNet(**network_kwargs)
    train(net, _training_stream(config), steps=config.train_steps, window=1024, seed=config.seed)
    weights = out / "network.pt"
    torch.save(net.state_dict(), weights)

    logger.info("exporting the streaming ensemble to %s", out / "model-repository")
    model_name, input_name, output_name, export_report = _export(config, out / "model-repository", net)

    plan = StreamPlan(
        seeds=tuple(config.seed * 1000 + i + 1 for i in range(config.streams)),
        seconds=config.seconds,
        kernel_size=config.kernel_size,
        stride=config.stride,
        batch_size=config.batch_size,
        num_updates=config.num_updates,
        input_name=input_name,
        output_name=output_name,
    )
    total = plan.updates * config.streams
    rate_hz = (
        None if config.rate is None else config.rate * config.streams * SAMPLE_RATE_HZ / plan.update_size
    )
    records: list[dict[str, Any]] = []
    latencies: list[float] = []
    logger.info("serving on the local Triton runtime; streaming %d requests", total)
    with serve(out / "model-repository", models=[model_name], log_file=out / "tritonserver.log") as server:
        ready_s = server.ready_after_s or 0.0
        pipeline = (
            Source(WitnessSource, args=(plan,), rate_hz=rate_hz, name="witness-source")
            >> InferenceStage(
                server.grpc_url,
                model_name,
                max_pending=2 * config.max_in_flight,
                client_kwargs={"max_in_flight": config.max_in_flight, "timeout_s": 120.0},
            )
            >> Map(Checker, args=(plan, str(weights), network_kwargs), name="checker")
        )
        stream_started = time.monotonic()
        stream_wall = 0.0
        with pipeline, _progress(config.progress, total) as advance:
            for item in pipeline:
                if item[0] == "progress":
                    latencies.append(item[3])
                    advance()
                    if len(latencies) == total:
                        stream_wall = time.monotonic() - stream_started
                else:
                    records.append(item[1])
        if not stream_wall:
            stream_wall = time.monotonic() - stream_started
    logger.info("streamed in %.2f s; checked every sample against the offline network", stream_wall)
    records.sort(key=lambda r: r["stream"])
    if len(records) != config.streams or sum(r["updates"] for r in records) != total:
        raise DemoError(f"expected {total} results from {config.streams} streams, got {len(latencies)}")

    floor = _floor(config, out / "model-repository", plan)
    worst = max(records, key=lambda r: r["max_abs_error"])
    scale = max(r["reference_scale"] for r in records)
    passed = all(
        r["served"].shape == r["reference"].shape
        and np.allclose(r["served"], r["reference"], rtol=config.rtol, atol=config.atol)
        for r in records
    )
    files = _write_records(out, config, records, latencies)
    reduction = _figure(
        out / "demo.png", records[0], plan, latencies, (config.num_updates - 1) * config.stride
    )
    files["figure"] = str(out / "demo.png")
    report = DemoReport(
        config=config,
        seconds_of_data=config.streams * plan.samples / SAMPLE_RATE_HZ,
        wall_s=time.monotonic() - started,
        stream_wall_s=stream_wall,
        requests=total,
        latencies_s=latencies,
        max_abs_error=worst["max_abs_error"],
        reference_scale=scale,
        passed=passed,
        noise_reduction_db=reduction,
        export_report=export_report,
        server_ready_s=ready_s,
        files=files,
        floor_rate=floor,
    )
    (out / "summary.json").write_text(json.dumps(_summary_json(report), indent=2))
    if not passed:
        raise DemoError(
            f"served outputs differ from the offline network: max |difference| {worst['max_abs_error']:.3g} "
            f"in stream {worst['stream']} (tolerance atol {config.atol:g} + rtol {config.rtol:g})\n"
            + report.summary()
        )
    return report


def _floor(config: DemoConfig, repo_dir: Path, plan: Any) -> float:
    """Seconds of data per second of the network in-process on the streams' windows (the compute floor)."""
    from hermes.aeriel.profile import StreamGroup, StreamTarget, floor_rate, load_network

    group = StreamGroup(
        input="witness", channels=21, update_size=plan.update_size, kernel_size=config.kernel_size,
        stride=config.stride, batch_size=config.batch_size, tensors=(("witness", 21),),
    )  # fmt: skip
    target = StreamTarget(model="deepclean-stream", groups=(group,), outputs=("noise",))
    data = [{"witness": plan.stream(i).witnesses} for i in range(len(plan.seeds))]
    return floor_rate(load_network(repo_dir, "deepclean"), target, data, sample_rate=SAMPLE_RATE_HZ)


def _training_stream(config: DemoConfig) -> Any:
    from hermes.aeriel.demo.data import make_stream

    return make_stream(16.0, seed=10_000 + config.seed)


def _progress(enabled: bool, total: int) -> Any:
    if not enabled:
        return nullcontext(lambda: None)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    @contextmanager
    def bar() -> Any:
        with Progress(
            TextColumn("streaming"), BarColumn(), MofNCompleteColumn(), TextColumn("requests"),
            TimeElapsedColumn(), transient=False,
        ) as progress:  # fmt: skip
            task = progress.add_task("stream", total=total)
            yield lambda: progress.advance(task)

    return bar()


def _write_records(
    out: Path, config: DemoConfig, records: list[dict[str, Any]], latencies: list[float]
) -> dict[str, str]:
    csv_path = out / "requests.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["stream", "update", "latency_ms"])
        for r in records:
            for u, lat in enumerate(r["latencies_s"]):
                writer.writerow([r["stream"], u, f"{lat * 1e3:.4f}"])
    arrays = out / "outputs.npz"
    np.savez_compressed(
        arrays,
        **{f"served_{r['stream']}": r["served"] for r in records},
        **{f"offline_{r['stream']}": r["reference"] for r in records},
    )
    return {"summary": str(out / "summary.json"), "requests": str(csv_path), "outputs": str(arrays)}


def _summary_json(report: DemoReport) -> dict[str, Any]:
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(report.config).items()}
    return {
        "config": config,
        "passed": report.passed,
        "seconds_of_data": report.seconds_of_data,
        "stream_wall_s": report.stream_wall_s,
        "wall_s": report.wall_s,
        "data_seconds_per_second": report.data_rate,
        "requests": report.requests,
        "requests_per_s": report.requests_per_s,
        "latency_p50_ms": report.percentile_ms(50),
        "latency_p99_ms": report.percentile_ms(99),
        "form": report.config.form,
        "floor_data_seconds_per_second": report.floor_rate,
        "ratio_to_floor": report.floor_ratio,
        "max_abs_error": report.max_abs_error,
        "reference_scale": report.reference_scale,
        "noise_reduction_db": report.noise_reduction_db,
        "server_ready_s": report.server_ready_s,
        "export_verification": report.export_report,
        "files": report.files,
    }
