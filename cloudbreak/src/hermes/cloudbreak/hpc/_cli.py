"""``hermes hpc up|status|down``: Triton servers (and client jobs) on Slurm or HTCondor.

``up`` submits the server jobs, waits until every server is ready, writes the merged
endpoints (WORKDIR/endpoints.json) and prints them; the jobs keep running until ``hermes
hpc down`` (or, with ``--foreground``, until Ctrl-C/SIGTERM/SIGHUP). A failure or a signal
while waiting cancels everything. ``--dry-run`` prints the exact files and commands and
submits nothing.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

import typer

from hermes.cloudbreak.exceptions import CloudbreakError

__all__ = ["app"]

app = typer.Typer(
    name="hpc",
    help="Triton servers and client jobs on Slurm or HTCondor, always cancelled.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

_SCHEDULERS = ("slurm", "htcondor")


def _scheduler(name: str, opts: dict[str, Any]) -> Any:
    from hermes.cloudbreak.hpc import CondorOptions, CondorScheduler, SlurmOptions, SlurmScheduler

    if name == "slurm":
        return SlurmScheduler(SlurmOptions(
            partition=opts.get("partition"), account=opts.get("account"), qos=opts.get("qos"),
            constraint=opts.get("constraint"), gres=opts.get("gres") or "gpu", extra=tuple(opts.get("sbatch") or ()),
        ))  # fmt: skip
    if name == "htcondor":
        extra = {}
        for item in opts.get("submit") or ():
            key, sep, value = item.partition("=")
            if not sep:
                raise typer.BadParameter(f"--submit takes KEY=VALUE, got {item!r}")
            extra[key.strip()] = value.strip()
        return CondorScheduler(CondorOptions(
            accounting_group=opts.get("accounting_group"), accounting_group_user=opts.get("accounting_group_user"),
            requirements=opts.get("requirements"), extra=extra,
        ))  # fmt: skip
    raise typer.BadParameter(f"--scheduler must be one of {', '.join(_SCHEDULERS)}, got {name!r}")


def _print_plan(plan: Any) -> None:
    for path, text in plan.files.items():
        typer.echo(f"# ---- file {path}")
        typer.echo(text.rstrip("\n"))
    typer.echo("# ---- commands")
    for argv in plan.commands:
        typer.echo(shlex.join(argv))


@app.command("up")
def up(
    repository: str = typer.Argument(
        ..., help="Model repository as the jobs see it (shared path, or a URL)."
    ),
    scheduler: str = typer.Option(..., "--scheduler", help="slurm or htcondor."),
    servers: int = typer.Option(1, "--servers", "-n", min=1, help="How many servers (one job each)."),
    model: list[str] | None = typer.Option(
        None, "--model", "-m", help="Model to load; repeat. Default: all."
    ),
    runtime: str = typer.Option("apptainer", "--runtime", help="apptainer, singularity, native or local."),
    image: str | None = typer.Option(
        None, "--image", help="Triton image: .sif, name in $HERMES_IMAGE_DIR/CVMFS, URI."
    ),
    gpus: int = typer.Option(1, "--gpus-per-server", min=0, help="GPUs per server job (0: CPU only)."),
    cpus: int = typer.Option(4, "--cpus-per-server", min=1, help="CPU cores per server job."),
    memory: str | None = typer.Option(None, "--memory", help="Memory per server job (e.g. 32G)."),
    time_limit: str | None = typer.Option(None, "--time", help="Wall time per server job (Slurm)."),
    address: str = typer.Option(
        "0.0.0.0", "--address", help="What the servers bind (every interface by default)."
    ),
    advertise: str = typer.Option("auto", "--advertise", help="Host the servers report: auto or a name."),
    workdir: Path = typer.Option(
        Path("hermes-hpc"), "--workdir", help="Scripts, logs and endpoints go here."
    ),
    timeout_s: float = typer.Option(
        3600.0, "--timeout", help="Seconds to wait for every server (queueing included)."
    ),
    partition: str | None = typer.Option(None, "--partition", help="Slurm partition."),
    account: str | None = typer.Option(None, "--account", help="Slurm account."),
    qos: str | None = typer.Option(None, "--qos", help="Slurm QOS."),
    constraint: str | None = typer.Option(None, "--constraint", help="Slurm node features."),
    gres: str | None = typer.Option(None, "--gres", help="Slurm GPU gres name (gpu, gpu:a100)."),
    sbatch: list[str] | None = typer.Option(None, "--sbatch", help="Extra #SBATCH option; repeat."),
    accounting_group: str | None = typer.Option(
        None, "--accounting-group", help="HTCondor accounting_group (IGWN: required)."
    ),
    accounting_group_user: str | None = typer.Option(
        None, "--accounting-group-user", help="HTCondor accounting_group_user."
    ),
    requirements: str | None = typer.Option(None, "--requirements", help="HTCondor requirements expression."),
    submit: list[str] | None = typer.Option(
        None, "--submit", help="Extra HTCondor submit command KEY=VALUE; repeat."
    ),
    client: str | None = typer.Option(
        None, "--client", help="Client command to run as jobs once the servers are ready."
    ),
    segments: Path | None = typer.Option(
        None, "--segments", help="JSON list of segments for the client jobs."
    ),
    client_tasks: int | None = typer.Option(
        None, "--client-tasks", min=1, help="Client jobs (default: one per segment)."
    ),
    foreground: bool = typer.Option(
        False, "--foreground", help="Stay up until Ctrl-C, then cancel everything."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the exact files and commands; submit nothing."
    ),
) -> None:
    """Submit Triton server jobs, wait until all are ready, and print their endpoints."""
    from hermes.cloudbreak.hpc import ClientJobs, HpcDeployment, ServerJobs

    options = {"partition": partition, "account": account, "qos": qos, "constraint": constraint, "gres": gres,
               "sbatch": sbatch, "accounting_group": accounting_group,
               "accounting_group_user": accounting_group_user, "requirements": requirements, "submit": submit}  # fmt: skip
    try:
        spec = ServerJobs(repository=repository, servers=servers, models=tuple(model) if model else None,
                          runtime=runtime, image=image, gpus_per_server=gpus, cpus_per_server=cpus, memory=memory,
                          time_limit=time_limit, address=address, advertise=advertise)  # fmt: skip
        clients = None
        if client is not None:
            seg = json.loads(segments.read_text()) if segments is not None else []
            clients = ClientJobs(
                command=tuple(shlex.split(client)), segments=tuple(tuple(s) for s in seg), tasks=client_tasks
            )
        deployment = HpcDeployment(_scheduler(scheduler, options), spec, workdir, ready_timeout_s=timeout_s)
        if dry_run:
            _print_plan(deployment.plan())
            if clients is not None:
                _print_plan(deployment.client_plan(clients))
            return
        _up(deployment, clients, foreground)
    except (CloudbreakError, ValueError, OSError) as exc:
        typer.echo(f"hermes hpc up: error: {exc}", err=True)
        raise typer.Exit(1) from None


def _up(deployment: Any, clients: Any, foreground: bool) -> None:
    from hermes.cloudbreak._teardown import signal_teardown

    with signal_teardown():
        started = time.monotonic()
        endpoints = deployment.up()  # cancels everything itself on errors and signals
        typer.echo(f"{len(endpoints)} server(s) ready in {time.monotonic() - started:.1f} s "
                   f"({deployment.scheduler.name} jobs {', '.join(deployment.server_jobs)})")  # fmt: skip
        for ep in endpoints:
            typer.echo(f"  {ep.name}  grpc {ep.grpc}  http {ep.http}  metrics {ep.metrics}")
        typer.echo(f"endpoints file: {deployment.endpoints_file}")
        try:
            if clients is not None:
                batch = deployment.submit_clients(clients)
                typer.echo(f"client jobs: {', '.join(batch.jobs)}")
        except BaseException:
            deployment.down()
            raise
        if not foreground:
            typer.echo(f"stop them with: hermes hpc down --workdir {deployment.workdir}")
            return
        typer.echo("Press Ctrl-C to cancel every job.")
        try:
            while True:
                time.sleep(3600)
        finally:
            deployment.down()
            typer.echo("every job cancelled")


def _load(workdir: Path) -> Any:
    from hermes.cloudbreak.hpc import HpcDeployment, JobBatch, ServerJobs

    state_file = workdir / "hpc.json"
    if not state_file.exists():
        raise typer.BadParameter(f"no deployment in {workdir} ({state_file} is missing)")
    state = json.loads(state_file.read_text())
    deployment = HpcDeployment(
        _scheduler(state["scheduler"], {}), ServerJobs(repository="-", runtime="local"), workdir
    )
    deployment.batches = [JobBatch(b["submission"], tuple(b["jobs"])) for b in state["batches"]]
    return deployment


@app.command("status")
def status(
    workdir: Path = typer.Option(Path("hermes-hpc"), "--workdir", help="The deployment's workdir."),
) -> None:
    """Show every job of a deployment and the servers' endpoints."""
    try:
        deployment = _load(workdir)
        for job, state in deployment.status().items():
            typer.echo(f"{job}  {state}")
    except CloudbreakError as exc:
        typer.echo(f"hermes hpc status: error: {exc}", err=True)
        raise typer.Exit(1) from None
    if deployment.endpoints_file.exists():
        typer.echo(f"endpoints file: {deployment.endpoints_file}")
        typer.echo(deployment.endpoints_file.read_text().rstrip())


