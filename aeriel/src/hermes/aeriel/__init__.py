"""hermes.aeriel: serve NVIDIA Triton and stream data through it.

```python
from hermes.aeriel import serve

with serve("model-repo") as server:
    print(server.grpc_url)
```
"""

from importlib.metadata import version as _version

from hermes.aeriel.client import (
    AsyncInferenceClient,
    AsyncSequence,
    InferenceClient,
    LatencyStats,
    Result,
    Sequence,
    StreamGroup,
    StreamTarget,
    TensorSpec,
)
from hermes.aeriel.cluster import (
    ClusterClient,
    ClusterSequence,
    Endpoint,
    HashRing,
    ModelManager,
    SwapReport,
    load_endpoints,
)
from hermes.aeriel.exceptions import (
    AerielError,
    ClientClosedError,
    ClientError,
    ConnectionFailed,
    EndpointError,
    InferenceFailed,
    InferenceTimeout,
    InputValidationError,
    ModelLoadError,
    SequenceError,
    ServerError,
    ServerExitedError,
    ServerLost,
    ServerPreflightError,
    ServerStartTimeout,
    SharedMemoryError,
    StreamOrderError,
)
from hermes.aeriel.monitor import Monitor
from hermes.aeriel.serve import (
    ApptainerRuntime,
    LocalRuntime,
    ModelControl,
    Runtime,
    Server,
    ServerSpec,
    serve,
)

__version__ = _version("hermes-aeriel")

__all__ = [
    "AerielError",
    "ApptainerRuntime",
    "AsyncInferenceClient",
    "AsyncSequence",
    "ClientClosedError",
    "ClientError",
    "ClusterClient",
    "ClusterSequence",
    "ConnectionFailed",
    "Endpoint",
    "EndpointError",
    "HashRing",
    "InferenceClient",
    "InferenceFailed",
    "InferenceTimeout",
    "InputValidationError",
    "LatencyStats",
    "LocalRuntime",
    "ModelControl",
    "ModelLoadError",
    "ModelManager",
    "Monitor",
    "Result",
    "Runtime",
    "Sequence",
    "SequenceError",
    "Server",
    "ServerError",
    "ServerExitedError",
    "ServerLost",
    "ServerPreflightError",
    "ServerSpec",
    "ServerStartTimeout",
    "SharedMemoryError",
    "StreamGroup",
    "StreamOrderError",
    "StreamTarget",
    "SwapReport",
    "TensorSpec",
    "__version__",
    "load_endpoints",
    "serve",
]
