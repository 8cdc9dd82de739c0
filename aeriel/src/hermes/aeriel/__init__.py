"""hermes.aeriel: serve NVIDIA Triton and stream data through it.

```python
from hermes.aeriel import serve

with serve("model-repo") as server:
    print(server.grpc_url)
```
"""

from importlib.metadata import version as _version

from hermes.aeriel.exceptions import (
    AerielError,
    ClientClosedError,
    ClientError,
    ConnectionFailed,
    InferenceFailed,
    InferenceTimeout,
    InputValidationError,
    ModelLoadError,
    SequenceError,
    ServerError,
    ServerExitedError,
    ServerPreflightError,
    ServerStartTimeout,
)
from hermes.aeriel.serve import LocalRuntime, ModelControl, Runtime, Server, ServerSpec, serve

__version__ = _version("hermes-aeriel")

__all__ = [
    "AerielError",
    "ClientClosedError",
    "ClientError",
    "ConnectionFailed",
    "InferenceFailed",
    "InferenceTimeout",
    "InputValidationError",
    "LocalRuntime",
    "ModelControl",
    "ModelLoadError",
    "Runtime",
    "SequenceError",
    "Server",
    "ServerError",
    "ServerExitedError",
    "ServerPreflightError",
    "ServerSpec",
    "ServerStartTimeout",
    "__version__",
    "serve",
]
