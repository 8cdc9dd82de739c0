"""Start Triton Inference Servers: the local binary, Apptainer or Singularity.

```python
from hermes.aeriel import serve

with serve("model-repo", models=["mlp"]) as server:
    print(server.grpc_url)
```
"""

from hermes.aeriel.serve._runtime import ModelControl, Runtime, ServerSpec
from hermes.aeriel.serve._server import Server, free_ports, get_runtime, serve
from hermes.aeriel.serve.apptainer import ApptainerRuntime
from hermes.aeriel.serve.cpu_overlay import CpuOverlay
from hermes.aeriel.serve.images import pull_image
from hermes.aeriel.serve.local import LocalRuntime, find_triton_wheel, map_visible_devices
from hermes.aeriel.serve.native import NativeRuntime

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
