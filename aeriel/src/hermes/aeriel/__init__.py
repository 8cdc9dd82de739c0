"""hermes.aeriel: serve NVIDIA Triton and stream data through it.

```python
from hermes.aeriel import serve

with serve("model-repo") as server:
    print(server.grpc_url)
```
"""

from importlib.metadata import version as _version

import hermes.aeriel._namespace  # noqa: F401  (first: refuses a regular hermes/__init__.py)
from hermes.aeriel.client import (
    AsyncInferenceClient,
    AsyncSequence,
    InferenceClient,
    LatencyStats,
    Result,
    Sequence,
    SequenceLike,
    StreamGroup,
    StreamingClient,
    StreamTarget,
    TensorSpec,
)
from hermes.aeriel.control import ControlClient, ModelManager, SwapReport
from hermes.aeriel.exceptions import (
    AccessDenied,
    AerielError,
    ClientClosedError,
    ClientError,
    ConnectionFailed,
    EndpointError,
    ImagePullError,
    InferenceFailed,
    InferenceTimeout,
    InputValidationError,
    ModelControlError,
    ModelControlTimeout,
    ModelLoadError,
    PortInUseError,
    ProfileError,
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
from hermes.aeriel.routing import (
    Endpoint,
    HashRing,
    RoutingClient,
    RoutingSequence,
    load_endpoints,
)
from hermes.aeriel.server import (
    ApptainerRuntime,
    LocalRuntime,
    ModelControl,
    Runtime,
    Server,
    ServerSpec,
    pull_image,
    serve,
)

__version__ = _version("hermes-aeriel")

__all__ = [
    "AccessDenied",
    "AerielError",
    "ApptainerRuntime",
    "AsyncInferenceClient",
    "AsyncSequence",
    "ClientClosedError",
    "ClientError",
    "ConnectionFailed",
    "ControlClient",
    "Endpoint",
    "EndpointError",
    "HashRing",
    "ImagePullError",
    "InferenceClient",
    "InferenceFailed",
    "InferenceTimeout",
    "InputValidationError",
    "LatencyStats",
    "LocalRuntime",
    "ModelControl",
    "ModelControlError",
    "ModelControlTimeout",
    "ModelLoadError",
    "ModelManager",
    "Monitor",
    "PortInUseError",
    "ProfileError",
    "Result",
    "RoutingClient",
    "RoutingSequence",
    "Runtime",
    "Sequence",
    "SequenceError",
    "SequenceLike",
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
    "StreamingClient",
    "SwapReport",
    "TensorSpec",
    "__version__",
    "load_endpoints",
    "pull_image",
    "serve",
]
