"""aeriel's own ``hermes`` commands."""

from __future__ import annotations

import signal
import sys
import tempfile
import textwrap
import threading
from pathlib import Path
from types import FrameType

import numpy as np
import typer

from hermes.aeriel._cli import register

_ADD_ONE_CONFIG = """\
name: "add_one"
backend: "python"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

_ADD_ONE_MODEL = textwrap.dedent(
    """\
    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            return [
                pb_utils.InferenceResponse(
                    [pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy() + np.float32(1))]
                )
                for r in requests
            ]
    """
)


def demo() -> None:
    """Start the local Triton server on a small example repository, send one inference, stop it."""
    import tritonclient.grpc as grpcclient

    from hermes.aeriel.serve import serve

    with tempfile.TemporaryDirectory(prefix="hermes-demo-") as tmp:
        repo = Path(tmp) / "repo"
        (repo / "add_one" / "1").mkdir(parents=True)
        (repo / "add_one" / "config.pbtxt").write_text(_ADD_ONE_CONFIG)
        (repo / "add_one" / "1" / "model.py").write_text(_ADD_ONE_MODEL)
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        with serve(repo, models=["add_one"]) as server:
            typer.echo(f"tritonserver ready in {server.ready_after_s:.2f} s at grpc {server.grpc_url}")
            with grpcclient.InferenceServerClient(server.grpc_url) as client:
                inp = grpcclient.InferInput("x", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                y = client.infer("add_one", [inp]).as_numpy("y")
        typer.echo(f"input  {x.tolist()}\noutput {y.tolist()}")
        if not np.array_equal(y, x + 1):
            raise typer.Exit(1)


register("demo", demo)


def _parse_gpus(value: str | None) -> list[int] | None:
    if value is None or value.strip() == "":
        return None
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated GPU indices such as 0,1; got {value!r}") from None


def serve_command(
    repository: str = typer.Argument(
        ..., help="Model repository: a directory (or gs:// / s3:// for container runtimes)."
    ),
    runtime: str = typer.Option(
        "local",
        "--runtime",
        help="How to run tritonserver: local (the bundled binary), apptainer or singularity.",
    ),
    image: str | None = typer.Option(
        None,
        "--image",
        help="Container image for apptainer/singularity: a .sif path, a name in $HERMES_IMAGE_DIR, or a URI.",
    ),
    gpus: str | None = typer.Option(
        None,
        "--gpus",
        help="GPU indices the server may use, comma-separated (e.g. 0,1), relative to CUDA_VISIBLE_DEVICES.",
    ),
    http_port: int | None = typer.Option(
        None, "--http-port", help="HTTP/REST port (a free one when omitted)."
    ),
    grpc_port: int | None = typer.Option(None, "--grpc-port", help="gRPC port (a free one when omitted)."),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="Prometheus metrics port (a free one when omitted)."
    ),
    model: list[str] | None = typer.Option(
        None, "--model", "-m", help="Model to load at start; repeat for several. Default: every model."
    ),
    log_file: Path | None = typer.Option(
        None, "--log-file", help="File that receives the server log (default: a temporary file)."
    ),
    address: str = typer.Option(
        "127.0.0.1", "--address", help="Address every endpoint binds (loopback by default)."
    ),
    timeout_s: float = typer.Option(
        120.0, "--timeout", help="Seconds to wait for the server and models to be ready."
    ),
    server_arg: list[str] | None = typer.Option(
        None, "--server-arg", help="Extra tritonserver argument, passed unchanged; repeat for several."
    ),
) -> None:
    """Start Triton on REPOSITORY, print its endpoints when ready, and serve until Ctrl-C or SIGTERM."""
    from hermes.aeriel.exceptions import AerielError
    from hermes.aeriel.serve import serve

    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server = serve(
                repository,
                runtime=runtime,
                image=image,
                models=model or None,
                address=address,
                http_port=http_port,
                grpc_port=grpc_port,
                metrics_port=metrics_port,
                log_file=log_file,
                server_args=server_arg or (),
                gpus=_parse_gpus(gpus),
                timeout_s=timeout_s,
            )
        except (AerielError, ValueError) as exc:
            typer.echo(f"hermes serve: error: {exc}", err=True)
            raise typer.Exit(1) from None
        with server:
            typer.echo(
                f"tritonserver ready ({server.runtime.name}, pid {server.pid}) in {server.ready_after_s:.2f} s"
            )
            typer.echo(f"  grpc     {server.grpc_url}")
            typer.echo(f"  http     {server.http_url}")
            typer.echo(f"  metrics  {server.metrics_url}")
            typer.echo(f"  log      {server.log_file}")
            typer.echo("Press Ctrl-C to stop.")
            sys.stdout.flush()
            process = server.process
            assert process is not None

            def watch() -> None:
                process.wait()
                stop.set()

            watcher = threading.Thread(target=watch, name="hermes-serve-watch", daemon=True)
            watcher.start()
            stop.wait()
            if not received:
                error = server.exit_error()
                typer.echo(f"hermes serve: error: {error}", err=True)
                raise typer.Exit(1)
            typer.echo(f"received {signal.Signals(received[0]).name}; stopping tritonserver")
        typer.echo(f"stopped (exit status {server.returncode})")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


register("serve", serve_command)
