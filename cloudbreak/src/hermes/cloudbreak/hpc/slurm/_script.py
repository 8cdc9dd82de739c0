"""Slurm batch scripts for the server job array and the client job array."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from hermes.cloudbreak.exceptions import CloudConfigError
from hermes.cloudbreak.hpc._spec import ClientJobs, ServerJobs, shell_join

__all__ = ["SlurmOptions", "client_script", "server_script"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SlurmOptions:
    """Site options for every job: ``#SBATCH`` lines.

    Args:
        partition: ``--partition``.
        account: ``--account``.
        qos: ``--qos``.
        constraint: ``--constraint`` (node features, e.g. ``a100``).
        gres: the generic resource for GPUs (``gpu``, or ``gpu:a100`` to ask a type).
        extra: further ``#SBATCH`` options, one per item (``"--exclusive"``, ``"--mail-type=END"``).
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gres: str = "gpu"
    extra: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for line in self.extra:
            if not line.startswith("-") or "\n" in line:
                raise CloudConfigError(
                    f"extra #SBATCH options must each be one option such as '--exclusive', got {line!r}"
                )

    def lines(self) -> list[str]:
        out = []
        for flag, value in (("partition", self.partition), ("account", self.account), ("qos", self.qos),
                            ("constraint", self.constraint)):  # fmt: skip
            if value:
                out.append(f"--{flag}={value}")
        return out + list(self.extra)


def _header(name: str, options: list[str]) -> str:
    return "#!/bin/bash\n" + "".join(f"#SBATCH {o}\n" for o in [f"--job-name={name}", *options])


def server_script(servers: ServerJobs, options: SlurmOptions, workdir: Path) -> str:
    """One array task per server; each runs ``hermes serve`` and publishes its endpoints file.

    ``exec`` makes ``hermes serve`` the job's main process: ``scancel`` (SIGTERM) stops
    Triton cleanly and removes the endpoints file.
    """
    job = "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
    sbatch = [f"--array=0-{servers.servers - 1}", f"--output={workdir}/logs/server-%A_%a.out",
              "--nodes=1", "--ntasks=1", f"--cpus-per-task={servers.cpus_per_server}"]  # fmt: skip
    if servers.gpus_per_server:
        sbatch.append(f"--gres={options.gres}:{servers.gpus_per_server}")
    if servers.memory:
        sbatch.append(f"--mem={servers.memory}")
    if servers.time_limit:
        sbatch.append(f"--time={servers.time_limit}")
    argv = servers.serve_argv(
        repository=servers.repository, name=f"slurm-{job}", endpoints_file=f"{workdir}/endpoints/{job}.json",
        log_file=f"{workdir}/logs/tritonserver-{job}.log",
    )  # fmt: skip
    exports = "".join(f"export {k}={json.dumps(v)}\n" for k, v in servers.env.items())
    return (
        _header(servers.name, sbatch + options.lines())
        + "# written by hermes (hermes.cloudbreak.hpc): one Triton server per array task\n"
        + "set -euo pipefail\n"
        + exports
        + f"exec {shell_join(argv)}\n"
    )


def client_script(clients: ClientJobs, options: SlurmOptions, workdir: Path, endpoints_file: Path) -> str:
    """One array task per client job, with its endpoints and segment list in the environment."""
    sbatch = [f"--array=0-{clients.task_count - 1}", f"--output={workdir}/logs/client-%A_%a.out",
              "--ntasks=1", f"--cpus-per-task={clients.cpus}"]  # fmt: skip
    if clients.memory:
        sbatch.append(f"--mem={clients.memory}")
    if clients.time_limit:
        sbatch.append(f"--time={clients.time_limit}")
    return (
        _header(clients.name, sbatch + options.lines())
        + "# written by hermes (hermes.cloudbreak.hpc): one client per array task\n"
        + "set -euo pipefail\n"
        + f"export HERMES_ENDPOINTS={endpoints_file}\n"
        + f'export HERMES_SEGMENTS="{workdir}/clients/segments-${{SLURM_ARRAY_TASK_ID}}.json"\n'
        + 'export HERMES_TASK_INDEX="${SLURM_ARRAY_TASK_ID}"\n'
        + f"exec {shell_join(clients.command)}\n"
    )
