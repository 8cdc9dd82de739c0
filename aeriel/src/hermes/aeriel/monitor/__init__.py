"""Watch Triton servers: per-interval deltas of their metrics to CSV, and a live table.

```python
from hermes.aeriel.monitor import Monitor

with Monitor(["gpu-node-0"], csv_path="load.csv", interval_s=5) as monitor:
    monitor.run(duration_s=600)      # or monitor.start() for a background thread
```

The command line: ``hermes monitor --host gpu-node-0 --csv load.csv``.
"""

from hermes.aeriel.monitor.interval import CSV_COLUMNS, SERVER_ROW, IntervalRow, interval_rows
from hermes.aeriel.monitor.monitor import Monitor
from hermes.aeriel.monitor.snapshot import (
    GpuGauges,
    ModelCounters,
    ServerSnapshot,
    counters_from_statistics,
    parse_metrics,
    read_metrics_text,
)

__all__ = [
    "CSV_COLUMNS",
    "SERVER_ROW",
    "GpuGauges",
    "IntervalRow",
    "ModelCounters",
    "Monitor",
    "ServerSnapshot",
    "counters_from_statistics",
    "interval_rows",
    "parse_metrics",
    "read_metrics_text",
]
