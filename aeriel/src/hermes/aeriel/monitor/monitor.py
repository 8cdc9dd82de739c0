"""Watch Triton servers: :class:`Monitor` writes per-interval deltas to CSV and shows a table.

```
 caller thread                          poll thread (start() only)
 ─────────────                          ──────────────────────────
 Monitor.poll() ─┐                      every interval_s (Event.wait, so stop() is
                 ├─ for each endpoint:  immediate): poll()
 Monitor.start()─┘   read metrics text or statistics API (timeout_s each)
                     -> ServerSnapshot -> interval_rows(last good, new)
                     -> CSV writer (flushed per poll) and `latest` rows
```

A server that does not answer gives a ``down`` row and keeps its last good reading as the
baseline; a server whose counters fall (it restarted) gives ``restarted`` rows counted
from zero. Neither stops the monitor.
"""

from __future__ import annotations

import csv
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Literal

from hermes.aeriel._lifecycle import Closeable, Deadline
from hermes.aeriel.control.client import ADMIN_TOKEN_HEADER
from hermes.aeriel.control.model_manager import ModelManager
from hermes.aeriel.endpoints import Endpoint, load_endpoints
from hermes.aeriel.exceptions import AerielError, ClientClosedError, EndpointError
from hermes.aeriel.monitor.interval import CSV_COLUMNS, IntervalRow, interval_rows
from hermes.aeriel.monitor.snapshot import (
    ServerSnapshot,
    counters_from_statistics,
    parse_metrics,
    read_metrics_text,
)

__all__ = ["Monitor"]

logger = logging.getLogger("hermes.aeriel.monitor")

Source = Literal["metrics", "statistics"]


