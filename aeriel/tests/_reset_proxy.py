"""A TCP proxy in front of a real server that can reset one connection the way a peer does.

A client sees what it sees when a live server, a tunnel or a load balancer drops its connection
mid-call: the call's bytes never arrive and the socket is closed with a TCP RST (SO_LINGER 0), so
gRPC reports ``UNAVAILABLE`` "Stream removed (recvmsg:Connection reset by peer)". Later
connections pass through untouched.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType

# A call opens with an HTTP/2 HEADERS frame that names its method (well over 32 bytes); the
# control frames a client sends between calls (SETTINGS ack, WINDOW_UPDATE, PING) are 9-17 bytes.
_CALL_BYTES = 32


class ResettingProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream`` (``host:port``); see :meth:`reset_next_call`."""

    def __init__(self, upstream: str):
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.connections = 0
        self.resets = 0
        self._armed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._spawn(self._accept)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reset_next_call(self) -> None:
        """Drop the next call's bytes and reset its connection."""
        self._armed.set()

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self._upstream)
            with self._lock:
                self.connections += 1
                self._sockets += [client, upstream]
            self._spawn(self._pump, client, upstream, True)
            self._spawn(self._pump, upstream, client, False)

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if from_client and len(data) > _CALL_BYTES and self._armed.is_set():
                    self._armed.clear()
                    self._reset(source, sink)
                    return
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _reset(self, client: socket.socket, upstream: socket.socket) -> None:
        with self._lock:
            self.resets += 1
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # linger 0: RST, not FIN
        upstream.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> ResettingProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
