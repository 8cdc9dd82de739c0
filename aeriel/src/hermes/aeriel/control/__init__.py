"""Control of running Triton servers: load, unload and swap model versions; ``hermes models``.

```python
from hermes.aeriel.control import ModelManager
from hermes.aeriel.endpoints import load_endpoints

with ModelManager(load_endpoints("endpoints.json")) as manager:
    report = manager.swap("stream", 2)  # hot swap to version 2; live sequences finish on 1
```
"""

from hermes.aeriel.control.model_manager import ModelManager, SwapReport

__all__ = ["ModelManager", "SwapReport"]
