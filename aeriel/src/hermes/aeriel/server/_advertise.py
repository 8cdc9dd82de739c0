"""Addresses other nodes can use, and the endpoints file a server publishes for them.

A server binds ``address`` (loopback unless told otherwise) and *advertises* a host in its
URLs and its endpoints file. A wildcard bind (``0.0.0.0``, ``::``) is never advertised:
no other node can connect to it.

* ``advertise=None``: the bind address, or this node's routable address for a wildcard bind;
* ``advertise="auto"``: this node's routable address (what its host name resolves to,
  else the source address of its default route);
* ``advertise="HOST"``: that name or address, as given.

The endpoints file is the JSON that :func:`hermes.aeriel.routing.load_endpoints` reads::

    {"endpoints": [{"name": "...", "grpc": "host:port", "http": "host:port", "metrics": "host:port"}]}
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "WILDCARDS",
    "advertised_host",
    "local_host",
    "node_address",
    "remove_endpoints_file",
    "write_endpoints_file",
]

WILDCARDS = frozenset({"0.0.0.0", "::", "[::]", ""})


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def node_address() -> str:
    """This node's routable IP address: its host name's, else its default route's source.

    Raises:
        OSError: neither gives a non-loopback address (pass ``advertise=HOST``).
    """
    name = socket.getfqdn()
    with contextlib.suppress(OSError):
        for *_, sockaddr in socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP):
            address = str(sockaddr[0])
            if not _is_loopback(address) and not ipaddress.ip_address(address).is_link_local:
                return address
    for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))  # UDP: picks the outgoing interface, sends nothing
            address = str(s.getsockname()[0])
            if not _is_loopback(address):
                return address
    raise OSError(
        f"found no routable address for this node (host name {name!r} resolves only to loopback and "
        "there is no default route); pass advertise='HOST' with an address other nodes can reach"
    )


def advertised_host(bind: str, advertise: str | None) -> str:
    """The host a server bound to ``bind`` reports (see the module docstring).

    Raises:
        ValueError: ``advertise`` is a wildcard, or is reachable from other nodes while the
            server binds loopback only.
    """
    if advertise is not None and advertise.strip() in WILDCARDS:
        raise ValueError(
            f"advertise={advertise!r} is a wildcard no other node can connect to; give the node's "
            "host name or address, or 'auto'"
        )
    if advertise is None:
        return node_address() if bind in WILDCARDS else bind
    host = node_address() if advertise == "auto" else advertise.strip()
    if _is_loopback(bind) and not _is_loopback(host):
        raise ValueError(
            f"advertise={advertise!r} tells other nodes to connect to {host}, but the server binds "
            f"{bind} (this node only); also pass address='0.0.0.0' (every interface) or that address"
        )
    return host


def local_host(bind: str) -> str:
    """The host this node uses to reach its own server (loopback for a wildcard bind)."""
    if bind in ("::", "[::]"):
        return "[::1]"
    if bind in WILDCARDS:
        return "127.0.0.1"
    return f"[{bind}]" if ":" in bind and not bind.startswith("[") else bind


def write_endpoints_file(path: Path, entry: dict[str, Any]) -> str:
    """Write ``{"endpoints": [entry]}`` to ``path`` atomically; returns the text written."""
    text = json.dumps({"endpoints": [entry]}, indent=2) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).chmod(0o644)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return text


def remove_endpoints_file(path: Path, written: str) -> None:
    """Remove ``path`` if it still holds what this server wrote (another server may own it now)."""
    with contextlib.suppress(OSError):
        if path.read_text() == written:
            path.unlink()
