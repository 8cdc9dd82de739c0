"""A running Triton server process: start, readiness, log excerpts, stop by PID.

```
 caller thread                      watcher thread
 ─────────────                      ──────────────
 Server.start() ── Popen ──────────▶ proc.wait()  ── sets _exited, logs an
   wait_ready(): asks the control client             unexpected exit
   (gRPC) whether the server is ready, then
   the HTTP port and /metrics (Triton starts
   metrics last), then each model, waking
   early on _exited
 Server.close(): SIGTERM (or runtime stop), SIGKILL after the grace period,
   unlink /dev/shm/<own prefix>*, runtime cleanup
```

The Server holds the process only; what it asks the running server goes through its
:class:`~hermes.aeriel.control.ControlClient` (``server.control``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from hermes.aeriel._lifecycle import Closeable, Deadline
from hermes.aeriel.control.client import ControlClient, RepositoryEntry
from hermes.aeriel.endpoints import Endpoint
from hermes.aeriel.exceptions import (
    ConnectionFailed,
    ModelLoadError,
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
from hermes.aeriel.server._checks import check_names
from hermes.aeriel.server._logs import exit_error, log_excerpt
from hermes.aeriel.server._runtime import Runtime, ServerSpec
from hermes.aeriel.server.cpu_overlay import CpuOverlay, cpu_hint

__all__ = ["Server", "free_ports"]

logger = logging.getLogger("hermes.aeriel.server")

_SHM_DIR = Path("/dev/shm")
_POLL_S = 0.05


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


_RESTRICTED_FLAGS = ("--grpc-restricted-protocol", "--http-restricted-api")


def redacted(argv: Sequence[str]) -> list[str]:
    """``argv`` with the tokens of Triton's restricted-API flags replaced by ``***`` (for logs)."""
    out = []
    for i, arg in enumerate(argv):
        flag, sep, value = arg.partition("=")
        if sep and flag in _RESTRICTED_FLAGS:
            out.append(f"{flag}={_masked(value)}")
        elif i and argv[i - 1] in _RESTRICTED_FLAGS:
            out.append(_masked(arg))
        else:
            out.append(arg)
    return out


def _masked(setting: str) -> str:
    """``<apis>:<key>=***`` for ``<apis>:<key>=<token>``."""
    head, eq, _token = setting.rpartition("=")
    return f"{head}=***" if eq else "***"


def restricted_token(server_args: Sequence[str]) -> tuple[str, str] | None:
    """``(key, token)`` of ``--grpc-restricted-protocol=<protocols>:<key>=<token>`` among the arguments.

    The server's own control client sends that token, so a server whose model-repository API
    is restricted can still be loaded and checked by the process that started it.
    """
    args = list(server_args)
    for i, arg in enumerate(args):
        flag, sep, value = arg.partition("=")
        if flag != "--grpc-restricted-protocol":
            continue
        if not sep:
            value = args[i + 1] if i + 1 < len(args) else ""
        key, eq, token = value.partition(":")[2].partition("=")
        if eq and key:
            return key, token
    return None


