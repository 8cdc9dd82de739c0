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

Only the libraries' public APIs are used. torch is imported when the network is built, so this
module imports without it (:func:`run_demo` then raises :class:`TorchMissingError`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np

from deepclean_demo.config import SAMPLE_RATE_HZ, DemoConfig
from deepclean_demo.data import WITNESS_CHANNELS, make_stream
from deepclean_demo.exceptions import DemoError, require_torch
from deepclean_demo.report import DemoReport, figure, summary_json, write_records
from deepclean_demo.stages import Checker, StreamPlan, WitnessSource
from hermes.aeriel import serve
from hermes.aeriel.profile import StreamGroup, StreamTarget, floor_rate, load_network
from hermes.quiver import EnsembleModel, Model, ModelRepository, Platform
from hermes.quiver.streaming import FusedInput, FusedOutput, add_fused_streaming_model
from hermes.stillwater import InferenceStage, Map, Pipeline, Source

__all__ = ["run_demo"]

logger = logging.getLogger("deepclean_demo")

MODEL = "deepclean-stream"  # the streaming model the client talks to
NETWORK = "deepclean"  # the network inside it


@dataclasses.dataclass(frozen=True)
class _Exported:
    model: str
    input: str
    output: str
    report: str


@dataclasses.dataclass
class _Streamed:
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    latencies: list[float] = dataclasses.field(default_factory=list)
    wall_s: float = 0.0
    ready_s: float = 0.0


def run_demo(config: DemoConfig) -> DemoReport:
    """Run the demo; raises :class:`DemoError` if a served sample differs from the offline network.

    Raises:
        TorchMissingError: torch is not installed (the message says how to install it).
        DemoError: a stream came back incomplete, or a served sample differs from the offline
            network beyond ``config.atol + config.rtol * |offline|``.
    """
    require_torch()
    started = time.monotonic()
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    net, weights = _train(config, out)
    logger.info("exporting the streaming model to %s", out / "model-repository")
    exported = _export(config, out / "model-repository", net)
    plan = StreamPlan(
        seeds=tuple(config.seed * 1000 + i + 1 for i in range(config.streams)),
        seconds=config.seconds, kernel_size=config.kernel_size, stride=config.stride,
        batch_size=config.batch_size, num_updates=config.num_updates,
        input_name=exported.input, output_name=exported.output,
    )  # fmt: skip
    streamed = _stream(config, plan, exported.model, weights, out)
    worst = max(streamed.records, key=lambda r: r["max_abs_error"])
    report = _report(config, plan, streamed, out, exported.report, time.monotonic() - started)
    (out / "summary.json").write_text(json.dumps(summary_json(report), indent=2))
    if not report.passed:
        raise DemoError(
            f"served outputs differ from the offline network: max |difference| {worst['max_abs_error']:.3g} "
            f"in stream {worst['stream']} (tolerance atol {config.atol:g} + rtol {config.rtol:g})\n"
            + report.summary()
        )
    return report


def _train(config: DemoConfig, out: Path) -> tuple[Any, Path]:
    """Build the network, train it on its own stream and save its weights (the checker reloads them)."""
    import torch

    from deepclean_demo.network import DeepCleanNet, train

    torch.manual_seed(config.seed)
    logger.info("building and training the network (%d steps)", config.train_steps)
    net = DeepCleanNet()
    training = make_stream(16.0, seed=10_000 + config.seed)
    train(net, training, steps=config.train_steps, window=1024, seed=config.seed)
    weights = out / "network.pt"
    torch.save(net.state_dict(), weights)
    return net, weights


def _export(config: DemoConfig, repo_dir: Path, net: Any) -> _Exported:
    """Export the network (verified against torch) and the streaming model around it."""
    import torch

    if repo_dir.exists():
        shutil.rmtree(repo_dir)
    repo = ModelRepository(repo_dir)
    model = repo.add(NETWORK, platform=Platform.ONNX)
    model.config.add_input("witness", [config.batch_size, WITNESS_CHANNELS, config.kernel_size])
    model.config.add_output("noise", [config.batch_size, config.kernel_size])
    model.config.add_instance_group(kind="cpu", count=config.network_instances)
    example = torch.randn(config.batch_size, WITNESS_CHANNELS, config.kernel_size)
    report = str(model.export_version(net, example_inputs=[example]).report)
    if config.form == "fused":
        fused = add_fused_streaming_model(
            model, stride=config.stride, batch_size=config.batch_size, num_updates=config.num_updates,
            name=MODEL, inputs=[FusedInput(key="witness", tensors=("witness",))],
            outputs=[FusedOutput(key="noise_estimate", tensor="noise")], instances=config.streams,
            idle_timeout_s=120,
        )  # fmt: skip
        return _Exported(fused.name, fused.inputs["witness"], fused.outputs["noise_estimate"], report)
    return _export_ensemble(config, repo, model, report)


def _export_ensemble(config: DemoConfig, repo: ModelRepository, model: Model, report: str) -> _Exported:
    """The three-model form: snapshotter -> network -> online averager as a Triton ensemble."""
    ensemble = cast(EnsembleModel, repo.add(MODEL, platform=Platform.ENSEMBLE))
    group = ensemble.add_streaming_inputs(
        model.inputs["witness"], stride=config.stride, batch_size=config.batch_size, key="witness",
        instances=config.streams, idle_timeout_s=120,
    )  # fmt: skip
    out = ensemble.add_streaming_output(
        model.outputs["noise"], stride=config.stride, num_updates=config.num_updates, key="noise_estimate",
        instances=config.streams, idle_timeout_s=120,
    )  # fmt: skip
    ensemble.export_version()
    return _Exported(MODEL, group.input.name, out.output.name, report)


def _stream(config: DemoConfig, plan: StreamPlan, model: str, weights: Path, out: Path) -> _Streamed:
    """Serve the repository and stream every update of every stream through a stillwater pipeline."""
    total = plan.updates * config.streams
    rate_hz = None
    if config.rate is not None:
        rate_hz = config.rate * config.streams * SAMPLE_RATE_HZ / plan.update_size
    streamed = _Streamed()
    logger.info("serving on the local Triton runtime; streaming %d requests", total)
    with serve(out / "model-repository", models=[model], log_file=out / "tritonserver.log") as server:
        streamed.ready_s = server.ready_after_s or 0.0
        pipeline = (
            Source(WitnessSource, args=(plan,), rate_hz=rate_hz, name="witness-source")
            >> InferenceStage(
                server.grpc_url,
                model,
                max_pending=2 * config.max_in_flight,
                client_kwargs={"max_in_flight": config.max_in_flight, "timeout_s": 120.0},
            )
            >> Map(Checker, args=(plan, str(weights), {}), name="checker")
        )
        _drain(pipeline, streamed, total, config.progress)
    logger.info("streamed in %.2f s; checked every sample against the offline network", streamed.wall_s)
    streamed.records.sort(key=lambda r: r["stream"])
    if len(streamed.records) != config.streams or sum(r["updates"] for r in streamed.records) != total:
        raise DemoError(
            f"expected {total} results from {config.streams} streams, got {len(streamed.latencies)}"
        )
    return streamed


def _drain(pipeline: Pipeline, streamed: _Streamed, total: int, progress: bool) -> None:
    """Run the pipeline to its end; the stream's wall time stops at the last result."""
    started = time.monotonic()
    with pipeline, _progress(progress, total) as advance:
        for item in pipeline:
            if item[0] == "progress":
                streamed.latencies.append(item[3])
                advance()
                if len(streamed.latencies) == total:
                    streamed.wall_s = time.monotonic() - started
            else:
                streamed.records.append(item[1])
    if not streamed.wall_s:
        streamed.wall_s = time.monotonic() - started


def _report(
    config: DemoConfig, plan: StreamPlan, streamed: _Streamed, out: Path, export_report: str, wall_s: float
) -> DemoReport:
    """Measure the floor, compare every stream, write the records and the figure."""
    records = streamed.records
    floor = _floor(config, out / "model-repository", plan)
    passed = all(
        r["served"].shape == r["reference"].shape
        and np.allclose(r["served"], r["reference"], rtol=config.rtol, atol=config.atol)
        for r in records
    )
    files = write_records(out, records)
    delay = (config.num_updates - 1) * config.stride
    reduction = figure(out / "demo.png", records[0], plan, streamed.latencies, delay)
    files["figure"] = str(out / "demo.png")
    return DemoReport(
        config=config,
        seconds_of_data=config.streams * plan.samples / SAMPLE_RATE_HZ,
        wall_s=wall_s,
        stream_wall_s=streamed.wall_s,
        requests=len(streamed.latencies),
        latencies_s=streamed.latencies,
        max_abs_error=max(r["max_abs_error"] for r in records),
        reference_scale=max(r["reference_scale"] for r in records),
        passed=passed,
        noise_reduction_db=reduction,
        export_report=export_report,
        server_ready_s=streamed.ready_s,
        files=files,
        floor_rate=floor,
    )


def _floor(config: DemoConfig, repo_dir: Path, plan: StreamPlan) -> float:
    """Seconds of data per second of the network in-process on the streams' windows (the compute floor)."""
    group = StreamGroup(
        input="witness", channels=WITNESS_CHANNELS, update_size=plan.update_size,
        kernel_size=config.kernel_size, stride=config.stride, batch_size=config.batch_size,
        tensors=(("witness", WITNESS_CHANNELS),),
    )  # fmt: skip
    target = StreamTarget(model=MODEL, groups=(group,), outputs=("noise",))
    data = [{"witness": plan.stream(i).witnesses} for i in range(len(plan.seeds))]
    return floor_rate(load_network(repo_dir, NETWORK), target, data, sample_rate=SAMPLE_RATE_HZ)


@contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[], None]]:
    """A live progress bar over the requests (a no-op when disabled); yields the advance function."""
    if not enabled:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("streaming"), BarColumn(), MofNCompleteColumn(), TextColumn("requests"),
        TimeElapsedColumn(), transient=False,
    ) as progress:  # fmt: skip
        task = progress.add_task("stream", total=total)
        yield lambda: progress.advance(task)