@app.command("down")
def down(
    workdir: Path = typer.Option(Path("hermes-hpc"), "--workdir", help="The deployment's workdir."),
    timeout_s: float = typer.Option(120.0, "--timeout", help="Seconds to wait until no job holds resources."),
) -> None:
    """Cancel every job of a deployment and wait until none is left."""
    try:
        deployment = _load(workdir)
        jobs = [j for b in deployment.batches for j in b.jobs]
        deployment.down(timeout_s=timeout_s)
    except CloudbreakError as exc:
        typer.echo(f"hermes hpc down: error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"cancelled {len(jobs)} job(s): {', '.join(jobs)}")


@app.command("wait-endpoints")
def wait_endpoints(
    workdir: Path = typer.Argument(..., help="The deployment's workdir."),
    servers: int = typer.Option(..., "--servers", min=1, help="How many servers to wait for."),
    timeout_s: float = typer.Option(3600.0, "--timeout", help="Seconds to wait."),
) -> None:
    """Wait until SERVERS endpoints files are in WORKDIR/endpoints, then merge them (a DAG's first node)."""
    from hermes.aeriel import load_endpoints

    deadline = time.monotonic() + timeout_s
    while True:
        found = sorted((workdir / "endpoints").glob("*.json"))
        if len(found) >= servers:
            break
        if time.monotonic() > deadline:
            typer.echo(
                f"hermes hpc wait-endpoints: {len(found)} of {servers} servers after {timeout_s:.0f} s",
                err=True,
            )
            raise typer.Exit(1)
        time.sleep(2)
    endpoints = [ep for path in found for ep in load_endpoints(path)]
    merged = {"endpoints": [{k: v for k, v in vars(ep).items() if v is not None} for ep in endpoints]}
    out = workdir / "endpoints.json"
    tmp = out.with_name(".endpoints.json.tmp")
    tmp.write_text(json.dumps(merged, indent=2) + "\n")
    tmp.replace(out)
    typer.echo(str(out))