def _fmt(value: object, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


class Monitor(Closeable):
    """Read several Triton servers every interval; write deltas to CSV; show a live table.

    Args:
        endpoints: the servers (anything :func:`~hermes.aeriel.routing.load_endpoints` takes).
        csv_path: file the rows are appended to (header written when the file is new);
            ``None`` writes no file.
        interval_s: seconds between readings when running in the background.
        source: ``"metrics"`` reads the Prometheus endpoint (needs ``metrics``
            addresses); ``"statistics"`` reads the per-model statistics API over gRPC
            (and the metrics endpoint, when known, for GPU and CPU gauges).
        models: only these model names (default: every model).
        include_idle: also write rows for models without requests in an interval.
        timeout_s: how long one server may take to answer one reading.
        admin_token: the token of the servers' restricted API (``source="statistics"``, where
            the statistics protocol is restricted).
        admin_header: the key the servers were started with (``<key>=<token>``).

    ```python
    with Monitor(load_endpoints("endpoints.json"), csv_path="load.csv", interval_s=5) as mon:
        mon.start()      # background thread; or call mon.poll() yourself
        ...
    ```
    """

    def __init__(
        self,
        endpoints: Any,
        *,
        csv_path: str | os.PathLike[str] | None = None,
        interval_s: float = 1.0,
        source: Source = "metrics",
        models: Iterable[str] | None = None,
        include_idle: bool = False,
        timeout_s: float = 2.0,
        admin_token: str | None = None,
        admin_header: str = ADMIN_TOKEN_HEADER,
    ):
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0 seconds, got {interval_s!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
        if source not in ("metrics", "statistics"):
            raise ValueError(f"source must be 'metrics' or 'statistics', got {source!r}")
        if isinstance(models, str):
            raise TypeError(
                f"models must be a list of model names, got the string {models!r}; write models=[{models!r}]"
            )
        self.endpoints: list[Endpoint] = (
            [endpoints] if isinstance(endpoints, Endpoint) else load_endpoints(endpoints)
        )
        if source == "metrics":
            missing = [ep.name for ep in self.endpoints if ep.metrics is None]
            if missing:
                raise EndpointError(
                    f"source='metrics' needs a metrics address for every endpoint; missing for {', '.join(missing)}"
                )
        self.source: Source = source
        self.interval_s = float(interval_s)
        self.timeout_s = float(timeout_s)
        self.models = frozenset(models) if models is not None else None
        self.include_idle = include_idle
        self.csv_path = Path(csv_path) if csv_path is not None else None
        self.latest: list[IntervalRow] = []
        self._baseline: dict[str, ServerSnapshot] = {}
        # the statistics API through the control clients ModelManager keeps, one per server
        self._servers = ModelManager(
            self.endpoints, timeout_s=self.timeout_s, admin_token=admin_token, admin_header=admin_header
        )
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._csv_file: IO[str] | None = None
        self._csv: Any = None
        if self.csv_path is not None:
            new = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
            self.csv_path.parent.mkdir(parents=True, exist_ok=True)
            self._csv_file = open(self.csv_path, "a", newline="")  # noqa: SIM115 - closed in close()
            self._csv = csv.DictWriter(self._csv_file, fieldnames=CSV_COLUMNS)
            if new:
                self._csv.writeheader()
                self._csv_file.flush()

    # ------------------------------------------------------------------ reading
    def read(self, endpoint: Endpoint) -> ServerSnapshot:
        """One reading of one server; a server that does not answer gives a snapshot with ``error``."""
        now = time.time()
        try:
            models: dict[Any, Any] = {}
            gpus: dict[str, Any] = {}
            cpu = None
            if endpoint.metrics_url is not None:
                try:
                    models, gpus, cpu = parse_metrics(
                        read_metrics_text(endpoint.metrics_url, timeout_s=self.timeout_s)
                    )
                except (OSError, ValueError):
                    if self.source == "metrics":
                        raise
            if self.source == "statistics":
                models = counters_from_statistics(self._servers.client(endpoint).statistics())
        except (AerielError, OSError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            logger.info("server %s did not answer: %s", endpoint.name, reason)
            return ServerSnapshot(endpoint=endpoint.name, time=now, error=reason[:200])
        return ServerSnapshot(endpoint=endpoint.name, time=now, models=models, gpus=gpus, cpu_utilization=cpu)

    def poll(self) -> list[IntervalRow]:
        """Read every server once; write and return the rows of the interval since the last poll.

        Raises:
            ClientClosedError: the monitor was closed.
        """
        with self._lock:
            if self._closed:
                raise ClientClosedError("this Monitor is closed; create a new one")
            rows: list[IntervalRow] = []
            for endpoint in self.endpoints:
                snap = self.read(endpoint)
                previous = self._baseline.get(endpoint.name)
                rows += interval_rows(previous, snap, include_idle=self.include_idle, models=self.models)
                if snap.up:
                    self._baseline[endpoint.name] = snap
            if self._csv is not None and self._csv_file is not None:
                self._csv.writerows(row.as_dict() for row in rows)
                self._csv_file.flush()
            self.latest = rows
            return rows

    # ------------------------------------------------------------------ background
    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except ClientClosedError:
                return
            except Exception:  # pragma: no cover - keep monitoring whatever one poll did
                logger.exception("monitor poll failed")

    def start(self) -> Monitor:
        """Poll now (the baseline), then every ``interval_s`` in a background thread."""
        if self._thread is not None:
            raise RuntimeError("this Monitor is already running")
        self.poll()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="hermes-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the background thread (if any) and wait for it up to ``timeout_s``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def run(self, *, duration_s: float | None = None, live: bool = True, console: Any = None) -> None:
        """Poll in this thread until ``duration_s`` passes (forever when ``None``) or Ctrl-C.

        Args:
            duration_s: how long to run, seconds.
            live: refresh a rich table in the terminal after each poll.
            console: the :class:`rich.console.Console` to draw on (default: stdout).
        """
        from rich.live import Live

        deadline = Deadline(duration_s)
        self.poll()
        view = Live(self.table(), console=console, auto_refresh=False) if live else None
        if view is not None:
            view.start(refresh=True)
        try:
            while True:
                if deadline.expired or self._stop.wait(min(self.interval_s, deadline.remaining_s)):
                    return
                self.poll()
                if view is not None:
                    view.update(self.table(), refresh=True)
        except KeyboardInterrupt:
            return
        finally:
            if view is not None:
                view.stop()

    # ------------------------------------------------------------------ display
    def table(self, rows: Sequence[IntervalRow] | None = None) -> Any:
        """A :class:`rich.table.Table` of ``rows`` (default: the last poll's)."""
        from rich.table import Table

        rows = self.latest if rows is None else rows
        table = Table(title=f"hermes monitor ({self.source}, every {self.interval_s:g} s)")
        for name in (
            "server",
            "model",
            "ver",
            "status",
            "req/s",
            "fail",
            "batch",
            "queue µs",
            "in µs",
            "infer µs",
            "out µs",
            "gpu %",
            "gpu mem GB",
        ):
            table.add_column(name, justify="left" if name in ("server", "model", "status") else "right")
        for row in rows:
            rate = row.requests / row.interval_s if row.interval_s > 0 else None
            mem = row.gpu_memory_used_bytes / 1e9 if row.gpu_memory_used_bytes is not None else None
            util = row.gpu_utilization * 100 if row.gpu_utilization is not None else None
            table.add_row(
                row.endpoint,
                row.model,
                row.version,
                row.status,
                _fmt(rate),
                str(row.failures),
                _fmt(row.avg_batch_size, 2),
                _fmt(row.queue_us),
                _fmt(row.compute_input_us),
                _fmt(row.compute_infer_us),
                _fmt(row.compute_output_us),
                _fmt(util),
                _fmt(mem, 2),
            )
        return table

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Stop polling, close the CSV file and the gRPC clients. Idempotent."""
        self.stop()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._servers.close()
            if self._csv_file is not None:
                self._csv_file.close()
                self._csv_file = None
                self._csv = None
