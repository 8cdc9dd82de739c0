"""``serve()``: check the arguments, then start a :class:`Server` and wait until it is ready.

```
 serve() ── _checked_arguments ── _runtime_for ── _Launch ──▶ attempt 1..3 (auto ports):
                                                             ServerSpec -> Server.start()
                                                             -> wait_ready() -> return it
                                                             (PortInUseError: close, retry)
```
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import signal
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypedDict

from hermes.aeriel.exceptions import PortInUseError, ServerExitedError
from hermes.aeriel.server._advertise import advertised_host
from hermes.aeriel.server._checks import check_address, check_names, check_ports_free, check_seconds
from hermes.aeriel.server._runtime import ModelControl, Runtime, ServerSpec
from hermes.aeriel.server._server import Server, free_ports
from hermes.aeriel.server.cpu_overlay import CpuOverlay

__all__ = ["get_runtime", "serve"]

logger = logging.getLogger("hermes.aeriel.server")


def get_runtime(runtime: str | Runtime, *, image: str | None = None) -> Runtime:
    """A :class:`Runtime` from its name (``local``, ``apptainer``, ``singularity``, ``native``) or itself."""
    if isinstance(runtime, Runtime):
        return runtime
    if runtime == "local":
        from hermes.aeriel.server.local import LocalRuntime

        if image is not None:
            raise ValueError("image= is for container runtimes; the local runtime runs the bundled binary")
        return LocalRuntime()
    if runtime in ("apptainer", "singularity"):
        from hermes.aeriel.server.apptainer import ApptainerRuntime

        if image is None:
            raise ValueError(f"runtime={runtime!r} needs image= (a .sif file or an image name)")
        return ApptainerRuntime(image=image, executable=runtime)
    if runtime == "native":
        from hermes.aeriel.server.native import NativeRuntime

        if image is not None:
            raise ValueError(
                "image= is for container runtimes; the native runtime runs tritonserver from PATH"
            )
        return NativeRuntime()
    raise ValueError(f"unknown runtime {runtime!r}; expected 'local', 'apptainer', 'singularity' or 'native'")


def _gpu_selection(gpus: Sequence[int] | str | None) -> tuple[int, ...] | None:
    """``gpus=`` as the spec holds it: ``None`` (the default set), ``()`` (none) or indices."""
    if gpus is None or gpus == "all":
        return None
    if gpus == "none":
        return ()
    if isinstance(gpus, str):
        raise TypeError(
            f"gpus must be a list of int values (GPU indices such as [0, 1]), 'none' or 'all'; "
            f"got the string {gpus!r}"
        )
    indices = check_names("gpus", gpus, item=int) or ()
    if any(g < 0 for g in indices):
        raise ValueError(f"gpus must be GPU indices (e.g. [0, 1]), 'none' or 'all', got {gpus!r}")
    return indices


def serve(
    repository: str | os.PathLike[str],
    *,
    runtime: str | Runtime = "local",
    image: str | None = None,
    models: Sequence[str] | None = None,
    model_control: str | ModelControl = ModelControl.EXPLICIT,
    address: str = "127.0.0.1",
    http_port: int | None = None,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    log_file: str | os.PathLike[str] | None = None,
    server_args: Sequence[str] = (),
    gpus: Sequence[int] | str | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 120.0,
    exit_timeout_s: int = 5,
    wait: bool = True,
    advertise: str | None = None,
    endpoints_file: str | os.PathLike[str] | None = None,
    name: str | None = None,
    instance_kind: str | None = None,
    stop_grace_s: float = 10.0,
) -> Server:
    """Start a Triton Inference Server on a model repository; use as a context manager.

    ```python
    with serve("model-repo") as server:
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)
    ```

    Args:
        repository: model repository (a directory; ``gs://``/``s3://`` for container runtimes).
        runtime: ``"local"`` (the ``tritonserver`` binary of the ``nvidia-pytriton`` wheel,
            default), ``"apptainer"``, ``"singularity"``, or a :class:`Runtime`.
        image: container image for the container runtimes.
        models: models to load (explicit mode); default every model in the repository.
        model_control: ``"explicit"`` (default), ``"poll"`` or ``"none"``.
        address: address all endpoints bind (loopback by default).
        http_port: its port; a free one is picked when all three are omitted.
        grpc_port: its port; a free one is picked when all three are omitted.
        metrics_port: its port; a free one is picked when all three are omitted.
        log_file: where the server log goes; a temporary file by default.
        server_args: extra ``tritonserver`` arguments.
        gpus: GPU indices (relative to this job's ``CUDA_VISIBLE_DEVICES``) the server may use;
            ``"none"`` (or ``[]``) for the CPU only; default (``None`` or ``"all"``): the
            Apptainer runtime passes every GPU the job has (``--nv``), the local runtime
            leaves ``CUDA_VISIBLE_DEVICES`` as it is.
        env: extra environment variables for the server.
        timeout_s: how long to wait for the server and the models to be ready.
        exit_timeout_s: how long Triton waits for in-flight requests when stopped.
        wait: wait for readiness before returning.
        advertise: the host other nodes should use: ``None`` (the bind address; this node's
            routable address for a wildcard bind such as ``0.0.0.0``), ``"auto"`` (this
            node's routable address) or a host name/address. Never a wildcard.
        endpoints_file: once ready, write the server's endpoints there (the JSON
            :func:`hermes.aeriel.routing.load_endpoints` reads), atomically; removed on stop.
        name: the server's name in the endpoints file (default ``host:grpc_port``).
        instance_kind: ``"cpu"`` serves ``KIND_GPU`` instance groups as ``KIND_CPU`` (same
            count) from a temporary overlay of a local repository, for development and CI on
            machines without GPUs; the repository's files are never changed and the overlay
            is removed when the server stops. ``None`` (default) serves the configs as written.
        stop_grace_s: seconds after ``exit_timeout_s`` before a server that does not stop is
            killed (batch jobs whose scheduler signals every process of the job use a few).

    Returns:
        The running :class:`Server`; closing it stops the process and removes its
        shared-memory regions.

    Raises:
        ValueError: an argument is malformed (names it and what is expected).
        ServerPreflightError: the server cannot start here (names the fix).
        ModelLoadError: a model failed to load (quotes Triton's reason).
        ServerExitedError: the process ended before it was ready. One that crashed (SIGABRT,
            SIGSEGV, SIGBUS) is started once more, with a warning quoting its log, first.
        ServerStartTimeout: not ready within ``timeout_s``.
    """
    models = check_names("models", models)
    server_args = _checked_arguments(server_args, timeout_s=timeout_s, exit_timeout_s=exit_timeout_s)
    check_seconds("stop_grace_s", stop_grace_s, allow_zero=True)
    check_address(address)
    ports = (http_port, grpc_port, metrics_port)
    check_ports_free(address, dict(zip(("http_port", "grpc_port", "metrics_port"), ports, strict=True)))
    advertised_host(address, advertise)  # a bad advertise= fails before anything is made
    if instance_kind not in (None, "cpu"):
        raise ValueError(f"instance_kind must be None (as written) or 'cpu', got {instance_kind!r}")
    repo = _repository(repository)
    rt = _runtime_for(get_runtime(runtime, image=image), repo, cpu=instance_kind == "cpu")
    spec = ServerSpec(
        repository=repo, address=address, model_control=ModelControl(model_control),
        models=tuple(models) if models is not None else None, server_args=server_args,
        exit_timeout_s=exit_timeout_s, gpus=_gpu_selection(gpus), env=dict(env or {}),
        log_file=Path(log_file) if log_file is not None else Path(os.devnull), **_ports(address, ports),
    )  # fmt: skip
    if log_file is None:  # made last: nothing is left behind by an argument refused above
        spec = dataclasses.replace(spec, log_file=_temporary_log())
    launch = _Launch(
        spec=spec, given_ports=ports, owns_log=log_file is None, cpu=instance_kind == "cpu", runtime=rt,
        advertise=advertise, endpoints_file=endpoints_file, name=name, grace_s=stop_grace_s,
    )  # fmt: skip
    return launch.run(timeout_s if wait else None)


# Signals of a crash inside tritonserver itself, never of a configuration it refused (that exits
# with status 1) nor of a kill from outside (SIGKILL: the OOM killer, a scheduler; SIGTERM).
# Seen once in a run of this project's CI script: the python backend aborting while it started 8
# instances at once on a loaded 2-core machine ("terminate called after throwing an instance of
# 'boost::interprocess::lock_exception'"); the same test started cleanly in every other run.
_CRASH_SIGNALS = (signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS)


def _crashed(exc: ServerExitedError) -> bool:
    """Whether the server died of a crash of its own while it started."""
    return exc.returncode is not None and -exc.returncode in _CRASH_SIGNALS


def _temporary_log() -> Path:
    fd, path = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
    os.close(fd)
    return Path(path)


class _Ports(TypedDict):
    http_port: int
    grpc_port: int
    metrics_port: int
    shm_prefix: str


def _ports(address: str, given: tuple[int | None, int | None, int | None]) -> _Ports:
    """ServerSpec's ``*_port`` fields (free ones where not given) and a new ``shm_prefix``."""
    picked = free_ports(3, address if ":" not in address else "::1")
    http, grpc, metrics = (g if g is not None else p for g, p in zip(given, picked, strict=True))
    prefix = f"hermes{os.getpid()}x{uuid.uuid4().hex[:8]}_"
    return _Ports(http_port=http, grpc_port=grpc, metrics_port=metrics, shm_prefix=prefix)


def _checked_arguments(
    server_args: Sequence[str], *, timeout_s: float, exit_timeout_s: int
) -> tuple[str, ...]:
    """``server_args`` as a tuple, after the checks of the arguments serve() does not pass on."""
    args = tuple(check_names("server_args", server_args) or ())
    check_seconds("timeout_s", timeout_s)
    check_seconds("exit_timeout_s", exit_timeout_s, allow_zero=True)
    if any(a.replace(" ", "=") in ("--allow-grpc=false", "--allow-grpc=0") for a in args):
        raise ValueError(
            "server_args turn gRPC off (--allow-grpc=false), but hermes checks and controls the server "
            "over gRPC; leave gRPC on (bind it to 127.0.0.1 with --grpc-address to keep it local)"
        )
    return args


def _repository(repository: str | os.PathLike[str]) -> str:
    """A local repository as an absolute path; a remote one (``gs://``, ``s3://``) as given."""
    repo = os.fspath(repository)
    if "://" not in repo and Path(repo).exists():
        return str(Path(repo).resolve())
    return repo


def _runtime_for(rt: Runtime, repo: str, *, cpu: bool) -> Runtime:
    """The runtime; for a CPU overlay under a container, one that also binds the repository."""
    from hermes.aeriel.server.apptainer import ApptainerRuntime

    if cpu and "://" not in repo and isinstance(rt, ApptainerRuntime):
        # a container follows the overlay's links only if the repository is bound at its own path
        rt = copy.copy(rt)
        rt.binds = (*rt.binds, f"{repo}:{repo}:ro")
    return rt


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Launch:
    """What serve() checked: started as a :class:`Server`, on new ports for a retry."""

    spec: ServerSpec
    given_ports: tuple[int | None, int | None, int | None]
    owns_log: bool
    cpu: bool
    runtime: Runtime
    advertise: str | None
    endpoints_file: str | os.PathLike[str] | None
    name: str | None
    grace_s: float

    def run(self, timeout_s: float | None) -> Server:
        """Start the server and (unless ``timeout_s`` is None) wait until it is ready.

        A port collision on ports serve() chose itself is retried on new ones (3 attempts in all).
        A server that crashes while starting (see :func:`_crashed`) is started once more.
        """
        port_retries = 2 if all(p is None for p in self.given_ports) else 0
        crash_retries = 1
        spec = self.spec
        while True:
            server = self._server(spec)
            try:
                server.start()
                if timeout_s is not None:
                    server.wait_ready(timeout_s)
                return server
            except PortInUseError:
                server.close()
                if not port_retries:
                    raise
                port_retries -= 1
                logger.warning("port collision starting tritonserver; retrying on new ports")
            except ServerExitedError as exc:
                server.close()
                if not (crash_retries and _crashed(exc)):
                    raise
                crash_retries -= 1
                logger.warning("tritonserver crashed while starting; starting it once more. %s", exc)
            except BaseException:
                server.close()
                raise
            spec = dataclasses.replace(spec, **_ports(spec.address, self.given_ports))

    def _server(self, spec: ServerSpec) -> Server:
        overlay = CpuOverlay(spec.repository) if self.cpu else None
        if overlay is not None:
            spec = dataclasses.replace(spec, repository=str(overlay.path))
        return Server(
            spec, self.runtime, owns_log=self.owns_log, advertise=self.advertise,
            endpoints_file=self.endpoints_file, name=self.name, overlay=overlay, grace_s=self.grace_s,
        )  # fmt: skip
