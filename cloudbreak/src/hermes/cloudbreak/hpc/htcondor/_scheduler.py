"""HTCondor through its official Python bindings (PyPI ``htcondor``: modules ``htcondor2``, ``classad2``).

Server jobs are one submission of N jobs; client jobs are a DAG (``htcondor2.dags``) whose
first node waits for every server's endpoints. ``--dry-run`` prints the equivalent
``condor_submit``/``condor_submit_dag``/``condor_rm`` commands and the exact files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hermes.cloudbreak.exceptions import CloudConfigError, SchedulerError
from hermes.cloudbreak.hpc._scheduler import JobBatch, Scheduler, SubmitPlan
from hermes.cloudbreak.hpc._spec import ClientJobs, ServerJobs
from hermes.cloudbreak.hpc.htcondor._submit import (
    CondorOptions,
    client_submit,
    server_job_script,
    server_submit,
    wait_submit,
)

__all__ = ["CondorScheduler", "write_client_dag"]

# JobStatus codes (HTCondor manual, "Job ClassAd Attributes": JobStatus)
JOB_STATUS = {1: "IDLE", 2: "RUNNING", 3: "REMOVED", 4: "COMPLETED", 5: "HELD", 6: "TRANSFERRING_OUTPUT",
              7: "SUSPENDED"}  # fmt: skip


def _bindings() -> Any:
    try:
        import htcondor2
    except ImportError:
        raise CloudConfigError(
            "HTCondor support needs the official bindings: pip install 'hermes-cloudbreak[htcondor]'"
        ) from None
    return htcondor2


def servers_hermes() -> tuple[str, ...]:
    from hermes.cloudbreak.hpc._spec import default_hermes_command

    return default_hermes_command()


def write_client_dag(clients: ClientJobs, options: CondorOptions, dag_dir: Path, workdir: Path,
                     endpoints_file: Path, servers: int, hermes: tuple[str, ...], timeout_s: float) -> Path:  # fmt: skip
    """Write the client DAG into ``dag_dir`` with ``htcondor2.dags``: the endpoints node, then one node per task."""
    htcondor2 = _bindings()
    from htcondor2 import dags

    dag = dags.DAG()
    wait = dag.layer(name="endpoints", submit_description=htcondor2.Submit(
        wait_submit(workdir, hermes, servers, timeout_s)))  # fmt: skip
    wait.child_layer(
        name="clients",
        submit_description=htcondor2.Submit(client_submit(clients, options, workdir, endpoints_file)),
        vars=[{"task": str(i)} for i in range(clients.task_count)],
    )
    return Path(dags.write_dag(dag, dag_dir, dag_file_name="clients.dag"))


class CondorScheduler(Scheduler):
    """Submit, watch and remove HTCondor jobs through a schedd.

    Args:
        options: pool options (accounting group, requirements, ...).
        schedd: the schedd to use (default: the local one, ``htcondor2.Schedd()``).
    """

    name = "htcondor"

    def __init__(self, options: CondorOptions | None = None, *, schedd: Any = None):
        self.options = options or CondorOptions()
        self._schedd = schedd
        self.wait_timeout_s = 3600.0
        self.hermes: tuple[str, ...] = ()

    @property
    def schedd(self) -> Any:
        if self._schedd is None:
            try:
                self._schedd = _bindings().Schedd()
            except Exception as exc:  # the bindings raise HTCondorException subclasses
                raise SchedulerError(f"cannot reach the local HTCondor schedd: {exc}") from exc
        return self._schedd

    def server_plan(self, servers: ServerJobs, workdir: Path) -> SubmitPlan:
        self.hermes = servers.hermes
        sub = workdir / "servers.sub"
        files = {workdir / "hermes-server-job.sh": server_job_script(servers),
                 sub: server_submit(servers, self.options, workdir)}  # fmt: skip
        return SubmitPlan(files, [["condor_submit", str(sub)]])

    def client_plan(
        self, clients: ClientJobs, workdir: Path, endpoints_file: Path, servers: int
    ) -> SubmitPlan:
        """The segment lists and the DAG files as ``htcondor2.dags.write_dag`` writes them."""
        import json
        import tempfile

        files = {workdir / "clients" / f"segments-{i}.json": json.dumps(s) + "\n"
                 for i, s in enumerate(clients.task_segments())}  # fmt: skip
        with tempfile.TemporaryDirectory() as scratch:
            write_client_dag(clients, self.options, Path(scratch), workdir, endpoints_file, servers,
                             self.hermes or servers_hermes(), self.wait_timeout_s)  # fmt: skip
            for path in sorted(Path(scratch).rglob("*")):
                if path.is_file():
                    files[workdir / "clients" / path.relative_to(scratch)] = path.read_text()
        dag = workdir / "clients" / "clients.dag"
        return SubmitPlan(files, [["condor_submit_dag", str(dag)]])

    def submit_servers(self, servers: ServerJobs, plan: SubmitPlan, workdir: Path) -> JobBatch:
        htcondor2 = _bindings()
        text = plan.files[workdir / "servers.sub"]
        body = text.rstrip("\n").rsplit("\n", 1)[0]  # without the final `queue N`: count= says it
        try:
            result = self.schedd.submit(htcondor2.Submit(body), count=servers.servers)
        except Exception as exc:
            raise SchedulerError(f"the schedd refused the server jobs: {exc}") from exc
        cluster = result.cluster()
        return JobBatch(str(cluster), tuple(f"{cluster}.{p}" for p in range(servers.servers)))

    def submit_clients(self, clients: ClientJobs, plan: SubmitPlan, workdir: Path) -> JobBatch:
        htcondor2 = _bindings()
        dag = workdir / "clients" / "clients.dag"
        try:
            result = self.schedd.submit(htcondor2.Submit.from_dag(str(dag), {"force": True}))
        except Exception as exc:
            raise SchedulerError(f"the schedd refused the client DAG: {exc}") from exc
        return JobBatch(str(result.cluster()), (f"{result.cluster()}.0",))

    def states(self, jobs: Sequence[str]) -> dict[str, str]:
        clusters = sorted({j.split(".")[0] for j in jobs})
        if not clusters:
            return {}
        constraint = " || ".join(f"ClusterId == {c}" for c in clusters)
        found: dict[str, str] = {}
        try:
            for ad in self.schedd.query(constraint, projection=["ClusterId", "ProcId", "JobStatus"]):
                found[f"{ad['ClusterId']}.{ad['ProcId']}"] = JOB_STATUS.get(int(ad["JobStatus"]), "UNKNOWN")
            missing = [j for j in jobs if j not in found]
            if missing:
                for ad in self.schedd.history(constraint, projection=["ClusterId", "ProcId", "JobStatus"]):
                    found.setdefault(
                        f"{ad['ClusterId']}.{ad['ProcId']}", JOB_STATUS.get(int(ad["JobStatus"]), "UNKNOWN")
                    )
        except Exception as exc:
            raise SchedulerError(f"querying the schedd failed: {exc}") from exc
        return {j: found.get(j, "UNKNOWN") for j in jobs}

    def cancel(self, submissions: Sequence[str]) -> None:
        if not submissions:
            return
        htcondor2 = _bindings()
        try:
            constraint = " || ".join(f"ClusterId == {int(c)}" for c in submissions)
            self.schedd.act(htcondor2.JobAction.Remove, constraint, reason="hermes hpc down")
        except Exception as exc:
            raise SchedulerError(f"removing jobs {', '.join(submissions)} failed: {exc}") from exc

    def endpoints_path(self, workdir: Path, job: str) -> Path:
        return workdir / "endpoints" / f"{job}.json"
