"""HTCondor: Triton server jobs (IGWN conventions) and client DAGs, through ``htcondor2``."""

from hermes.cloudbreak.hpc.htcondor._scheduler import CondorScheduler, write_client_dag
from hermes.cloudbreak.hpc.htcondor._submit import (
    CondorOptions,
    client_submit,
    server_job_script,
    server_submit,
    wait_submit,
)

__all__ = [
    "CondorOptions",
    "CondorScheduler",
    "client_submit",
    "server_job_script",
    "server_submit",
    "wait_submit",
    "write_client_dag",
]
