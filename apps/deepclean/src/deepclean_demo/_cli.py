"""``hermes demo``: registered through the ``hermes.cli`` entry-point group (see this app's pyproject).

This module imports neither torch nor the demo's own modules until the command runs, so the
``hermes`` command line loads it cheaply and a missing torch is reported as an install hint.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import typer

__all__ = ["demo"]


def demo(
    seconds: float = typer.Option(8.0, "--seconds", "-s", help="Seconds of data per stream (4096 Hz)."),
    streams: int = typer.Option(4, "--streams", "-n", help="Concurrent sequences streamed at once."),
    rate: str = typer.Option(
        "max",
        "--rate",
        help="'max' streams as fast as possible; a number streams at that multiple of real time.",
    ),
    output: Path = typer.Option(
        Path("demo-output"), "--output", "-o", help="Folder for the figure and records."
    ),
    stride: int = typer.Option(16, "--stride", help="Samples between windows (>= 8)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Windows per request (>= 8)."),
    num_updates: int = typer.Option(
        32, "--num-updates", help="Predictions averaged into each output sample."
    ),
    train_steps: int = typer.Option(
        60, "--train-steps", help="Training steps before export (0: random weights)."
    ),
    max_in_flight: int = typer.Option(16, "--max-in-flight", help="Requests the client keeps outstanding."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a live progress bar."),
    form: str = typer.Option(
        "fused", "--form", help="'fused' (one stateful model, fastest) or 'ensemble' (three models)."
    ),
) -> None:
    """Stream a DeepClean-shaped noise regression through quiver, aeriel and stillwater, and check it.

    Trains a small 1-D convolutional network (21 witness channels at 4096 Hz -> noise), exports it
    as a fused streaming model (snapshotter -> network -> online averager in one model, K = 4096;
    --form ensemble for three models), serves it on the local Triton runtime, streams synthetic
    data through a stillwater pipeline and checks every output sample against the network run
    offline. Prints the ratio to the network's in-process rate (the floor). Writes a figure and
    records to --output. Needs torch.
    """
    from deepclean_demo import DemoConfig, DemoError, run_demo

    try:
        config = DemoConfig(
            seconds=seconds, streams=streams, rate=None if rate == "max" else float(rate), output=output,
            stride=stride, batch_size=batch_size, num_updates=num_updates, train_steps=train_steps,
            max_in_flight=max_in_flight, progress=progress, form=form,
        )  # fmt: skip
    except ValueError as exc:
        typer.echo(f"hermes demo: {exc}", err=True)
        raise typer.Exit(2) from None
    logging.getLogger("deepclean_demo").setLevel(logging.INFO)
    # torch's ONNX exporter warns about torchvision ops this network does not use
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module="copyreg")
    try:
        report = run_demo(config)
    except DemoError as exc:
        typer.echo(f"hermes demo: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(report.summary())
