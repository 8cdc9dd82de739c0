"""Control of running Triton servers: health, load, unload and swap model versions; ``hermes models``.

```python
from hermes.aeriel.control import ControlClient, ModelManager
from hermes.aeriel.endpoints import load_endpoints

with ControlClient("localhost:8001") as control:      # one server
    control.load("stream", versions=[1])
    print(control.is_ready(), control.ready_versions("stream"))

with ModelManager(load_endpoints("endpoints.json")) as manager:   # every server at once
    report = manager.swap("stream", 2)  # hot swap to version 2; live sequences finish on 1
```
"""

from hermes.aeriel.control.client import ADMIN_TOKEN_HEADER, ControlClient, RepositoryEntry
from hermes.aeriel.control.model_manager import ModelManager, SwapReport

__all__ = ["ADMIN_TOKEN_HEADER", "ControlClient", "ModelManager", "RepositoryEntry", "SwapReport"]
