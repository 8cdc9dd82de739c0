"""A loopback fake of Google's OAuth 2.0 token endpoint (``https://oauth2.googleapis.com/token``).

Credentials files whose ``token_uri`` points here refresh through google-auth's real code. It
answers a refresh as Google does (``access_token``, ``expires_in``, ``token_type``), and can be
told to refuse: 400 ``{"error": "invalid_grant", "error_description": "Bad Request"}`` (what an
expired or revoked refresh token gets; google-auth raises ``RefreshError('invalid_grant: Bad
Request', ...)``).
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from cloudbreak_fakes._http import JsonHandler, serve_on_loopback


@dataclass
class FakeTokenEndpoint:
    """State: ``grants`` records each grant_type received; ``refusals`` refuses that many refreshes."""

    refusals: int = 0
    grants: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"


def start_fake_token_endpoint(fake: FakeTokenEndpoint) -> ThreadingHTTPServer:
    """Serve ``fake`` on 127.0.0.1 in a thread (a free port, stored in ``fake.port``)."""

    class Handler(JsonHandler):
        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode()) if length else {}
            with fake.lock:
                fake.grants.append(form.get("grant_type", ["?"])[0])
                if fake.refusals > 0:
                    fake.refusals -= 1
                    return self._send(400, {"error": "invalid_grant", "error_description": "Bad Request"})
                token = f"ya29.fake-token-{next(fake._ids)}"
                fake.tokens.append(token)
            return self._send(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    server = serve_on_loopback(Handler, "fake-token")
    fake.port = server.server_address[1]
    return server
