"""What every batch scheduler adapter provides, and the job states they report."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from hermes.cloudbreak.hpc._spec import ClientJobs, ServerJobs

__all__ = ["ACTIVE", "JobBatch", "Scheduler", "SubmitPlan"]

ACTIVE = frozenset({"PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "REQUEUED", "RESIZING",
                    "STAGE_OUT", "SIGNALING", "HELD", "IDLE", "TRANSFERRING_OUTPUT"})  # fmt: skip
"""Job states in which a job still holds (or will hold) resources."""


@dataclasses.dataclass(frozen=True)
class SubmitPlan:
    """The files a submission writes and the commands it runs, exactly (``--dry-run`` prints them)."""

    files: dict[Path, str]
    commands: list[list[str]]

    def write(self) -> None:
        for path, text in self.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            if text.startswith("#!"):
                path.chmod(0o755)


@dataclasses.dataclass(frozen=True)
class JobBatch:
    """Jobs submitted together: the scheduler's id of the submission and of each job in it."""

    submission: str
    jobs: tuple[str, ...]


class Scheduler(abc.ABC):
    """A batch scheduler as the HPC deployment uses it."""

    name: str = "scheduler"

    @abc.abstractmethod
    def server_plan(self, servers: ServerJobs, workdir: Path) -> SubmitPlan:
        """The files and commands that submit the server jobs."""

    @abc.abstractmethod
    def client_plan(
        self, clients: ClientJobs, workdir: Path, endpoints_file: Path, servers: int
    ) -> SubmitPlan:
        """The files and commands that submit the client jobs."""

    @abc.abstractmethod
    def submit_servers(self, servers: ServerJobs, plan: SubmitPlan, workdir: Path) -> JobBatch:
        """Submit the server jobs of ``plan`` (written already)."""

    @abc.abstractmethod
    def submit_clients(self, clients: ClientJobs, plan: SubmitPlan, workdir: Path) -> JobBatch:
        """Submit the client jobs of ``plan`` (written already)."""

    @abc.abstractmethod
    def states(self, jobs: Sequence[str]) -> dict[str, str]:
        """``{job id: state}`` in upper case (``PENDING``, ``RUNNING``, ``CANCELLED``...); ``UNKNOWN`` if gone."""

    @abc.abstractmethod
    def cancel(self, submissions: Sequence[str]) -> None:
        """Cancel (remove) every job of these submissions."""

    @abc.abstractmethod
    def endpoints_path(self, workdir: Path, job: str) -> Path:
        """Where server job ``job`` publishes its endpoints file."""

    def log_tail(self, workdir: Path, job: str, lines: int = 20) -> str:
        """The last lines of a job's output, for error messages."""
        found = sorted(workdir.glob(f"logs/*{job}*"))
        text = []
        for path in found:
            try:
                text += [f"{path}:", *path.read_text(errors="replace").splitlines()[-lines:]]
            except OSError:
                continue
        return "\n".join(text)
