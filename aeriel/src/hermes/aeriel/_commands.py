"""aeriel's own ``hermes`` commands."""

from __future__ import annotations

import functools
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer

from hermes.aeriel._cli import register

if TYPE_CHECKING:
    from hermes.aeriel.server import Server


def _parse_gpus(value: str | None) -> list[int] | str | None:
    if value is None or value.strip() == "":
        return None
    if value.strip() in ("none", "all"):
        return value.strip()
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"expected comma-separated GPU indices such as 0,1, 'none' or 'all'; got {value!r}"
        ) from None


class _Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: unwind to the code that stops the server (not an error)."""

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.args[0]).name


class _StopSignals:
    """SIGINT and SIGTERM for ``hermes serve``, in a context that restores the previous handlers.

    Python runs signal handlers in the main thread between bytecodes. While *armed* (the
    server is starting or serving) the handler raises :class:`_Interrupted`, so a wait of
    any length ends at once; while disarmed (a process is being launched or stopped) it only
    records the signal, so a stop is never cut short and leaves no process half-closed.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self._armed = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if self._armed:
            self._armed = False
            raise _Interrupted(signum)

    def arm(self) -> None:
        """Let the next signal interrupt; raise at once for one already received."""
        self._armed = True
        if self.received:
            self._armed = False
            raise _Interrupted(self.received[0])

    def disarm(self) -> None:
        self._armed = False

    def __enter__(self) -> _StopSignals:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._armed = False
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _launch(start: Callable[[], Server], *, timeout_s: float, attempts: int, signals: _StopSignals,
            launched: list[Server]) -> Server:  # fmt: skip
    """Start a server with ``start()`` and wait until it is ready, interruptible by ``signals``.

    Every server started is appended to ``launched`` (the caller closes them). A start that
    fails on a port already in use is retried on new ports, ``attempts`` times in all.
    """
    from hermes.aeriel.exceptions import PortInUseError

    for attempt in range(attempts):
        server = start()
        launched.append(server)
        signals.arm()
        try:
            server.wait_ready(timeout_s)
            return server
        except PortInUseError:
            signals.disarm()
            server.close()
            if attempt + 1 == attempts:
                raise
            logging.getLogger("hermes.aeriel.server").warning(
                "port collision starting tritonserver; retrying on new ports"
            )
    raise AssertionError("unreachable")  # pragma: no cover


def _serve_until_stopped(start: Callable[[], Server], *, timeout_s: float, attempts: int) -> None:
    """Launch, announce, and serve until tritonserver ends (exit 1) or SIGINT/SIGTERM (exit 0).

    Whatever happens, every server launched is closed before this returns.
    """
    launched: list[Server] = []
    with _StopSignals() as signals:
        try:
            _serve_until_exit(
                start, timeout_s=timeout_s, attempts=attempts, signals=signals, launched=launched
            )
        except _Interrupted as stopped:
            signals.disarm()
            ready = any(s.ready_after_s is not None for s in launched)
            when = "" if ready else " before tritonserver was ready"
            typer.echo(f"received {stopped.signal_name}{when}; stopping tritonserver")
            for started in launched:
                started.close()
            typer.echo(f"stopped (exit status {launched[-1].returncode if launched else None})")
        finally:
            signals.disarm()
            for started in launched:
                started.close()


def _serve_until_exit(start: Callable[[], Server], *, timeout_s: float, attempts: int, signals: _StopSignals,
                      launched: list[Server]) -> None:  # fmt: skip
    """Serve until tritonserver ends by itself; a hermes error is printed and exits 1."""
    from hermes.aeriel.exceptions import AerielError

    try:
        server = _launch(start, timeout_s=timeout_s, attempts=attempts, signals=signals, launched=launched)
        _announce(server)
        _wait_for_exit(server)  # until tritonserver ends by itself (a signal raises _Interrupted)
        signals.disarm()
        raise server.exit_error()
    except (AerielError, ValueError) as exc:
        signals.disarm()
        for started in launched:
            started.close()
        typer.echo(f"hermes serve: error: {exc}", err=True)
        raise typer.Exit(1) from None


