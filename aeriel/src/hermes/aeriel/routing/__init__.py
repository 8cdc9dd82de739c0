"""Routing over many Triton servers as one: endpoints, consistent hashing, a pinned multi-server client, model swaps.

```python
from hermes.aeriel.routing import RoutingClient, load_endpoints

with RoutingClient(load_endpoints("endpoints.json"), "stream") as client:
    seq = client.sequence(17)                 # pinned to one server by consistent hashing
    y = seq.infer({"x": chunk}).result()
    seq.end({"x": last}).result()
    report = client.swap(2)                   # hot swap to version 2; live sequences finish on 1
```
"""

from hermes.aeriel.endpoints import DEFAULT_PORTS, Endpoint, load_endpoints
from hermes.aeriel.routing.chunks import Block, ChunkedStream, Gap
from hermes.aeriel.routing.client import FailoverEvent, RoutingClient, RoutingSequence
from hermes.aeriel.routing.hash_ring import HashRing
from hermes.aeriel.routing.replay import ReplayPlan, replay_plan

__all__ = [
    "DEFAULT_PORTS",
    "Block",
    "ChunkedStream",
    "Endpoint",
    "FailoverEvent",
    "Gap",
    "HashRing",
    "ReplayPlan",
    "RoutingClient",
    "RoutingSequence",
    "load_endpoints",
    "replay_plan",
]