class Server(Closeable):
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
        self._control: ControlClient | None = None

    # ------------------------------------------------------------------ endpoints
    @staticmethod
    def _bracket(host: str) -> str:
        return f"[{host}]" if ":" in host and not host.startswith("[") else host

    @property
    def host(self) -> str:
        """The host other nodes use: the advertised one, never a wildcard such as ``0.0.0.0``."""
        return self._bracket(self.advertised_host)

    def _open_control(self) -> ControlClient:
        """A control client on ``host:grpc_port`` of this node (loopback for a wildcard bind).

        It carries the token of ``--grpc-restricted-protocol`` when the server was given one.
        """
        local = Endpoint(name=self.name, grpc=f"{local_host(self.spec.address)}:{self.spec.grpc_port}")
        token = restricted_token(self.spec.server_args)
        if token is None:
            return ControlClient(local, timeout_s=2.0, direct=True)
        return ControlClient(local, timeout_s=2.0, direct=True, admin_header=token[0], admin_token=token[1])

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
        logger.debug("argv: %s", redacted(argv))
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
        self._control = self._open_control()
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
        return exit_error(
            self.read_log(),
            code=self.returncode,
            models=self.spec.models or (),
            log_file=self.spec.log_file,
            what=f"tritonserver ({self.runtime.name}, grpc {self.grpc_url})",
        )

    def check(self) -> None:
        """Raise if the server process has ended (it should be running)."""
        if self.process is None:
            raise ServerError("the server was not started")
        if self.process.poll() is not None:
            raise self.exit_error()

    # ------------------------------------------------------------------ readiness
    @property
    def control(self) -> ControlClient:
        """The control client of this server (gRPC on this node; carries the admin token it was given)."""
        if self._control is None:
            raise ServerError("the server was not started")
        return self._control

    def repository_index(self) -> list[RepositoryEntry]:
        """Triton's repository index: every model with its version, state and reason."""
        return self.control.repository_index()

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
        at_start = models is None
        wanted = list(models if models is not None else (self.spec.models or ()))
        answered = [False]

        def ready() -> float | None:
            self.check()
            answered[0] = answered[0] or self._server_answers(at_start)
            if answered[0] and self._models_ready(wanted):
                return self._mark_ready(at_start)
            return None

        after = Deadline(timeout_s).poll(ready, interval_s=_POLL_S, stop=self._exited)
        if after is not None:
            return after
        self.check()  # the process ended during the wait
        self._failed = True
        what = "server" if not answered[0] else f"model(s) {', '.join(wanted)}"
        raise ServerStartTimeout(
            f"tritonserver {what} not ready after {timeout_s:.0f} s (grpc {self.grpc_url}); "
            f"last log lines from {self.spec.log_file}:\n{log_excerpt(self.read_log(), models=wanted)}"
        )

    def _mark_ready(self, at_start: bool) -> float:
        self.ready_after_s = time.monotonic() - (self.started_at or time.monotonic())
        logger.info("tritonserver ready after %.2f s (%s)", self.ready_after_s, self.grpc_url)
        if at_start:
            self._publish()
        return self.ready_after_s

    def _server_answers(self, at_start: bool) -> bool:
        """At start: ready, and every endpoint the Server reports answers. Later: live.

        For a model loaded later liveness is enough: Triton reports "not ready" for good once
        any model failed to load.
        """
        try:
            answers = self.control.is_ready() if at_start else self.control.is_live()
        except ConnectionFailed:
            return False
        return answers and (not at_start or self._other_endpoints_answer())

    def _other_endpoints_answer(self) -> bool:
        """The HTTP port accepts connections and /metrics answers 200 (unless turned off).

        Triton starts gRPC, then HTTP, then metrics: gRPC ready does not mean metrics is up.
        """
        args = " ".join(self.spec.server_args)
        if "--allow-http=false" not in args:
            try:
                socket.create_connection((self.spec.address, self.spec.http_port), timeout=1.0).close()
            except OSError:
                return False
        if "--allow-metrics=false" in args:
            return True
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=1.0) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _models_ready(self, wanted: Sequence[str]) -> bool:
        """Whether every wanted model is ready; raise ModelLoadError for one Triton gave up on."""
        for model in wanted:
            try:
                if self.control.is_model_ready(model):
                    continue
                reason = self.control.unavailable_reason(model)
            except ConnectionFailed:
                return False
            if reason:
                self._failed = True
                raise ModelLoadError(
                    cpu_hint(f"model {model!r} failed to load: {reason}"), model=model, reason=reason
                )
            return False
        return True

    # ------------------------------------------------------------------ models
    def load_model(
        self, name: str, *, config: Mapping[str, Any] | None = None, timeout_s: float = 120.0
    ) -> None:
        """Load (or reload) ``name`` in explicit mode and wait until it is ready.

        Raises:
            ModelLoadError: Triton refused it; the message quotes Triton's reason and the log.
            ModelControlTimeout: not ready within ``timeout_s``.
        """
        self.check()
        if self.overlay is not None:
            self.overlay.refresh()
        try:
            self.control.load(name, config=config, timeout_s=timeout_s)
        except ModelLoadError as exc:
            log = log_excerpt(self.read_log(), models=[name])
            raise ModelLoadError(
                cpu_hint(f"model {name!r} failed to load: {exc.reason}\nfrom {self.spec.log_file}:\n{log}"),
                model=name,
                reason=exc.reason,
            ) from None
        except ConnectionFailed:
            self.check()  # the process ended: say why
            raise

    def unload_model(self, name: str, *, timeout_s: float = 60.0) -> None:
        """Unload ``name`` (explicit mode) and wait until no version is ready or still unloading.

        Raises:
            ModelControlTimeout: still loaded after ``timeout_s``.
        """
        self.check()
        try:
            self.control.unload(name, timeout_s=timeout_s)
        except ConnectionFailed:
            self.check()
            raise

    # ------------------------------------------------------------------ stop
    def stop(self) -> int | None:
        """Stop the process by PID: SIGTERM (or the runtime's stop command), SIGKILL after the grace period."""
        if self.process is None:
            return None
        self._stopping = True
        if self.process.poll() is None:
            self._terminate(self.process)
        # Stubs of a killed server may survive in its session: end them and wait until they are gone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        pid = self.process.pid
        Deadline(self.grace_s).poll(lambda: None if _session_members(pid) else True, interval_s=0.02)
        if self._watcher is not None:
            self._watcher.join(5)
        return self.process.returncode

    def _terminate(self, process: subprocess.Popen[bytes]) -> None:
        stop_cmd = self.runtime.stop_command(self.spec)
        if stop_cmd:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(list(stop_cmd), capture_output=True, timeout=self.grace_s, check=False)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        try:
            process.wait(self.spec.exit_timeout_s + self.grace_s)
        except subprocess.TimeoutExpired:
            logger.warning("tritonserver pid %d ignored SIGTERM; killing it", process.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

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
        if self._control is not None:
            self._control.close()
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
