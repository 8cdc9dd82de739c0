"""hermes.cloudbreak.hpc: Triton servers and client jobs on Slurm and HTCondor, always cancelled.

```python
from hermes.cloudbreak.hpc import HpcDeployment, ServerJobs, SlurmOptions, SlurmScheduler

servers = ServerJobs(repository="/home/albert.einstein/repo", servers=2, image="tritonserver_24.10-py3.sif")
with HpcDeployment(SlurmScheduler(SlurmOptions(partition="gpu")), servers, "run-1") as hpc:
    with hpc.client("deepclean-stream") as client:   # RoutingClient over every server
        ...
# every job is cancelled here, also on errors and on SIGINT/SIGTERM/SIGHUP
```
"""

from hermes.cloudbreak.hpc._deployment import HpcDeployment
from hermes.cloudbreak.hpc._scheduler import ACTIVE, JobBatch, Scheduler, SubmitPlan
from hermes.cloudbreak.hpc._spec import ClientJobs, ServerJobs
from hermes.cloudbreak.hpc.htcondor import CondorOptions, CondorScheduler
from hermes.cloudbreak.hpc.slurm import SlurmOptions, SlurmScheduler

__all__ = [
    "ACTIVE",
    "ClientJobs",
    "CondorOptions",
    "CondorScheduler",
    "HpcDeployment",
    "JobBatch",
    "Scheduler",
    "ServerJobs",
    "SlurmOptions",
    "SlurmScheduler",
    "SubmitPlan",
]
