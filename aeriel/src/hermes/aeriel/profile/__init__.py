"""``hermes profile``: a streaming-aware profiler for stateful models and streaming ensembles.

perf_analyzer cannot drive a stateful streaming ensemble with real data; this can. It streams
real sequences (START on the first update, END on the last) through any streaming model —
a quiver streaming ensemble, a fused streaming model, or any stateful model taking
``(1, C, n)`` updates — and sweeps streams x in-flight window x instances, as fast as
possible or at a multiple of real time. Per point it reports seconds of data per second,
requests/s, p50/p99 latency, the client's and the server's CPU per request and the
server-side split per step (statistics API); with ``floor`` it runs the same network
in-process on the same windows and reports the ratio.

```python
from hermes.aeriel.profile import SweepConfig, format_table, sweep

results = sweep(SweepConfig(model="deepclean-stream", repository=Path("repo"), streams=(1, 4), floor=True))
print(format_table(results))
```
"""

from hermes.aeriel.exceptions import ProfileError
from hermes.aeriel.profile._floor import FloorForm, FloorNetwork, floor_rate, load_network, network_batches
from hermes.aeriel.profile._report import format_table, plot, rows, write_csv
from hermes.aeriel.profile._run import Measurement, make_data, process_cpu_s, run_streams
from hermes.aeriel.profile._sweep import SweepConfig, set_instances, sweep
from hermes.aeriel.profile._target import StreamGroup, StreamTarget, discover_target

__all__ = [
    "FloorForm",
    "FloorNetwork",
    "Measurement",
    "ProfileError",
    "StreamGroup",
    "StreamTarget",
    "SweepConfig",
    "discover_target",
    "floor_rate",
    "format_table",
    "load_network",
    "make_data",
    "network_batches",
    "plot",
    "process_cpu_s",
    "rows",
    "run_streams",
    "set_instances",
    "sweep",
    "write_csv",
]
