"""HTCondor submit descriptions, the server job's wrapper script, and the client DAG.

IGWN pools require ``accounting_group`` (and ``accounting_group_user``) on every job and
give GPUs with ``request_gpus``; containers come from ``MY.SingularityImage`` (usually an
image on ``/cvmfs/singularity.opensciencegrid.org``). No shared filesystem is assumed: the
repository travels with the job (or is a URL), and each server sends its endpoints file
back to the submit directory while it runs with ``condor_chirp put`` (``MY.WantIOProxy``),
and also puts it into its job ad (``HermesEndpoints``).

```
servers.sub  -> N jobs: hermes-server-job.sh $(Cluster).$(Process)
                  hermes serve ... --endpoints-file endpoints.json &
                  condor_chirp put endpoints.json endpoints/<job>.json   (once ready)
clients.dag  -> endpoints (local universe: hermes hpc wait-endpoints, merges them)
                  └── clients (one node per task: HERMES_ENDPOINTS, HERMES_SEGMENTS)
```
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

from hermes.cloudbreak.exceptions import CloudConfigError
from hermes.cloudbreak.hpc._spec import ClientJobs, ServerJobs, default_hermes_command, shell_join

__all__ = ["CondorOptions", "client_submit", "server_job_script", "server_submit", "wait_submit"]

_REMOTE_SCHEMES = ("gs://", "s3://", "as://", "osdf://", "http://", "https://")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CondorOptions:
    """Pool options for every job.

    Args:
        accounting_group: ``accounting_group`` (IGWN: e.g. ``ligo.dev.o4.cbc.allsky.aframe``).
        accounting_group_user: ``accounting_group_user`` (IGWN: your albert.einstein name).
        requirements: a ClassAd expression the execute machines must match.
        rank: a ClassAd expression to prefer machines.
        extra: further submit commands, ``{"+MyAttr": "value"}`` style keys are not accepted:
            write ``MY.MyAttr``.
    """

    accounting_group: str | None = None
    accounting_group_user: str | None = None
    requirements: str | None = None
    rank: str | None = None
    extra: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        from classad2 import ClassAdException, ExprTree

        for field in ("requirements", "rank"):
            value = getattr(self, field)
            if value is not None:
                try:
                    ExprTree(value)
                except ClassAdException:
                    raise CloudConfigError(f"{field} is not a valid ClassAd expression: {value!r}") from None
        for key in self.extra:
            if key.startswith("+") or not key.replace(".", "").replace("_", "").isalnum():
                raise CloudConfigError(f"extra submit command {key!r}: write custom attributes as MY.Name")

    def commands(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.accounting_group:
            out["accounting_group"] = self.accounting_group
        if self.accounting_group_user:
            out["accounting_group_user"] = self.accounting_group_user
        if self.requirements:
            out["requirements"] = self.requirements
        if self.rank:
            out["rank"] = self.rank
        out.update(self.extra)
        return out


def _render(header: str, commands: Mapping[str, str], queue: str) -> str:
    width = max(len(k) for k in commands)
    body = "".join(f"{k.ljust(width)} = {v}\n" for k, v in commands.items())
    return f"# {header}\n{body}{queue}\n"


def _classad_string(value: str) -> str:
    return json.dumps(value)  # a ClassAd string literal: double quotes, backslash escapes


def _environment(env: Mapping[str, str]) -> str:
    """The new-syntax ``environment`` value: ``"K=V K2='v w'"``."""
    words = []
    for key, value in env.items():
        text = value.replace("'", "''").replace('"', '""')
        words.append(f"{key}='{text}'" if " " in text else f"{key}={text}")
    return '"' + " ".join(words) + '"'


def _repository(servers: ServerJobs) -> tuple[str, str | None]:
    """(the repository as the job sees it, the directory to transfer or None)."""
    if servers.repository.startswith(_REMOTE_SCHEMES):
        return servers.repository, None
    local = Path(servers.repository).expanduser().resolve()
    return local.name, str(local)


def server_job_script(servers: ServerJobs) -> str:
    """The server job's executable: serve, publish the endpoints with condor_chirp, wait."""
    repository, _ = _repository(servers)
    if servers.runtime == "native" and servers.hermes == default_hermes_command():
        servers = dataclasses.replace(servers, hermes=("hermes",))  # the image's own, on its PATH
    argv = servers.serve_argv(repository=repository, name="condor-$job", endpoints_file="endpoints.json",
                              log_file="tritonserver.log")  # fmt: skip
    return f"""#!/bin/sh
# written by hermes (hermes.cloudbreak.hpc): one Triton server per HTCondor job
set -u
job="$1"
chirp=$(command -v condor_chirp || echo "$(condor_config_val LIBEXEC 2>/dev/null)/condor_chirp")
[ -x "$chirp" ] || chirp=/usr/libexec/condor/condor_chirp
{shell_join(argv)} &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null' TERM INT HUP
while kill -0 "$pid" 2>/dev/null && [ ! -s endpoints.json ]; do sleep 1; done
if [ -s endpoints.json ]; then
    "$chirp" put endpoints.json "endpoints/$job.json" || echo "hermes: condor_chirp put failed" >&2
    "$chirp" set_job_attr HermesEndpoints "$(python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))' < endpoints.json)" || true
fi
status=0
while kill -0 "$pid" 2>/dev/null; do wait "$pid"; status=$?; done
exit $status
"""


