"""A running Triton server process: start, readiness, log excerpts, stop by PID.

```
 caller thread                      watcher thread
 ─────────────                      ──────────────
 Server.start() ── Popen ──────────▶ proc.wait()  ── sets _exited, logs an
   wait_ready(): polls /v2/health/ready,              unexpected exit
   the gRPC port and /metrics (Triton starts
   metrics last), then /v2/models/<m>/ready,
   waking early on _exited
 Server.close(): SIGTERM (or runtime stop), SIGKILL after the grace period,
   unlink /dev/shm/<own prefix>*, runtime cleanup
```
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from hermes.aeriel.exceptions import (
    ModelLoadError,
    PortInUseError,
    ServerError,
    ServerExitedError,
    ServerStartTimeout,
)
from hermes.aeriel.server._advertise import (
    advertised_host,
    local_host,
    remove_endpoints_file,
    write_endpoints_file,
)
from hermes.aeriel.server._checks import check_address, check_names, check_ports_free, check_seconds
from hermes.aeriel.server._runtime import ModelControl, Runtime, ServerSpec
from hermes.aeriel.server.cpu_overlay import CpuOverlay, cpu_hint

__all__ = ["Server", "free_ports", "get_runtime", "serve"]

logger = logging.getLogger("hermes.aeriel.server")

# Messages a start without a GPU prints that are never the reason anything failed, matched
# exactly (shared/research/triton-cpu.md §2.1). Anything else is kept: on an HPC node
# "failed to load 'x' version 1: ... CUDA driver version is insufficient ..." IS the cause.
_HARMLESS = re.compile(
    "|".join(
        (
            r"Unable to allocate pinned system memory, pinned memory pool will not be available: "
            r"CUDA driver version is insufficient for CUDA runtime version",
            r"CudaDriverHelper has not been initialized\.",
            r"DCGM unable to start",
            r"unable to create stream for [^:]+: CUDA driver version is insufficient for CUDA runtime version",
            r"Failed to initialize NVML",
        )
    )
)
_SHM_DIR = Path("/dev/shm")
_PORT_IN_USE = re.compile(r"Address already in use|Socket '[^']*' already in use")


def free_ports(count: int, address: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free TCP ports on ``address`` (Triton refuses port 0).

    All sockets are held open until every port is chosen, so the ports differ.
    """
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
            s.bind((address, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _session_members(session: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``session``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[3]) == session:
            members.append(int(entry.name))
    return members


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


def _log_excerpt(text: str, *, models: Iterable[str] = (), limit: int = 20) -> str:
    """The lines of a Triton log that explain a failure: errors and anything naming a model."""
    names = [m for m in models if m and m != "*"]
    picked = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or _HARMLESS.search(stripped):
            continue
        is_error = stripped[:1] == "E" and stripped[1:5].isdigit()
        mentions = any(f"'{n}'" in stripped or f'"{n}"' in stripped for n in names)
        if (
            is_error
            or mentions
            or "failed to load" in stripped
            or stripped.startswith(("error:", "Error"))
            or _PORT_IN_USE.search(stripped)
            or "UNAVAILABLE" in stripped
        ):
            picked.append(stripped)
    if not picked:
        picked = [ln.strip() for ln in text.splitlines() if ln.strip()][-limit:]
    return "\n".join(picked[-limit:])


class Server:
    """A Triton server process started by hermes, stopped by its PID.

    Use :func:`serve` to make one. Attributes ``grpc_url`` (``host:port``), ``http_url``
    (``http://host:port``), ``metrics_url`` (``http://host:port/metrics``) and
    ``log_file`` tell where it is.
    """

    def __init__(
        self,
        spec: ServerSpec,
        runtime: Runtime,
        *,
        grace_s: float = 10.0,
        owns_log: bool = False,
        advertise: str | None = None,
        endpoints_file: str | os.PathLike[str] | None = None,
        name: str | None = None,
        overlay: CpuOverlay | None = None,
    ):
        self.spec = spec
        self.overlay = overlay
        self.advertised_host = advertised_host(spec.address, advertise)
        self.endpoints_file = Path(endpoints_file) if endpoints_file is not None else None
        self.name = name or f"{self._bracket(self.advertised_host)}:{spec.grpc_port}"
        self._endpoints_written: str | None = None
        self.owns_log = owns_log
        self._failed = False
        self.runtime = runtime
        self.grace_s = grace_s
        self.process: subprocess.Popen[bytes] | None = None
        self._log_handle: Any = None
        self._exited = threading.Event()
        self._stopping = False
        self._closed = False
        self._watcher: threading.Thread | None = None
        self.started_at: float | None = None
        self.ready_after_s: float | None = None

    # ------------------------------------------------------------------ endpoints
    @staticmethod
    def _bracket(host: str) -> str:
        return f"[{host}]" if ":" in host and not host.startswith("[") else host

    @property
    def host(self) -> str:
        """The host other nodes use: the advertised one, never a wildcard such as ``0.0.0.0``."""
        return self._bracket(self.advertised_host)

    @property
    def _local_http(self) -> str:
        """``http://host:port`` this process polls (loopback for a wildcard bind)."""
        return f"http://{local_host(self.spec.address)}:{self.spec.http_port}"

    def endpoint_entry(self) -> dict[str, str]:
        """This server as one entry of the endpoints JSON (see :func:`hermes.aeriel.routing.load_endpoints`)."""
        return {
            "name": self.name,
            "grpc": self.grpc_url,
            "http": f"{self.host}:{self.spec.http_port}",
            "metrics": f"{self.host}:{self.spec.metrics_port}",
        }

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint (what tritonclient.grpc expects)."""
        return f"{self.host}:{self.spec.grpc_port}"

    @property
    def http_url(self) -> str:
        """``http://host:port`` of the HTTP/REST endpoint."""
        return f"http://{self.host}:{self.spec.http_port}"

    @property
    def metrics_url(self) -> str:
        """``http://host:port/metrics`` of the Prometheus endpoint."""
        return f"http://{self.host}:{self.spec.metrics_port}/metrics"

    @property
    def log_file(self) -> Path:
        return self.spec.log_file

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def returncode(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def read_log(self) -> str:
        try:
            return self.spec.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<Server {self.runtime.name} {state} grpc={self.grpc_url} http={self.http_url}>"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Server:
        """Launch the process (after the runtime's preflight checks); does not wait."""
        if self._closed:
            raise ServerError("this Server was closed; create a new one with serve()")
        if self.process is not None:
            raise ServerError("this Server is already started")
        self.runtime.preflight(self.spec)
        argv, env = self.runtime.command(self.spec)
        self.spec.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log_handle = open(self.spec.log_file, "ab", buffering=0)  # noqa: SIM115
        logger.info(
            "starting tritonserver (%s): repository %s, grpc %s, http %s, log %s",
            self.runtime.name,
            self.spec.repository,
            self.grpc_url,
            self.http_url,
            self.spec.log_file,
        )
        logger.debug("argv: %s", argv)
        try:
            self.process = subprocess.Popen(
                argv,
                stdout=self._log_handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            self._release()
            raise ServerError(f"could not run {argv[0]}: {exc}") from exc
        self.started_at = time.monotonic()
        self._watcher = threading.Thread(
            target=self._watch, name=f"triton-watch-{self.process.pid}", daemon=True
        )
        self._watcher.start()
        return self

    def _watch(self) -> None:
        assert self.process is not None
        code = self.process.wait()
        self._exited.set()
        if not self._stopping:
            logger.error(
                "tritonserver (pid %d) exited unexpectedly with status %s; log: %s",
                self.process.pid,
                code,
                self.spec.log_file,
            )

    def exit_error(self) -> ServerExitedError | ModelLoadError:
        """The error that describes why the process ended."""
        self._failed = True  # keep the log: the error points at it
        code = self.returncode
        text = self.read_log()
        models = self.spec.models or ()
        excerpt = _log_excerpt(text, models=models)
        failed = re.findall(
            r"(?:failed to load|failed to poll model|Poll failed for model directory|unable to load model) '([^']+)'",
            text,
        )
        if failed:
            names = ", ".join(dict.fromkeys(failed))
            return ModelLoadError(
                cpu_hint(
                    f"model {names} failed to load, so tritonserver exited (status {code}); "
                    f"from {self.spec.log_file}:\n{excerpt}"
                ),
                model=failed[0],
                reason=excerpt,
            )
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        # Triton's texts: "Address already in use" (HTTP, gRPC), "Socket '<addr>:<port>' already in use" (metrics)
        in_use = re.search(r"[^\n]*(?:Address already in use|Socket '[^']*' already in use)[^\n]*", text)
        if in_use:  # the cause first, not as the 5th line of the quoted log
            how += (
                f": a port is already in use ({in_use.group(0).strip()}); pass free ports or leave "
                "http_port/grpc_port/metrics_port out"
            )
        error_type = PortInUseError if in_use else ServerExitedError
        return error_type(
            f"tritonserver ({self.runtime.name}, grpc {self.grpc_url}) exited ({how}); "
            f"from {self.spec.log_file}:\n{excerpt}",
            returncode=code,
            log_excerpt=excerpt,
        )

    def check(self) -> None:
        """Raise if the server process has ended (it should be running)."""
        if self.process is None:
            raise ServerError("the server was not started")
        if self.process.poll() is not None:
            raise self.exit_error()

    def _get(self, path: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
        req = urllib.request.Request(self._local_http + path)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (OSError, urllib.error.URLError):
            return 0, b""

    def _post(self, path: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
        req = urllib.request.Request(self._local_http + path, data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (OSError, urllib.error.URLError):
            return 0, b""

    def repository_index(self) -> list[dict[str, Any]]:
        """Triton's repository index: every model with its version, state and reason."""
        code, body = self._post("/v2/repository/index")
        if code != 200:
            return []
        try:
            return list(json.loads(body))
        except ValueError:
            return []

    def wait_ready(self, timeout_s: float = 120.0, models: Sequence[str] | None = None) -> float:
        """Block until the server and ``models`` (default: the ones it was asked to load) are ready.

        Returns:
            Seconds from launch to ready.

        Raises:
            ServerExitedError: the process ended first (quotes the log).
            ModelLoadError: a model failed to load (quotes Triton's reason).
            ServerStartTimeout: not ready within ``timeout_s``.
        """
        if self.process is None:
            raise ServerError("the server was not started")
        models = check_names("models", models)
        wanted = list(models if models is not None else (self.spec.models or ()))
        deadline = time.monotonic() + timeout_s
        interval = 0.02
        # At start the server must report ready. For a model loaded later, liveness is enough:
        # Triton reports "not ready" for good once any model failed to load.
        health = "/v2/health/ready" if models is None else "/v2/health/live"
        server_ready = False
        while True:
            if self.process.poll() is not None:
                raise self.exit_error()
            if not server_ready:
                code, _ = self._get(health, timeout_s=1.0)
                # At start, every endpoint the Server reports must answer before serve() returns.
                server_ready = code == 200 and (models is not None or self._other_endpoints_answer())
            if server_ready:
                pending = [m for m in wanted if self._get(f"/v2/models/{m}/ready", 1.0)[0] != 200]
                if not pending:
                    self.ready_after_s = time.monotonic() - (self.started_at or time.monotonic())
                    logger.info("tritonserver ready after %.2f s (%s)", self.ready_after_s, self.grpc_url)
                    if models is None:
                        self._publish()
                    return self.ready_after_s
                self._raise_unavailable(pending)
            if time.monotonic() >= deadline:
                what = "server" if not server_ready else f"model(s) {', '.join(wanted)}"
                self._failed = True
                raise ServerStartTimeout(
                    f"tritonserver {what} not ready after {timeout_s:.0f} s (grpc {self.grpc_url}); "
                    f"last log lines from {self.spec.log_file}:\n{_log_excerpt(self.read_log(), models=wanted)}"
                )
            self._exited.wait(interval)
            interval = min(interval * 1.5, 0.25)

    def _other_endpoints_answer(self) -> bool:
        """The gRPC port accepts connections and /metrics answers 200 (unless turned off).

        Triton starts gRPC, then HTTP, then metrics: HTTP ready does not mean metrics is up.
        """
        args = " ".join(self.spec.server_args)
        if "--allow-grpc=false" not in args:
            try:
                socket.create_connection((self.spec.address, self.spec.grpc_port), timeout=1.0).close()
            except OSError:
                return False
        if "--allow-metrics=false" in args:
            return True
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=1.0) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _raise_unavailable(self, pending: Sequence[str]) -> None:
        """Raise for a pending model that Triton reports UNAVAILABLE with a reason."""
        for entry in self.repository_index():
            if entry.get("name") in pending and entry.get("state") == "UNAVAILABLE" and entry.get("reason"):
                reason = str(entry["reason"])
                self._failed = True
                raise ModelLoadError(
                    cpu_hint(f"model {entry['name']!r} failed to load: {reason}"),
                    model=str(entry["name"]),
                    reason=reason,
                )

    def load_model(
        self, name: str, *, config: Mapping[str, Any] | None = None, timeout_s: float = 120.0
    ) -> None:
        """Load (or reload) ``name`` in explicit mode and wait until it is ready.

        Raises:
            ModelLoadError: Triton refused it; the message quotes Triton's reason.
        """
        self.check()
        if self.overlay is not None:
            self.overlay.refresh()
        body = json.dumps({"parameters": {"config": json.dumps(dict(config))}} if config else {}).encode()
        req = urllib.request.Request(
            f"{self._local_http}/v2/repository/models/{name}/load", data=body, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout_s):
                pass
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            with contextlib.suppress(ValueError, KeyError, TypeError):
                detail = json.loads(detail)["error"]
            log = _log_excerpt(self.read_log(), models=[name])
            raise ModelLoadError(
                cpu_hint(f"model {name!r} failed to load: {detail}\nfrom {self.spec.log_file}:\n{log}"),
                model=name,
                reason=str(detail),
            ) from None
        except (OSError, urllib.error.URLError) as exc:
            self.check()
            raise ServerError(f"could not reach {self.http_url} to load {name!r}: {exc}") from exc
        self.wait_ready(timeout_s, models=[name])

    def unload_model(self, name: str, *, timeout_s: float = 60.0) -> None:
        """Unload ``name`` (explicit mode) and wait until it is no longer ready."""
        self.check()
        req = urllib.request.Request(
            f"{self._local_http}/v2/repository/models/{name}/unload", data=b"{}", method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout_s):
                pass
        except urllib.error.HTTPError as exc:
            raise ServerError(f"unloading {name!r} failed: {exc.read().decode(errors='replace')}") from None
        deadline = time.monotonic() + timeout_s
        while self._get(f"/v2/models/{name}/ready", 1.0)[0] == 200:
            if time.monotonic() > deadline:
                raise ServerStartTimeout(f"model {name!r} still ready {timeout_s:.0f} s after unload")
            self._exited.wait(0.02)

    def stop(self) -> int | None:
        """Stop the process by PID: SIGTERM (or the runtime's stop command), SIGKILL after the grace period."""
        if self.process is None:
            return None
        self._stopping = True
        if self.process.poll() is None:
            stop_cmd = self.runtime.stop_command(self.spec)
            if stop_cmd:
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    subprocess.run(list(stop_cmd), capture_output=True, timeout=self.grace_s, check=False)
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.spec.exit_timeout_s + self.grace_s)
            except subprocess.TimeoutExpired:
                logger.warning("tritonserver pid %d ignored SIGTERM; killing it", self.process.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # Stubs of a killed server may survive in its session: end them and wait until they are gone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        deadline = time.monotonic() + self.grace_s
        while _session_members(self.process.pid) and time.monotonic() < deadline:
            self._exited.wait(0.02)
        if self._watcher is not None:
            self._watcher.join(5)
        return self.process.returncode

    def _publish(self) -> None:
        """Write the endpoints file (once ready), so that clients on other nodes find the server."""
        if self.endpoints_file is not None and self._endpoints_written is None:
            self._endpoints_written = write_endpoints_file(self.endpoints_file, self.endpoint_entry())
            logger.info("endpoints written to %s", self.endpoints_file)

    def _release(self) -> None:
        if self.endpoints_file is not None and self._endpoints_written is not None:
            remove_endpoints_file(self.endpoints_file, self._endpoints_written)
            self._endpoints_written = None
        for region in _SHM_DIR.glob(f"{self.spec.shm_prefix}*"):
            with contextlib.suppress(OSError):
                region.unlink()
        self.runtime.cleanup()
        if self.overlay is not None:
            self.overlay.close()
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        if self.owns_log and not self._failed:
            with contextlib.suppress(OSError):
                self.spec.log_file.unlink()

    def close(self) -> None:
        """Stop the server and remove what it left: its own shared-memory regions, temp files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.stop()
        finally:
            self._release()

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        died = self.process is not None and self.process.poll() is not None and not self._stopping
        error = self.exit_error() if died else None
        self.close()
        if error is None:
            return
        if exc is None:
            raise error
        exc.add_note(f"hermes: the Triton server had exited while in use: {error}")


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

    Returns:
        The running :class:`Server`; closing it stops the process and removes its
        shared-memory regions.

    Raises:
        ServerPreflightError: the server cannot start here (names the fix).
        ModelLoadError: a model failed to load (quotes Triton's reason).
        ServerExitedError: the process ended before it was ready.
        ServerStartTimeout: not ready within ``timeout_s``.
    """
    models = check_names("models", models)
    server_args = check_names("server_args", server_args) or ()
    gpu_list = _gpu_selection(gpus)
    check_seconds("timeout_s", timeout_s)
    check_seconds("exit_timeout_s", exit_timeout_s, allow_zero=True)
    check_address(address)
    check_ports_free(address, {"http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port})
    rt = get_runtime(runtime, image=image)
    advertised_host(address, advertise)  # a bad advertise= fails before anything is made
    repo = os.fspath(repository)
    if "://" not in repo:
        repo = str(Path(repo).resolve()) if Path(repo).exists() else repo
    if instance_kind not in (None, "cpu"):
        raise ValueError(f"instance_kind must be None (as written) or 'cpu', got {instance_kind!r}")
    if instance_kind == "cpu" and "://" not in repo:
        from hermes.aeriel.server.apptainer import ApptainerRuntime

        if isinstance(rt, ApptainerRuntime):
            # a container follows the overlay's links only if the repository is bound at its own path
            rt = copy.copy(rt)
            rt.binds = (*rt.binds, f"{repo}:{repo}:ro")
    auto_ports = http_port is None and grpc_port is None and metrics_port is None
    given = [http_port, grpc_port, metrics_port]
    temp_log = log_file is None
    log_path = (
        Path(log_file)
        if log_file is not None
        else Path(tempfile.mkstemp(prefix="tritonserver-", suffix=".log")[1])
    )
    attempts = 3 if auto_ports else 1
    for attempt in range(attempts):
        picked = free_ports(3, address if ":" not in address else "::1")
        ports = [g if g is not None else p for g, p in zip(given, picked, strict=True)]
        spec = ServerSpec(
            repository=repo,
            address=address,
            http_port=ports[0],
            grpc_port=ports[1],
            metrics_port=ports[2],
            model_control=ModelControl(model_control),
            models=tuple(models) if models is not None else None,
            log_file=log_path,
            server_args=tuple(server_args),
            exit_timeout_s=exit_timeout_s,
            shm_prefix=f"hermes{os.getpid()}x{uuid.uuid4().hex[:8]}_",
            gpus=gpu_list,
            env=dict(env or {}),
        )
        overlay = CpuOverlay(repo) if instance_kind == "cpu" else None
        if overlay is not None:
            spec = dataclasses.replace(spec, repository=str(overlay.path))
        server = Server(
            spec, rt, owns_log=temp_log, advertise=advertise, endpoints_file=endpoints_file, name=name,
            overlay=overlay,
        )  # fmt: skip
        try:
            server.start()
            if wait:
                server.wait_ready(timeout_s)
            return server
        except PortInUseError:
            server.close()
            if attempt + 1 < attempts:
                logger.warning("port collision starting tritonserver; retrying on new ports")
                continue
            raise
        except BaseException:
            server.close()
            raise
    raise AssertionError("unreachable")  # pragma: no cover
