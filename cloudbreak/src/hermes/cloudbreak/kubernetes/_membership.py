"""Live membership of elastic Triton servers: watch a headless Service's endpoints.

```
KEDA scales the Deployment ──▶ pods become ready / terminate ──▶ Endpoints of the headless Service
EndpointWatcher: list once, then watch (Kubernetes watch API) ──diff──▶ on_change(added, removed)
   410 Gone (the watch's resourceVersion expired): list again, watch from the new resourceVersion
   connection lost / API error: reconnect after interval_s, doubling up to max_backoff_s
   follow(routing_client): added → RoutingClient.add_endpoint (new sequences may go there)
                           removed → RoutingClient.remove_endpoint in a thread (drained first)
   endpoints_file: rewritten atomically on every change (for clients outside Python)
```

A pod that terminates leaves the endpoints at once and keeps serving for ``drain_s`` (its
``preStop``), which is the time its live sequences get to end.

The watch follows the Kubernetes API's rules ("Efficient detection of changes",
kubernetes.io/docs/reference/using-api/api-concepts): a list gives a ``resourceVersion``; a watch from
it streams ``{"type": "ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR", "object": ...}`` lines; when the
version is too old the server sends an ``ERROR`` event whose object is a ``Status`` with ``code: 410``,
and the client "must handle the case by recognizing the status code 410 Gone, clearing their local
cache, performing a new get or list operation, and starting the watch from the resourceVersion that
was returned".
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from kubernetes import client, watch

from hermes.cloudbreak.exceptions import CloudbreakError, CloudConfigError
from hermes.cloudbreak.kubernetes._apply import _translate
from hermes.cloudbreak.kubernetes._deploy import pod_endpoints
from hermes.cloudbreak.kubernetes._endpoints import Endpoint, write_endpoints

__all__ = ["EndpointWatcher"]

logger = logging.getLogger("hermes.cloudbreak.kubernetes")

OnChange = Callable[[list[Endpoint], list[Endpoint]], None]
_GONE = 410


class EndpointWatcher:
    """Watch the ready endpoints of a headless Service and report every change.

    Args:
        api_client: a ``kubernetes.client.ApiClient`` of the cluster.
        service: the headless Service's name (the :class:`TritonSpec` name with ``autoscale``).
        namespace: its namespace.
        on_change: called with ``(added, removed)`` from the watcher's thread.
        endpoints_file: rewritten with the current endpoints on every change.
        interval_s: the first wait before reconnecting after a failed list or watch, in seconds
            (doubled after each failure in a row, up to ``max_backoff_s``).
        watch_timeout_s: how long one watch request lasts on the server (``timeoutSeconds``) before
            the watcher starts the next from the last ``resourceVersion``.
        max_backoff_s: the longest wait between two reconnection attempts, in seconds.

    Attributes:
        current: the ready endpoints last seen, by name.
        resyncs: how many times the watcher listed again after a ``410 Gone``.
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
        watch_timeout_s: float = 300.0,
        max_backoff_s: float = 30.0,
    ):
        for name, value in (("interval_s", interval_s), ("max_backoff_s", max_backoff_s)):
            if value <= 0:
                raise CloudConfigError(f"EndpointWatcher.{name} must be > 0, got {value}")
        if watch_timeout_s < 1:
            raise CloudConfigError(
                f"EndpointWatcher.watch_timeout_s must be >= 1 (whole seconds), got {watch_timeout_s}"
            )
        self.api_client = api_client
        self.service = service
        self.namespace = namespace
        self.on_change = on_change
        self.endpoints_file = Path(endpoints_file) if endpoints_file is not None else None
        self.interval_s = interval_s
        self.watch_timeout_s = watch_timeout_s
        self.max_backoff_s = max_backoff_s
        self.current: dict[str, Endpoint] = {}
        self.resyncs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []
        self._response: Any = None  # the open watch response, shut down by close()
        self._lock = threading.Lock()

    @property
    def _what(self) -> str:
        return f"Endpoints {self.namespace}/{self.service}"

    def read(self) -> list[Endpoint]:
        """The ready endpoints now (none while the Service has no Endpoints object)."""
        core = client.CoreV1Api(self.api_client)
        try:
            obj = core.read_namespaced_endpoints(self.service, self.namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return []
            raise _translate(exc, f"read {self._what}") from exc
        except Exception as exc:
            raise _translate(exc, f"read {self._what}") from exc
        return pod_endpoints(self.api_client.sanitize_for_serialization(obj))

    def poll(self) -> tuple[list[Endpoint], list[Endpoint]]:
        """Read once; report and return ``(added, removed)`` since the last read."""
        return self._update(self.read())

    def _update(self, endpoints: list[Endpoint]) -> tuple[list[Endpoint], list[Endpoint]]:
        """Make ``endpoints`` the membership; report and return ``(added, removed)``."""
        seen = {e.name: e for e in endpoints}
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

    # ------------------------------------------------------------------ watching
    def _list(self) -> str:
        """List the Endpoints (the state to watch from); returns the list's ``resourceVersion``."""
        core = client.CoreV1Api(self.api_client)
        try:
            found = core.list_namespaced_endpoints(
                self.namespace, field_selector=f"metadata.name={self.service}"
            )
        except Exception as exc:
            raise _translate(exc, f"list {self._what}") from exc
        raw = self.api_client.sanitize_for_serialization(found)
        mine = [
            item for item in raw.get("items") or [] if item.get("metadata", {}).get("name") == self.service
        ]
        self._update(pod_endpoints(mine[0]) if mine else [])
        return str((raw.get("metadata") or {}).get("resourceVersion") or "")

    def _on_event(self, event: dict[str, Any]) -> str | None:
        """Apply one watch event; returns the ``resourceVersion`` it carries."""
        raw = event.get("raw_object") or {}
        meta = raw.get("metadata") or {}
        if event["type"] in ("ADDED", "MODIFIED", "DELETED") and meta.get("name") == self.service:
            self._update([] if event["type"] == "DELETED" else pod_endpoints(raw))
        return meta.get("resourceVersion")

    def _watch(self, resource_version: str) -> str | None:
        """One watch request from ``resource_version``; returns the last version seen, ``None`` on 410 Gone."""
        core = client.CoreV1Api(self.api_client)

        @functools.wraps(core.list_namespaced_endpoints)  # Watch reads the return type from its docstring
        def call(*args: Any, **kwargs: Any) -> Any:
            response: Any = core.list_namespaced_endpoints(*args, **kwargs)  # urllib3's response: a stream
            with self._lock:
                self._response = response
                if self._stop.is_set():
                    response.shutdown()
            return response

        last = resource_version
        try:
            for event in watch.Watch().stream(
                call,
                self.namespace,
                field_selector=f"metadata.name={self.service}",
                resource_version=resource_version or None,
                timeout_seconds=int(self.watch_timeout_s),
                allow_watch_bookmarks=True,
            ):
                if self._stop.is_set():
                    break
                last = self._on_event(event) or last
        except client.ApiException as exc:
            if exc.status == _GONE:
                return None
            raise _translate(exc, f"watch {self._what}") from exc
        except Exception as exc:
            if self._stop.is_set():  # close() shut the stream down
                return last
            raise _translate(exc, f"watch {self._what}") from exc
        finally:
            with self._lock:
                self._response = None
        return last

    def _run(self) -> None:
        version: str | None = None
        delay = self.interval_s
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if version is None:
                    version = self._list()
                version = self._watch(version)
            except CloudbreakError as exc:  # a blip: keep the last membership, reconnect after a wait
                logger.warning(
                    "watching the servers of %s failed: %s; again in %.3g s", self.service, exc, delay
                )
                self._stop.wait(delay)
                delay = min(delay * 2, self.max_backoff_s)
                continue
            if version is None:
                self.resyncs += 1
                logger.info("the watch of %s expired (410 Gone); listing again", self._what)
            if (
                time.monotonic() - started < self.interval_s
            ):  # a server that ends watches at once: no busy loop
                self._stop.wait(delay)
                delay = min(delay * 2, self.max_backoff_s)
            else:
                delay = self.interval_s

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
        """Watch in a background thread until :meth:`close`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"watch-{self.service}", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop watching (the open watch request is shut down, not waited for) and wait for running
        drains (up to ``timeout_s``). Idempotent."""
        self._stop.set()
        with self._lock:
            if self._response is not None:
                self._response.shutdown()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.warning("the watcher thread of %s did not stop within %.0f s", self._what, timeout_s)
            self._thread = None
        for worker in self._workers:
            worker.join(timeout_s)
        self._workers.clear()

    def __enter__(self) -> EndpointWatcher:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
