"""The hermes streaming inference client (gRPC; sync and asyncio).

```python
from hermes.aeriel.client import InferenceClient

with InferenceClient("127.0.0.1:8001", "stream") as client:
    with client.sequence(1001) as seq:
        futures = [seq.send(update, end=i == n - 1) for i, update in enumerate(updates)]
    outputs = [f.result().outputs for f in futures]
```

Every client here, and :class:`hermes.aeriel.routing.RoutingClient` over many servers, is a
:class:`StreamingClient`: ``infer(x) -> future`` and ``sequence(id).send(x, end=...) -> future``
(the asyncio client's calls are coroutines giving the future).
"""

from hermes.aeriel.client._aio import AsyncInferenceClient, AsyncSequence
from hermes.aeriel.client._client import InferenceClient, Sequence
from hermes.aeriel.client._protocol import AsyncClient, SequenceLike, StreamingClient, SyncClient
from hermes.aeriel.client._result import LatencyStats, Result, Timings
from hermes.aeriel.client._signature import ModelSignature, StreamGroup, StreamTarget, TensorSpec

__all__ = [
    "AsyncClient",
    "AsyncInferenceClient",
    "AsyncSequence",
    "InferenceClient",
    "LatencyStats",
    "ModelSignature",
    "Result",
    "Sequence",
    "SequenceLike",
    "StreamGroup",
    "StreamTarget",
    "StreamingClient",
    "SyncClient",
    "TensorSpec",
    "Timings",
]