def server_submit(servers: ServerJobs, options: CondorOptions, workdir: Path) -> str:
    """The submit description of the server jobs (``queue N``)."""
    _, transfer = _repository(servers)
    commands = {
        "universe": "vanilla",
        "initialdir": str(workdir),
        "executable": str(workdir / "hermes-server-job.sh"),
        "arguments": "$(Cluster).$(Process)",
        "should_transfer_files": "YES",
        "when_to_transfer_output": "ON_EXIT_OR_EVICT",
        "transfer_output_files": "tritonserver.log",
        "transfer_output_remaps": '"tritonserver.log = logs/tritonserver-$(Cluster).$(Process).log"',
        "output": "logs/server-$(Cluster).$(Process).out",
        "error": "logs/server-$(Cluster).$(Process).err",
        "log": "logs/servers.log",
        "request_cpus": str(servers.cpus_per_server),
        "request_gpus": str(servers.gpus_per_server),
        "JobBatchName": servers.name,
        "MY.WantIOProxy": "true",
        "MY.HermesRole": _classad_string("triton-server"),
    }
    if transfer is not None:
        commands["transfer_input_files"] = transfer
    if servers.memory:
        commands["request_memory"] = servers.memory
    if servers.runtime == "native" and servers.image:
        commands["MY.SingularityImage"] = _classad_string(servers.image)
    if servers.env:
        commands["environment"] = _environment(servers.env)
    commands.update(options.commands())
    return _render(
        "written by hermes (hermes.cloudbreak.hpc): Triton servers", commands, f"queue {servers.servers}"
    )


def wait_submit(workdir: Path, hermes: tuple[str, ...], servers: int, timeout_s: float) -> str:
    """The DAG's first node: wait (on the submit machine) until every server published its endpoints."""
    commands = {
        "universe": "local",
        "initialdir": str(workdir),
        "executable": hermes[0],
        "arguments": _classad_arguments(
            [
                *hermes[1:],
                "hpc",
                "wait-endpoints",
                str(workdir),
                "--servers",
                str(servers),
                "--timeout",
                f"{timeout_s:g}",
            ]
        ),
        "output": "logs/wait-endpoints.out",
        "error": "logs/wait-endpoints.err",
        "log": "logs/clients.log",
    }
    return _render("written by hermes (hermes.cloudbreak.hpc): wait for the servers", commands, "queue")


def _classad_arguments(args: list[str]) -> str:
    """The new-syntax ``arguments`` value (double-quoted, single quotes around words with spaces)."""
    words = [f"'{a.replace(chr(39), chr(39) * 2)}'" if (" " in a or "'" in a) else a for a in args]
    return '"' + " ".join(words) + '"'


def client_submit(clients: ClientJobs, options: CondorOptions, workdir: Path, endpoints_file: Path) -> str:
    """The client node's submit description; the DAG sets ``$(task)`` for each node."""
    inputs = [str(endpoints_file), str(workdir / "clients" / "segments-$(task).json"), *clients.input_files]
    commands = {
        "universe": "vanilla",
        "initialdir": str(workdir),
        "executable": clients.command[0],
        "transfer_executable": "false",  # the client program is installed on the execute nodes
        "arguments": _classad_arguments(list(clients.command[1:])),
        "should_transfer_files": "YES",
        "when_to_transfer_output": "ON_EXIT",
        "transfer_input_files": ", ".join(inputs),
        "environment": _environment(
            {
                "HERMES_ENDPOINTS": endpoints_file.name,
                "HERMES_SEGMENTS": "segments-$(task).json",
                "HERMES_TASK_INDEX": "$(task)",
            }
        ),
        "output": "logs/client-$(task).out",
        "error": "logs/client-$(task).err",
        "log": "logs/clients.log",
        "request_cpus": str(clients.cpus),
        "JobBatchName": clients.name,
        "MY.HermesRole": _classad_string("client"),
    }
    if clients.memory:
        commands["request_memory"] = clients.memory
    commands.update(options.commands())
    return _render("written by hermes (hermes.cloudbreak.hpc): client jobs", commands, "queue")
