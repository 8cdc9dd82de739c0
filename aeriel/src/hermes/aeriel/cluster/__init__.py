"""Many Triton servers as one: endpoints, consistent hashing, a pinned multi-server client, model swaps.

```python
from hermes.aeriel.cluster import ClusterClient, load_endpoints

with ClusterClient(load_endpoints("endpoints.json"), "stream") as client:
    seq = client.sequence(17)                 # pinned to one server by consistent hashing
    y = seq.infer({"x": chunk}).result()
    seq.end({"x": last}).result()
    report = client.swap(2)                   # hot swap to version 2; live sequences finish on 1
```
"""

from hermes.aeriel.cluster.chunks import Block, ChunkedStream, Gap
from hermes.aeriel.cluster.client import ClusterClient, ClusterSequence, FailoverEvent
from hermes.aeriel.cluster.endpoints import DEFAULT_PORTS, Endpoint, load_endpoints
from hermes.aeriel.cluster.hash_ring import HashRing
from hermes.aeriel.cluster.model_manager import ModelManager, SwapReport
from hermes.aeriel.cluster.replay import ReplayPlan, replay_plan

__all__ = [
    "DEFAULT_PORTS",
    "Block",
    "ChunkedStream",
    "ClusterClient",
    "ClusterSequence",
    "Endpoint",
    "FailoverEvent",
    "Gap",
    "HashRing",
    "ModelManager",
    "ReplayPlan",
    "SwapReport",
    "load_endpoints",
    "replay_plan",
]
