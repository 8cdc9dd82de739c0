"""Slurm: Triton servers and clients as job arrays, through ``sbatch``/``squeue``/``scancel``/``sacct``."""

from hermes.cloudbreak.hpc.slurm._scheduler import SlurmScheduler
from hermes.cloudbreak.hpc.slurm._script import SlurmOptions, client_script, server_script

__all__ = ["SlurmOptions", "SlurmScheduler", "client_script", "server_script"]
