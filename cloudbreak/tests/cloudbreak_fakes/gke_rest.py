"""A loopback REST front for :class:`~cloudbreak_fakes.gke.FakeGKE` (GKE's ``/v1/...`` JSON API).

Routes are the URI templates of google-cloud-container's REST transport; bodies are parsed
with the library's own request types (unknown fields rejected) and answers written with its
message types; errors use Google's JSON error shape with the HTTP code of the gRPC status, so
the client raises exactly what it raises against container.googleapis.com (409 ``Conflict``,
404 ``NotFound``, 400 ``BadRequest`` for FAILED_PRECONDITION, 429 ``TooManyRequests``).
"""

from __future__ import annotations

import json
import re
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import grpc

from cloudbreak_fakes._http import JsonHandler, serve_on_loopback
from cloudbreak_fakes.gke import FakeGKE

_LOC = r"projects/[^/]+/locations/[^/]+"
_CLUSTER = _LOC + r"/clusters/[^/:]+"
# (HTTP method, path pattern (group 1 = resource name), RPC, request field the path fills, body?)
ROUTES: list[tuple[str, re.Pattern[str], str, str, bool]] = [
    ("POST", re.compile(rf"^/v1/({_LOC})/clusters$"), "CreateCluster", "parent", True),
    ("GET", re.compile(rf"^/v1/({_LOC})/clusters$"), "ListClusters", "parent", False),
    ("GET", re.compile(rf"^/v1/({_CLUSTER})$"), "GetCluster", "name", False),
    ("DELETE", re.compile(rf"^/v1/({_CLUSTER})$"), "DeleteCluster", "name", False),
    ("GET", re.compile(rf"^/v1/({_LOC}/operations/[^/:]+)$"), "GetOperation", "name", False),
    ("POST", re.compile(rf"^/v1/({_CLUSTER})/nodePools$"), "CreateNodePool", "parent", True),
    ("GET", re.compile(rf"^/v1/({_CLUSTER})/nodePools$"), "ListNodePools", "parent", False),
    ("GET", re.compile(rf"^/v1/({_CLUSTER}/nodePools/[^/:]+)$"), "GetNodePool", "name", False),
    ("DELETE", re.compile(rf"^/v1/({_CLUSTER}/nodePools/[^/:]+)$"), "DeleteNodePool", "name", False),
]

HTTP_CODES = {
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAVAILABLE: 503,
}


class RestAbort(Exception):
    """What ``ctx.abort`` raises in the REST front: a gRPC status to answer as Google's JSON error."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class RestContext:
    """The part of ``grpc.ServicerContext`` the fake's RPCs use."""

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise RestAbort(code, details)


def start_fake_gke_rest(fake: FakeGKE) -> ThreadingHTTPServer:
    """Serve ``fake`` over REST on 127.0.0.1 in a thread (a free port, stored in ``fake.port``)."""
    table = fake.table()

    class Handler(JsonHandler):
        def _handle(self, method: str) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            route = next(
                ((r, m) for r in ROUTES if r[0] == method and (m := r[1].match(url.path)) is not None), None
            )
            if route is None:
                return self._send(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": url.path}})
            (_, _, rpc, path_field, has_body), match = route
            request_type, response_type = table[rpc][1], table[rpc][2]
            try:
                request = (
                    request_type.from_json(body, ignore_unknown_fields=False) if has_body else request_type()
                )
            except Exception as exc:  # the library refused the body: a client bug, answer 400
                return self._error(grpc.StatusCode.INVALID_ARGUMENT, f"invalid body: {exc}")
            setattr(request, path_field, match.group(1))
            metadata = {k.lower(): v for k, v in self.headers.items()}
            metadata["query"] = url.query
            try:
                result = fake.call(rpc, request, RestContext(), metadata)
            except RestAbort as exc:
                return self._error(exc.code, exc.message)
            ints = "enum-encoding=int" in parse_qs(url.query).get("$alt", [""])[0]
            return self._send(200, json.loads(response_type.to_json(result, use_integers_for_enums=ints)))

        def _error(self, code: grpc.StatusCode, message: str) -> None:
            http = HTTP_CODES.get(code, 500)
            self._send(http, {"error": {"code": http, "status": code.name, "message": message}})

    server = serve_on_loopback(Handler, "fake-gke-rest")
    fake.port = server.server_address[1]
    return server
