"""A loopback fake of the Kubernetes API's list and watch of Endpoints, with what kmock leaves out:
resourceVersions, ``timeoutSeconds``, an expired history (410 Gone) and an API server that fails.

The wire format is the Kubernetes API's ("Efficient detection of changes",
kubernetes.io/docs/reference/using-api/api-concepts):

* ``GET /api/v1/namespaces/<ns>/endpoints[?fieldSelector=metadata.name=<n>]`` answers an
  ``EndpointsList`` whose ``metadata.resourceVersion`` is the version to watch from;
* with ``?watch=true&resourceVersion=<v>`` it streams one JSON object per line,
  ``{"type": "ADDED"|"MODIFIED"|"DELETED", "object": <Endpoints>}``, for every change after ``v``, until
  ``timeoutSeconds`` pass;
* a ``v`` older than the kept history gets ``200`` and one ``ERROR`` event whose object is a
  ``Status`` with ``code: 410`` and reason ``Expired`` (apimachinery's ``NewResourceExpired``; the watch
  cache's message is ``too old resource version: <v> (<oldest>)``);
* a failing server answers a ``Status`` with its code (``503``, reason ``ServiceUnavailable``).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cloudbreak_fakes._http import JsonHandler

_PATH = "/api/v1/namespaces/{ns}/endpoints"


def endpoints_object(name: str, namespace: str, ips: list[str], version: int) -> dict[str, Any]:
    """An ``Endpoints`` object of a headless Triton Service: one ready address per pod, its three ports."""
    addresses = [
        {"ip": ip, "targetRef": {"kind": "Pod", "name": f"{name}-pod-{ip.rsplit('.', 1)[-1]}"}} for ip in ips
    ]
    ports = [
        {"name": "grpc", "port": 8001, "protocol": "TCP"},
        {"name": "http", "port": 8000, "protocol": "TCP"},
        {"name": "metrics", "port": 8002, "protocol": "TCP"},
    ]
    return {
        "kind": "Endpoints",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": str(version)},
        "subsets": [{"addresses": addresses, "ports": ports}] if ips else [],
    }


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass
class FakeWatchAPI:
    """State: the Endpoints objects, the event history, and knobs. ``requests`` records ``(kind, query)``."""

    namespace: str = "default"
    version: int = 100
    oldest: int = 100  # events at or before this version are gone from the history
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    failures: int = 0  # that many requests answer 503
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    cond: threading.Condition = field(
        default_factory=threading.Condition
    )  # on an RLock: expire() inside put()
    closed: bool = False
    epoch: int = 0  # bumped by expire(): open watches end without the events in between
    port: int = 0

    def put(self, name: str, ips: list[str], *, streamed: bool = True) -> None:
        """Create or change the Endpoints ``name``; ``streamed=False``: the history is then expired at once
        (a compaction before any watch saw the change: only a new list shows it)."""
        with self.cond:
            self.version += 1
            kind = "MODIFIED" if name in self.objects else "ADDED"
            self.objects[name] = endpoints_object(name, self.namespace, ips, self.version)
            self.history.append((self.version, kind, self.objects[name]))
            if not streamed:
                self.expire()
            self.cond.notify_all()

    def delete(self, name: str) -> None:
        with self.cond:
            self.version += 1
            gone = self.objects.pop(name)
            gone["metadata"]["resourceVersion"] = str(self.version)
            self.history.append((self.version, "DELETED", gone))
            self.cond.notify_all()

    def expire(self) -> None:
        """Forget the history up to now and end every open watch (as a restarted watch cache does)."""
        with self.cond:
            self.oldest = self.version
            self.history.clear()
            self.epoch += 1
            self.cond.notify_all()

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.requests]

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


def start_fake_watch_api(fake: FakeWatchAPI) -> ThreadingHTTPServer:
    """Serve ``fake`` on 127.0.0.1 (a free port, stored in ``fake.port``) in a thread."""

    class Handler(JsonHandler):
        protocol_version = "HTTP/1.1"  # a watch is a chunked response, one event per line

        def _handle(self, method: str) -> None:
            if method != "GET":
                return self._send(405, status(405, "MethodNotAllowed", f"{method} is not served here"))
            return self._get()

        def _get(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path != _PATH.format(ns=fake.namespace):
                return self._send(404, status(404, "NotFound", f"the server could not find {url.path}"))
            watching = query.get("watch") in ("true", "1", "True")
            with fake.cond:
                fake.requests.append(("watch" if watching else "list", query))
                if fake.failures > 0:
                    fake.failures -= 1
                    return self._send(
                        503,
                        status(
                            503, "ServiceUnavailable", "the server is currently unable to handle the request"
                        ),
                    )
            wanted = query.get("fieldSelector", "").removeprefix("metadata.name=") or None
            if not watching:
                with fake.cond:
                    items = [o for n, o in sorted(fake.objects.items()) if wanted in (None, n)]
                    listing = {
                        "kind": "EndpointsList",
                        "apiVersion": "v1",
                        "metadata": {"resourceVersion": str(fake.version)},
                        "items": items,
                    }
                return self._send(200, listing)
            return self._stream(int(query.get("resourceVersion") or fake.version), wanted, query)

        def _line(self, event: dict[str, Any]) -> None:
            data = json.dumps(event).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def _stream(self, since: int, wanted: str | None, query: dict[str, str]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                self._events(since, wanted, query)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:  # the client went away
                pass

        def _events(self, since: int, wanted: str | None, query: dict[str, str]) -> None:
            deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
            with fake.cond:
                if since < fake.oldest:
                    message = f"too old resource version: {since} ({fake.oldest + 1})"
                    self._line({"type": "ERROR", "object": status(410, "Expired", message)})
                    return
                epoch = fake.epoch
            while True:
                with fake.cond:
                    events = [(v, k, o) for v, k, o in fake.history if v > since]
                    if not events:
                        if fake.closed or fake.epoch != epoch or time.monotonic() >= deadline:
                            return
                        fake.cond.wait(0.05)
                        continue
                for version, kind, obj in events:
                    since = version
                    if wanted in (None, obj["metadata"]["name"]):
                        self._line({"type": kind, "object": obj})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-watch-api", daemon=True).start()
    fake.port = server.server_address[1]
    return server
