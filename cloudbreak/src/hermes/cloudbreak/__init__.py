"""hermes.cloudbreak: GKE clusters with GPU node pools, Triton on Kubernetes and VM swarms, always torn down.

```python
from hermes.cloudbreak import ClusterManager, ClusterSpec, NodePoolSpec

gke = ClusterManager(project="my-project", location="us-central1-a")
pool = NodePoolSpec(name="gpus", accelerator_type="nvidia-tesla-t4", accelerator_count=1, node_count=2)
with gke.cluster(ClusterSpec(name="triton", node_pools=(pool,))) as cluster:
    ...  # deleted on exit, on errors and on SIGINT/SIGTERM
```
"""

from importlib.metadata import version as _version

import hermes.cloudbreak._namespace  # noqa: F401  (first: refuses a regular hermes/__init__.py)
from hermes.cloudbreak._credentials import load_credentials
from hermes.cloudbreak._leftovers import Leftover, delete_leftovers, find_leftovers
from hermes.cloudbreak._retry import RetryPolicy
from hermes.cloudbreak._teardown import Terminated
from hermes.cloudbreak.exceptions import (
    CapacityError,
    CloudApiError,
    CloudbreakError,
    CloudConfigError,
    JobFailed,
    OperationFailed,
    OperationTimeout,
    RemoteCommandError,
    ResourceExists,
    ResourceNotFound,
    SchedulerError,
    TeardownError,
)
from hermes.cloudbreak.gke import Cluster, ClusterManager, ClusterSpec, NodePool, NodePoolSpec

__version__ = _version("hermes-cloudbreak")

__all__ = [
    "CapacityError",
    "CloudApiError",
    "CloudConfigError",
    "CloudbreakError",
    "Cluster",
    "ClusterManager",
    "ClusterSpec",
    "JobFailed",
    "Leftover",
    "NodePool",
    "NodePoolSpec",
    "OperationFailed",
    "OperationTimeout",
    "RemoteCommandError",
    "ResourceExists",
    "ResourceNotFound",
    "RetryPolicy",
    "SchedulerError",
    "TeardownError",
    "Terminated",
    "__version__",
    "delete_leftovers",
    "find_leftovers",
    "load_credentials",
]
