"""Live membership of elastic Triton servers: follow a headless Service's endpoints.

```
KEDA scales the Deployment ──▶ pods become ready / terminate ──▶ Endpoints of the headless Service
EndpointWatcher polls them every interval_s ──diff──▶ on_change(added, removed)
   follow(cluster_client): added → RoutingClient.add_endpoint (new sequences may go there)
                           removed → RoutingClient.remove_endpoint in a thread (drained first)
   endpoints_file: rewritten atomically on every change (for clients outside Python)
```

A pod that terminates leaves the endpoints at once and keeps serving for ``drain_s`` (its
``preStop``), which is the time its live sequences get to end.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from kubernetes import client

from hermes.cloudbreak.exceptions import CloudbreakError, CloudConfigError
from hermes.cloudbreak.kubernetes._apply import _translate
from hermes.cloudbreak.kubernetes._deploy import pod_endpoints
from hermes.cloudbreak.kubernetes._endpoints import Endpoint, write_endpoints

__all__ = ["EndpointWatcher"]

logger = logging.getLogger("hermes.cloudbreak.kubernetes")

OnChange = Callable[[list[Endpoint], list[Endpoint]], None]


class EndpointWatcher:
    """Poll the ready endpoints of a headless Service and report every change.

    Args:
        api_client: a ``kubernetes.client.ApiClient`` of the cluster.
        service: the headless Service's name (the :class:`TritonSpec` name with ``autoscale``).
        namespace: its namespace.
        on_change: called with ``(added, removed)`` from the watcher's thread.
        endpoints_file: rewritten with the current endpoints on every change.
        interval_s: the wait between two reads, in seconds.

    Attributes:
        current: the ready endpoints last seen, by name.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        service: str,
        *,
        namespace: str = "default",
        on_change: OnChange | None = None,
        endpoints_file: str | Path | None = None,
        interval_s: float = 2.0,
    ):
        if interval_s <= 0:
            raise CloudConfigError(f"EndpointWatcher.interval_s must be > 0, got {interval_s}")
        self.api_client = api_client
        self.service = service
        self.namespace = namespace
        self.on_change = on_change
        self.endpoints_file = Path(endpoints_file) if endpoints_file is not None else None
        self.interval_s = interval_s
        self.current: dict[str, Endpoint] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []

    def read(self) -> list[Endpoint]:
        """The ready endpoints now (none while the Service has no Endpoints object)."""
        core = client.CoreV1Api(self.api_client)
        try:
            obj = core.read_namespaced_endpoints(self.service, self.namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return []
            raise _translate(exc, f"read Endpoints {self.namespace}/{self.service}") from exc
        except Exception as exc:
            raise _translate(exc, f"read Endpoints {self.namespace}/{self.service}") from exc
        return pod_endpoints(self.api_client.sanitize_for_serialization(obj))

    def poll(self) -> tuple[list[Endpoint], list[Endpoint]]:
        """Read once; report and return ``(added, removed)`` since the last read."""
        seen = {e.name: e for e in self.read()}
        added = [e for name, e in seen.items() if self.current.get(name) != e]
        removed = [e for name, e in self.current.items() if name not in seen or seen[name] != e]
        if not added and not removed:
            return [], []
        self.current = seen
        logger.info(
            "servers of %s: +%s -%s", self.service, [e.name for e in added], [e.name for e in removed]
        )
        if self.endpoints_file is not None:
            write_endpoints(self.endpoints_file, sorted(seen.values(), key=lambda e: e.name))
        if self.on_change is not None:
            self.on_change(added, removed)
        return added, removed

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except CloudbreakError as exc:  # a blip: keep the last membership, try again
                logger.warning("reading the servers of %s failed: %s", self.service, exc)
            self._stop.wait(self.interval_s)

    def follow(self, cluster_client: Any, *, drain_timeout_s: float = 60.0) -> EndpointWatcher:
        """Feed membership changes to an aeriel ``RoutingClient`` (its ``add_endpoint``/``remove_endpoint``).

        Removals run in their own threads, so a drain does not delay the next addition.
        """

        def change(added: list[Endpoint], removed: list[Endpoint]) -> None:
            for e in removed:
                worker = threading.Thread(
                    target=cluster_client.remove_endpoint,
                    args=(e.name,),
                    kwargs={"drain_timeout_s": drain_timeout_s},
                    name=f"drain-{e.name}",
                    daemon=True,
                )
                worker.start()
                self._workers.append(worker)
            for e in added:
                cluster_client.add_endpoint(e)  # aeriel's Endpoint: handed over as it is

        self.on_change = change
        return self

    def start(self) -> EndpointWatcher:
        """Poll in a background thread until :meth:`close`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"watch-{self.service}", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop polling and wait for running drains (up to ``timeout_s``). Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        for worker in self._workers:
            worker.join(timeout_s)
        self._workers.clear()

    def __enter__(self) -> EndpointWatcher:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
