"""What to run on an HPC cluster: Triton server jobs and the client jobs that stream to them."""

from __future__ import annotations

import dataclasses
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from hermes.cloudbreak.exceptions import CloudConfigError

__all__ = ["ClientJobs", "ServerJobs", "default_hermes_command"]

_RUNTIMES = ("apptainer", "singularity", "local", "native")


def default_hermes_command() -> tuple[str, ...]:
    """The ``hermes`` command of this environment (its console script, found beside the interpreter)."""
    beside = Path(sys.executable).parent / "hermes"
    if beside.exists():
        return (str(beside),)
    found = shutil.which("hermes")
    return (found,) if found else ("hermes",)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerJobs:
    """N Triton servers, one batch job each, started with ``hermes serve``.

    Args:
        repository: the model repository as the jobs see it: a directory on the shared
            filesystem (Slurm), a directory transferred with the job (HTCondor), or a
            ``gs://``/``s3://``/``osdf://`` URL the server reads itself.
        servers: how many servers (jobs).
        models: models to load (default every model in the repository).
        runtime: ``apptainer``/``singularity`` (the image through Apptainer, ``--nv``),
            ``native`` (the job itself runs in the image, e.g. HTCondor's
            ``MY.SingularityImage``) or ``local`` (the bundled CPU binary; tests).
        image: the Triton image (a ``.sif``, a name in ``$HERMES_IMAGE_DIR`` or CVMFS, a URI).
        gpus_per_server: GPUs per job (``--gres=gpu:N``, ``request_gpus``); 0 for CPU only.
        cpus_per_server: CPU cores per job.
        memory: memory per job (``"32G"``); None leaves the scheduler's default.
        time_limit: wall time per job (Slurm ``HH:MM:SS`` or ``D-HH:MM:SS``), None for the default.
        address: what the servers bind; every interface by default, so that client jobs on
            other nodes can connect (the cluster's network, not the internet).
        advertise: the host the servers report: ``auto`` (each node's routable address) or a name.
        server_args: extra ``tritonserver`` arguments.
        ready_timeout_s: how long each server may take to load its models once its job runs.
        exit_timeout_s: how long a cancelled server waits for in-flight requests.
        stop_grace_s: how long after that a server that does not stop is killed. Slurm's
            ``scancel`` signals every process of the job at once (Triton's python-backend
            stubs too, so their in-flight requests never finish): a short stop makes the
            clients see the server lost within seconds and leaves the job time (``KillWait``,
            30 s by default) to remove its ``/dev/shm`` regions.
        hermes: the ``hermes`` command inside the jobs.
        env: variables exported in each job.
        name: the job name.
    """

    repository: str
    servers: int = 1
    models: tuple[str, ...] | None = None
    runtime: str = "apptainer"
    image: str | None = None
    gpus_per_server: int = 1
    cpus_per_server: int = 4
    memory: str | None = None
    time_limit: str | None = None
    address: str = "0.0.0.0"
    advertise: str = "auto"
    server_args: tuple[str, ...] = ()
    ready_timeout_s: float = 600.0
    exit_timeout_s: int = 1
    stop_grace_s: float = 2.0
    hermes: tuple[str, ...] = dataclasses.field(default_factory=default_hermes_command)
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    name: str = "hermes-triton"

    def __post_init__(self) -> None:
        if not isinstance(self.servers, int) or self.servers < 1:
            raise CloudConfigError(f"servers must be an integer >= 1, got {self.servers!r}")
        if self.runtime not in _RUNTIMES:
            raise CloudConfigError(f"runtime must be one of {', '.join(_RUNTIMES)}, got {self.runtime!r}")
        if self.runtime in ("apptainer", "singularity", "native") and not self.image:
            raise CloudConfigError(f"runtime {self.runtime!r} needs image= (a .sif, an image name or a URI)")
        if self.gpus_per_server < 0 or self.cpus_per_server < 1:
            raise CloudConfigError(
                f"gpus_per_server must be >= 0 and cpus_per_server >= 1, got {self.gpus_per_server} "
                f"and {self.cpus_per_server}"
            )
        if not self.repository:
            raise CloudConfigError("repository must name the model repository the jobs read")
        if isinstance(self.models, str):
            object.__setattr__(self, "models", (self.models,))
        if not self.name.replace("-", "").replace("_", "").isalnum():
            raise CloudConfigError(f"name must be letters, digits, '-' and '_', got {self.name!r}")

    def serve_argv(self, *, repository: str, name: str, endpoints_file: str, log_file: str) -> list[str]:
        """The ``hermes serve`` command line of one server job (shell words; ``$VAR`` left to the shell)."""
        argv = [*self.hermes, "serve", repository, "--runtime", self.runtime]
        if self.image and self.runtime != "native":
            argv += ["--image", self.image]
        argv += ["--address", self.address, "--advertise", self.advertise, "--name", name,
                 "--endpoints-file", endpoints_file, "--log-file", log_file,
                 "--timeout", f"{self.ready_timeout_s:g}", "--exit-timeout", str(self.exit_timeout_s),
                 "--stop-grace", f"{self.stop_grace_s:g}"]  # fmt: skip
        if self.gpus_per_server == 0:
            argv += ["--gpus", "none"]
        for model in self.models or ():
            argv += ["--model", model]
        for arg in self.server_args:
            argv += ["--server-arg", arg]
        return argv


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClientJobs:
    """Client jobs (a job array, or DAG nodes) that stream data to the servers.

    Each task runs ``command`` with ``HERMES_ENDPOINTS`` (the merged endpoints JSON, what
    :class:`hermes.aeriel.routing.RoutingClient` and :func:`~hermes.aeriel.routing.load_endpoints`
    read), ``HERMES_SEGMENTS`` (a JSON list of this task's segments) and
    ``HERMES_TASK_INDEX`` in its environment.

    Args:
        command: the program and its arguments.
        segments: the data segments to process, e.g. ``[(gps_start, gps_stop), ...]``.
        tasks: how many jobs share the segments (round robin); default one per segment.
        cpus: CPU cores per job.
        memory: memory per job.
        time_limit: wall time per job (Slurm).
        input_files: files each job needs (HTCondor transfers them; Slurm reads the shared FS).
        name: the job name.
    """

    command: tuple[str, ...]
    segments: tuple[tuple[float, ...], ...] = ()
    tasks: int | None = None
    cpus: int = 1
    memory: str | None = None
    time_limit: str | None = None
    input_files: tuple[str, ...] = ()
    name: str = "hermes-client"

    def __post_init__(self) -> None:
        if isinstance(self.command, str):
            object.__setattr__(self, "command", tuple(shlex.split(self.command)))
        if not self.command:
            raise CloudConfigError("command must name the client program to run")
        object.__setattr__(self, "segments", tuple(tuple(s) for s in self.segments))
        if self.tasks is not None and self.tasks < 1:
            raise CloudConfigError(f"tasks must be >= 1, got {self.tasks}")

    @property
    def task_count(self) -> int:
        if self.tasks is not None:
            return self.tasks
        return max(1, len(self.segments))

    def task_segments(self) -> list[list[list[float]]]:
        """The segments of each task (round robin), one list per task."""
        per_task: list[list[list[float]]] = [[] for _ in range(self.task_count)]
        for i, segment in enumerate(self.segments):
            per_task[i % self.task_count].append(list(segment))
        return per_task


def shell_join(argv: Sequence[str]) -> str:
    """Shell words, quoted except ``$VAR``/``${VAR}`` references the job's shell must expand."""
    out = []
    for word in argv:
        if "$" in word and all(c.isalnum() or c in "${}_-./:%" for c in word):
            out.append(f'"{word}"')
        else:
            out.append(shlex.quote(word))
    return " ".join(out)