def serve_command(
    repository: str = typer.Argument(
        ..., help="Model repository: a directory (or gs:// / s3:// for container runtimes)."
    ),
    runtime: str = typer.Option(
        "local",
        "--runtime",
        help="How to run tritonserver: local (the bundled binary), apptainer, singularity, or native (tritonserver on PATH, inside a Triton image).",
    ),
    image: str | None = typer.Option(
        None,
        "--image",
        help="Container image for apptainer/singularity: a .sif path, a name in $HERMES_IMAGE_DIR, or a URI.",
    ),
    gpus: str | None = typer.Option(
        None,
        "--gpus",
        help="GPU indices the server may use, comma-separated (e.g. 0,1), relative to CUDA_VISIBLE_DEVICES; "
        "'none' for the CPU only. Default: every GPU the job has (apptainer: --nv where the host has GPUs).",
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
    advertise: str | None = typer.Option(
        None,
        "--advertise",
        help="Host other nodes use to reach the server: 'auto' (this node's routable address) or a "
        "name/address. Default: the bind address (the node's address for --address 0.0.0.0).",
    ),
    endpoints_file: Path | None = typer.Option(
        None,
        "--endpoints-file",
        help="Write the endpoints JSON (what RoutingClient and `hermes models` read) here once ready; "
        "removed on stop.",
    ),
    name: str | None = typer.Option(None, "--name", help="Server name in the endpoints file."),
    image_dir: Path | None = typer.Option(
        None, "--image-dir", help="Image directory (apptainer): looked at first, pulled images go there."
    ),
    pass_env: list[str] | None = typer.Option(
        None,
        "--pass-env",
        help="Host variable (glob) passed through apptainer --cleanenv, besides the default allow-list; "
        "repeat for several.",
    ),
    pull_timeout_s: float = typer.Option(
        3600.0, "--pull-timeout", help="Seconds a docker:// or oras:// image pull may take (apptainer)."
    ),
    exit_timeout_s: int = typer.Option(
        5, "--exit-timeout", min=0, help="Seconds Triton waits for in-flight requests when stopped."
    ),
    stop_grace_s: float = typer.Option(
        10.0,
        "--stop-grace",
        min=0.0,
        help="Seconds after the exit timeout before a server that does not stop is killed (batch jobs "
        "whose scheduler signals every process of the job use a few seconds).",
    ),
    cpu: bool = typer.Option(
        False,
        "--cpu",
        help="Serve KIND_GPU instance groups on the CPU, from a temporary overlay (the repository is not changed).",
    ),
) -> None:
    """Start Triton on REPOSITORY, print its endpoints when ready, and serve until Ctrl-C or SIGTERM."""
    from hermes.aeriel.server import serve

    chosen_runtime = _runtime(runtime, image, image_dir, pass_env, pull_timeout_s)
    start = functools.partial(
        serve, repository, runtime=chosen_runtime,
        image=None if image is not None and not isinstance(chosen_runtime, str) else image,
        models=model or None, address=address, http_port=http_port, grpc_port=grpc_port,
        metrics_port=metrics_port, log_file=log_file, server_args=server_arg or (), gpus=_parse_gpus(gpus),
        timeout_s=timeout_s, wait=False, advertise=advertise, endpoints_file=endpoints_file, name=name,
        exit_timeout_s=exit_timeout_s, instance_kind="cpu" if cpu else None, stop_grace_s=stop_grace_s,
    )  # fmt: skip
    auto_ports = http_port is None and grpc_port is None and metrics_port is None
    _serve_until_stopped(start, timeout_s=timeout_s, attempts=3 if auto_ports else 1)


def _runtime(runtime: str, image: str | None, image_dir: Path | None, pass_env: list[str] | None,
             pull_timeout_s: float) -> Any:  # fmt: skip
    """The runtime name, or an ApptainerRuntime carrying the container options."""
    if runtime not in ("apptainer", "singularity"):
        if image_dir is not None or pass_env:
            raise typer.BadParameter("--image-dir and --pass-env are for --runtime apptainer/singularity")
        return runtime
    if image is None:
        raise typer.BadParameter(f"--runtime {runtime} needs --image (a .sif file, an image name or a URI)")
    from hermes.aeriel.server.apptainer import DEFAULT_PASS_ENV, ApptainerRuntime

    return ApptainerRuntime(
        image=image, executable=runtime, image_dir=image_dir,
        pass_env=(*DEFAULT_PASS_ENV, *(pass_env or ())), pull_timeout_s=pull_timeout_s,
    )  # fmt: skip


def _wait_for_exit(server: Server) -> None:
    """Block until the server process ends."""
    process = server.process
    assert process is not None
    exited = threading.Event()

    def watch() -> None:
        process.wait()
        exited.set()

    threading.Thread(target=watch, name="hermes-serve-watch", daemon=True).start()
    exited.wait()


def _announce(server: Server) -> None:
    """Print where a ready server listens."""
    typer.echo(
        f"tritonserver ready ({server.runtime.name}, pid {server.pid}) in {server.ready_after_s:.2f} s"
    )
    typer.echo(f"  grpc     {server.grpc_url}")
    typer.echo(f"  http     {server.http_url}")
    typer.echo(f"  metrics  {server.metrics_url}")
    typer.echo(f"  log      {server.log_file}")
    if server.endpoints_file is not None:
        typer.echo(f"  endpoints file {server.endpoints_file}")
    if server.overlay is not None:
        typer.echo(f"  overlay  {server.overlay.path} (removed on stop)")
        for line in server.overlay.changes or ["no KIND_GPU instance group to move"]:
            typer.echo(f"  cpu      {line}")
    typer.echo("Press Ctrl-C to stop.")
    sys.stdout.flush()


register("serve", serve_command)
