"""Start Triton Inference Servers: the local binary, Apptainer or Singularity.

```python
from hermes.aeriel import serve

with serve("model-repo", models=["mlp"]) as server:
    print(server.grpc_url)
```
"""

from hermes.aeriel.server._runtime import ModelControl, Runtime, ServerSpec
from hermes.aeriel.server._serve import get_runtime, serve
from hermes.aeriel.server._server import Server, free_ports
from hermes.aeriel.server.apptainer import ApptainerRuntime
from hermes.aeriel.server.cpu_overlay import CpuOverlay
from hermes.aeriel.server.images import pull_image
from hermes.aeriel.server.local import LocalRuntime, find_triton_wheel, map_visible_devices
from hermes.aeriel.server.native import NativeRuntime

__all__ = [
    "ApptainerRuntime",
    "CpuOverlay",
    "LocalRuntime",
    "ModelControl",
    "NativeRuntime",
    "Runtime",
    "Server",
    "ServerSpec",
    "find_triton_wheel",
    "free_ports",
    "get_runtime",
    "map_visible_devices",
    "pull_image",
    "serve",
]
