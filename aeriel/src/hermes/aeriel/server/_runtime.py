"""What every server runtime shares: the launch description and the runtime interface."""

from __future__ import annotations

import abc
import dataclasses
import enum
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["ModelControl", "Runtime", "ServerSpec"]


class ModelControl(enum.StrEnum):
    """Triton's ``--model-control-mode``."""

    EXPLICIT = "explicit"
    POLL = "poll"
    NONE = "none"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerSpec:
    """Everything a runtime needs to launch one Triton server.

    Args:
        repository: model repository as seen by the host (a local directory, or a
            ``gs://``/``s3://`` URL the server reads itself).
        address: address every endpoint binds; loopback unless told otherwise.
        http_port: HTTP/REST port.
        grpc_port: gRPC port.
        metrics_port: Prometheus metrics port.
        model_control: model control mode.
        models: models to load at start (explicit mode); ``None`` loads every model.
        log_file: file that receives the server's stdout and stderr.
        server_args: extra ``tritonserver`` arguments, passed through unchanged.
        exit_timeout_s: how long Triton waits for in-flight requests when stopping.
        shm_prefix: unique prefix of the python backend's ``/dev/shm`` regions.
        gpus: GPU indices the server may use (relative to the host's
            ``CUDA_VISIBLE_DEVICES``); ``None`` or empty for none.
        env: extra environment variables for the server process.
        poll_interval_s: repository poll interval in poll mode.
    """

    repository: str
    address: str = "127.0.0.1"
    http_port: int
    grpc_port: int
    metrics_port: int
    model_control: ModelControl = ModelControl.EXPLICIT
    models: tuple[str, ...] | None = None
    log_file: Path
    server_args: tuple[str, ...] = ()
    exit_timeout_s: int = 5
    shm_prefix: str
    gpus: tuple[int, ...] | None = None
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    poll_interval_s: int = 1

    def __post_init__(self) -> None:
        for field in ("http_port", "grpc_port", "metrics_port"):
            port = getattr(self, field)
            if not isinstance(port, int) or not 0 < port < 65536:
                raise ValueError(f"{field} must be a port in 1..65535 (Triton refuses 0), got {port!r}")
        ports = {self.http_port, self.grpc_port, self.metrics_port}
        if len(ports) != 3:
            raise ValueError(
                "http_port, grpc_port and metrics_port must differ, got "
                f"{self.http_port}, {self.grpc_port}, {self.metrics_port}"
            )
        if self.exit_timeout_s < 0:
            raise ValueError(f"exit_timeout_s must be >= 0, got {self.exit_timeout_s}")

    def triton_args(self, repository: str | None = None) -> list[str]:
        """The ``tritonserver`` arguments this spec asks for (runtime-independent part).

        Args:
            repository: the repository path as the server sees it (inside a container it
                differs from the host path); defaults to :attr:`repository`.
        """
        args = [
            f"--model-repository={repository or self.repository}",
            f"--http-address={self.address}",
            f"--grpc-address={self.address}",
            f"--metrics-address={self.address}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            f"--model-control-mode={self.model_control.value}",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
        ]
        if self.model_control is ModelControl.EXPLICIT:
            for model in self.models if self.models is not None else ("*",):
                args.append(f"--load-model={model}")
        elif self.model_control is ModelControl.POLL:
            args.append(f"--repository-poll-secs={self.poll_interval_s}")
        args.extend(self.server_args)
        return args


class Runtime(abc.ABC):
    """How a server process is launched: the local binary, Apptainer, Singularity, ...

    A runtime checks its environment (:meth:`preflight`), turns a :class:`ServerSpec`
    into a command line and environment (:meth:`command`) and releases whatever it
    prepared (:meth:`cleanup`). The :class:`~hermes.aeriel.server.Server` runs the
    process, waits for readiness, and stops it.
    """

    name: str = "runtime"

    @abc.abstractmethod
    def preflight(self, spec: ServerSpec) -> None:
        """Raise :class:`~hermes.aeriel.exceptions.ServerPreflightError` if the server cannot start."""

    @abc.abstractmethod
    def command(self, spec: ServerSpec) -> tuple[list[str], dict[str, str]]:
        """Return the argv and the full environment of the server process."""

    def stop_command(self, spec: ServerSpec) -> Sequence[str] | None:
        """A command that stops the server cleanly, when signalling the process is not enough."""
        return None

    def cleanup(self) -> None:  # noqa: B027 - optional hook
        """Release what :meth:`command` prepared (temporary directories, instances)."""

    @staticmethod
    def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The current environment plus ``extra``."""
        env = dict(os.environ)
        env.update(extra or {})
        return env
