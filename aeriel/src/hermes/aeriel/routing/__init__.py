"""Routing over many Triton servers as one: endpoints, consistent hashing, a pinned multi-server client, model swaps.

```python
from hermes.aeriel.routing import RoutingClient, load_endpoints

with RoutingClient(load_endpoints("endpoints.json"), "stream") as client:
    seq = client.sequence(17)                 # pinned to one server by consistent hashing
    y = seq.send({"x": chunk}).result()       # futures, as hermes.aeriel.client.InferenceClient
    seq.send({"x": last}, end=True).result()
    z = client.infer({"x": batch}).result()   # stateless: round robin over the live servers
    report = client.swap(2)                   # hot swap to version 2; live sequences finish on 1
```
"""

from hermes.aeriel.endpoints import DEFAULT_PORTS, Endpoint, load_endpoints
from hermes.aeriel.routing.chunks import Block, ChunkedStream, Gap
from hermes.aeriel.routing.client import RoutingClient
from hermes.aeriel.routing.hash_ring import HashRing
from hermes.aeriel.routing.replay import ReplayPlan, replay_plan
from hermes.aeriel.routing.sequence import FailoverEvent, RoutingSequence

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
