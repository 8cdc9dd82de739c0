"""Slurm through its own commands: ``sbatch --parsable``, ``squeue``, ``scancel``, ``sacct``.

Why the commands and not submitit: the servers are long-running shell commands (``exec
hermes serve ...``), not pickled Python callables on a shared filesystem; the batch script
is the artefact users read, edit and ``--dry-run``; and the commands are what every site
documents, with nothing to install on the compute nodes. Every call goes through
:meth:`SlurmScheduler.run`, so ``SLURM_CONF`` and the like come from ``env``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from hermes.cloudbreak.exceptions import SchedulerError
from hermes.cloudbreak.hpc._scheduler import JobBatch, Scheduler, SubmitPlan
from hermes.cloudbreak.hpc._spec import ClientJobs, ServerJobs
from hermes.cloudbreak.hpc.slurm._script import SlurmOptions, client_script, server_script

__all__ = ["SlurmScheduler"]


class SlurmScheduler(Scheduler):
    """Submit, watch and cancel Slurm jobs.

    Args:
        options: ``#SBATCH`` site options (partition, account, ...).
        env: environment of the Slurm commands (default: this process's).
        timeout_s: how long one Slurm command may take.
    """

    name = "slurm"

    def __init__(self, options: SlurmOptions | None = None, *, env: Mapping[str, str] | None = None,
                 timeout_s: float = 60.0):  # fmt: skip
        self.options = options or SlurmOptions()
        self.env = dict(os.environ if env is None else env)
        self.timeout_s = timeout_s

    def run(self, argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one Slurm command; a failure raises :class:`SchedulerError` quoting its output."""
        try:
            done = subprocess.run(list(argv), env=self.env, capture_output=True, text=True,
                                  timeout=self.timeout_s, check=False)  # fmt: skip
        except FileNotFoundError:
            raise SchedulerError(
                f"{argv[0]} is not on PATH: run this on a Slurm login node (or `module load slurm`)"
            ) from None
        except subprocess.TimeoutExpired:
            raise SchedulerError(f"`{' '.join(argv)}` did not answer in {self.timeout_s:.0f} s") from None
        if check and done.returncode != 0:
            raise SchedulerError(
                f"`{' '.join(argv)}` failed (exit status {done.returncode}): {done.stderr.strip()}"
            )
        return done

    # ------------------------------------------------------------------ plans
    def server_plan(self, servers: ServerJobs, workdir: Path) -> SubmitPlan:
        script = workdir / "server.sbatch"
        return SubmitPlan({script: server_script(servers, self.options, workdir)},
                          [["sbatch", "--parsable", str(script)]])  # fmt: skip

    def client_plan(
        self, clients: ClientJobs, workdir: Path, endpoints_file: Path, servers: int
    ) -> SubmitPlan:
        script = workdir / "client.sbatch"
        files = {script: client_script(clients, self.options, workdir, endpoints_file)}
        for i, segments in enumerate(clients.task_segments()):
            files[workdir / "clients" / f"segments-{i}.json"] = json.dumps(segments) + "\n"
        return SubmitPlan(files, [["sbatch", "--parsable", str(script)]])

    # ------------------------------------------------------------------ jobs
    def _submit(self, plan: SubmitPlan, count: int) -> JobBatch:
        out = self.run(plan.commands[0]).stdout.strip()
        array_id = out.split(";")[0]  # "<id>[;<cluster>]"
        if not array_id.isdigit():
            raise SchedulerError(f"sbatch --parsable printed {out!r}, not a job id")
        return JobBatch(array_id, tuple(f"{array_id}_{i}" for i in range(count)))

    def submit_servers(self, servers: ServerJobs, plan: SubmitPlan, workdir: Path) -> JobBatch:
        return self._submit(plan, servers.servers)

    def submit_clients(self, clients: ClientJobs, plan: SubmitPlan, workdir: Path) -> JobBatch:
        return self._submit(plan, clients.task_count)

    def states(self, jobs: Sequence[str]) -> dict[str, str]:
        if not jobs:
            return {}
        arrays = sorted({j.split("_")[0] for j in jobs})
        found: dict[str, str] = {}
        out = self.run(["squeue", "--states=all", "--array", "--noheader", "--format=%i|%T",
                        f"--jobs={','.join(arrays)}"], check=False)  # fmt: skip
        for line in out.stdout.splitlines():
            job, _, state = line.strip().partition("|")
            found[job] = state.strip().upper()
        missing = [j for j in jobs if j not in found]
        if missing:  # gone from the controller's memory: ask the accounting database, if there is one
            acct = self.run(["sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID,State",
                             f"--jobs={','.join(arrays)}"], check=False)  # fmt: skip
            for line in acct.stdout.splitlines():
                job, _, state = line.partition("|")
                if job in missing:
                    found[job] = state.split()[0].upper() if state.strip() else "UNKNOWN"
        return {j: found.get(j, "UNKNOWN") for j in jobs}

    def cancel(self, submissions: Sequence[str]) -> None:
        if submissions:
            self.run(["scancel", *submissions], check=False)

    def endpoints_path(self, workdir: Path, job: str) -> Path:
        return workdir / "endpoints" / f"{job}.json"
