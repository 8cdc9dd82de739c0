"""Triton servers as batch jobs, the endpoints they publish, client jobs, and teardown.

```
 HpcDeployment.up()
   write WORKDIR/server.sbatch (or .sub) ── submit ──▶ N server jobs: hermes serve ... --endpoints-file
   poll: WORKDIR/endpoints/<job>.json appears  ◀──────  (written atomically once Triton is ready)
         a job that ends first -> JobFailed (quotes its log), everything cancelled
   merge -> WORKDIR/endpoints.json  (the one endpoints JSON: RoutingClient, `hermes models`)
 HpcDeployment.client(model) -> RoutingClient over the merged endpoints
 HpcDeployment.submit_clients(ClientJobs) -> job array (Slurm) / DAG gated on the endpoints (HTCondor)
 HpcDeployment.down(): cancel every submission, wait until no job holds resources
   (runs on exit, on errors, on SIGINT/SIGTERM/SIGHUP: hermes.cloudbreak's teardown signals)
```

A server job that dies while streaming closes its gRPC streams: the many-server client
marks it lost (its sequences fail with ServerLost at once) and sends new sequences to the
others. The deployment state (scheduler, submissions, jobs) is kept in WORKDIR/hpc.json so
that ``hermes hpc status|down`` find it from another process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from hermes.aeriel import Endpoint, EndpointError, load_endpoints
from hermes.cloudbreak._teardown import signal_teardown, teardown_in_progress
from hermes.cloudbreak.exceptions import JobFailed, OperationTimeout, TeardownError
from hermes.cloudbreak.hpc._scheduler import ACTIVE, JobBatch, Scheduler, SubmitPlan
from hermes.cloudbreak.hpc._spec import ClientJobs, ServerJobs

if TYPE_CHECKING:
    from hermes.aeriel import RoutingClient

__all__ = ["HpcDeployment"]

logger = logging.getLogger("hermes.cloudbreak.hpc")
STATE_FILE = "hpc.json"


class HpcDeployment:
    """Triton servers as batch jobs of ``scheduler``; a context manager that cancels them on exit.

    Args:
        scheduler: a :class:`~hermes.cloudbreak.hpc.SlurmScheduler` or
            :class:`~hermes.cloudbreak.hpc.CondorScheduler`.
        servers: what to run.
        workdir: where scripts, logs and endpoints go (on a filesystem the jobs share for
            Slurm; the submit directory for HTCondor).
        ready_timeout_s: how long ``up()`` waits for every server (queueing included).
        poll_interval_s: seconds between checks.
    """

    def __init__(self, scheduler: Scheduler, servers: ServerJobs, workdir: str | Path, *,
                 ready_timeout_s: float = 3600.0, poll_interval_s: float = 0.5):  # fmt: skip
        self.scheduler = scheduler
        self.servers = servers
        self.workdir = Path(workdir).resolve()
        self.ready_timeout_s = ready_timeout_s
        self.poll_interval_s = poll_interval_s
        self.batches: list[JobBatch] = []
        self.endpoints: list[Endpoint] = []
        self.ready_after_s: float | None = None
        self._signals: contextlib.ExitStack | None = None

    @property
    def endpoints_file(self) -> Path:
        """The merged endpoints JSON of every server (written by :meth:`up`)."""
        return self.workdir / "endpoints.json"

    @property
    def server_jobs(self) -> tuple[str, ...]:
        return self.batches[0].jobs if self.batches else ()

    def __repr__(self) -> str:
        return f"<HpcDeployment {self.scheduler.name} {len(self.endpoints)}/{self.servers.servers} ready {self.workdir}>"

    # ------------------------------------------------------------------ plans
    def plan(self) -> SubmitPlan:
        """The server files and the commands that submit them (what ``--dry-run`` prints)."""
        return self.scheduler.server_plan(self.servers, self.workdir)

    def client_plan(self, clients: ClientJobs) -> SubmitPlan:
        return self.scheduler.client_plan(clients, self.workdir, self.endpoints_file, self.servers.servers)

    # ------------------------------------------------------------------ lifecycle
    def up(self) -> list[Endpoint]:
        """Submit the server jobs and wait until every server is ready; returns their endpoints.

        Raises:
            JobFailed: a server job ended before it was ready (everything is cancelled).
            OperationTimeout: not every server was ready within ``ready_timeout_s``.
        """
        if self.batches:
            raise RuntimeError("this deployment is up already; call down() first")
        for sub in ("endpoints", "logs", "clients"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        plan = self.plan()
        plan.write()
        started = time.monotonic()
        try:
            batch = self.scheduler.submit_servers(self.servers, plan, self.workdir)
            self.batches.append(batch)
            self._save()
            logger.info("submitted %d server job(s) to %s: %s", len(batch.jobs), self.scheduler.name,
                        ", ".join(batch.jobs))  # fmt: skip
            self.endpoints = self._wait_ready(batch.jobs, started)
        except BaseException:
            self.down()
            raise
        self.ready_after_s = time.monotonic() - started
        self._write_merged()
        logger.info("%d server(s) ready after %.1f s: %s", len(self.endpoints), self.ready_after_s,
                    self.endpoints_file)  # fmt: skip
        return self.endpoints

    def _wait_ready(self, jobs: tuple[str, ...], started: float) -> list[Endpoint]:
        deadline = started + self.ready_timeout_s
        ready: dict[str, Endpoint] = {}
        while True:
            for job in jobs:
                path = self.scheduler.endpoints_path(self.workdir, job)
                if job not in ready and path.exists():
                    with contextlib.suppress(EndpointError, OSError):
                        ready[job] = load_endpoints(path)[0]
            if len(ready) == len(jobs):
                return [ready[j] for j in jobs]
            states = self.scheduler.states([j for j in jobs if j not in ready])
            for job, state in states.items():
                if state not in ACTIVE and state != "UNKNOWN":
                    raise JobFailed(
                        f"server job {job} ended ({state}) before its server was ready:\n"
                        f"{self.scheduler.log_tail(self.workdir, job)}",
                        job=job, state=state,
                    )  # fmt: skip
            if time.monotonic() > deadline:
                waiting = ", ".join(f"{j} ({states.get(j, '?')})" for j in jobs if j not in ready)
                raise OperationTimeout(
                    f"{len(ready)} of {len(jobs)} servers ready after {self.ready_timeout_s:.0f} s; still "
                    f"waiting for {waiting}. Queued jobs may need another partition or a longer --timeout."
                )
            time.sleep(self.poll_interval_s)

    def _write_merged(self) -> None:
        data = {"endpoints": [{k: v for k, v in vars(ep).items() if v is not None} for ep in self.endpoints]}
        tmp = self.endpoints_file.with_name(f".{self.endpoints_file.name}.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.endpoints_file)

    def _save(self) -> None:
        state = {"scheduler": self.scheduler.name, "workdir": str(self.workdir),
                 "batches": [{"submission": b.submission, "jobs": list(b.jobs)} for b in self.batches]}  # fmt: skip
        tmp = self.workdir / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.workdir / STATE_FILE)  # readers (hermes hpc status|down) never see half of it

    def status(self) -> dict[str, str]:
        """``{job id: state}`` of every job of this deployment."""
        return self.scheduler.states([j for b in self.batches for j in b.jobs])

    def client(self, model: str, **kwargs: Any) -> RoutingClient:
        """A :class:`~hermes.aeriel.routing.RoutingClient` over every server (close it, or use ``with``)."""
        from hermes.aeriel import RoutingClient

        if not self.endpoints:
            raise RuntimeError("no server is ready: call up() first")
        return RoutingClient(self.endpoints, model, **kwargs)

    def submit_clients(self, clients: ClientJobs) -> JobBatch:
        """Submit client jobs that stream to the servers (cancelled with them by :meth:`down`)."""
        if not self.batches:
            raise RuntimeError("submit the servers first: call up()")
        plan = self.client_plan(clients)
        plan.write()
        batch = self.scheduler.submit_clients(clients, plan, self.workdir)
        self.batches.append(batch)
        self._save()
        return batch

    def down(self, timeout_s: float = 120.0) -> None:
        """Cancel every job and wait until none holds resources; removes the merged endpoints.

        Raises:
            TeardownError: some jobs were still active after ``timeout_s``; names them.
        """
        with teardown_in_progress():
            submissions = [b.submission for b in self.batches]
            jobs = [j for b in self.batches for j in b.jobs]
            self.scheduler.cancel(submissions)
            deadline = time.monotonic() + timeout_s
            active = jobs
            while active and time.monotonic() < deadline:
                states = self.scheduler.states(active)
                active = [j for j, s in states.items() if s in ACTIVE]
                if active:
                    time.sleep(self.poll_interval_s)
            self.endpoints_file.unlink(missing_ok=True)
            self.endpoints = []
            if active:
                raise TeardownError(
                    f"jobs {', '.join(active)} were still active {timeout_s:.0f} s after they were cancelled",
                    leftovers=[f"{self.scheduler.name} job {j}" for j in active],
                )
            self.batches = []
            with contextlib.suppress(OSError):
                (self.workdir / STATE_FILE).unlink()

    def __enter__(self) -> HpcDeployment:
        self._signals = contextlib.ExitStack()
        self._signals.enter_context(signal_teardown())
        try:
            if not self.batches:
                self.up()
        except BaseException:
            self._signals.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        try:
            self.down()
        finally:
            if self._signals is not None:
                self._signals.close()
