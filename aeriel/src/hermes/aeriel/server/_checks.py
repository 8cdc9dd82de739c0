"""Checks of :func:`~hermes.aeriel.server` arguments, made before any process starts.

Each names the argument, what was given and what is expected: a string where a list of names
is expected (``models="mlp"`` used to load models ``m``, ``l`` and ``p``), a negative timeout
(it used to start a server first), an address this machine does not have (a raw ``OSError``)
and a port another process holds (the 5th line of Triton's log).
"""

from __future__ import annotations

import errno
import math
import socket
from collections.abc import Sequence
from typing import Any

from hermes.aeriel.exceptions import PortInUseError, ServerPreflightError

__all__ = ["check_address", "check_names", "check_ports_free", "check_seconds"]


def check_names(field: str, value: Any, *, item: type = str) -> tuple[Any, ...] | None:
    """``value`` as a tuple when it is None or a sequence of ``item``; TypeError otherwise."""
    if value is None:
        return None
    if isinstance(value, str | bytes):
        raise TypeError(
            f"{field} must be a list of {item.__name__} values, got the string {value!r}; "
            f"write {field}=[{value!r}]"
        )
    if not isinstance(value, Sequence) or not all(
        isinstance(v, item) and not isinstance(v, bool) for v in value
    ):
        raise TypeError(f"{field} must be a list of {item.__name__} values, got {value!r}")
    return tuple(value)


def check_seconds(field: str, value: Any, *, allow_zero: bool = False) -> None:
    """Refuse a number of seconds that is not a finite number > 0 (or >= 0 with ``allow_zero``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{field} must be a finite number of seconds {bound}, got {value!r}")


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def check_address(address: Any) -> None:
    """Refuse an address no socket on this machine can bind (before Triton tries)."""
    if not isinstance(address, str) or not address:
        raise TypeError(f"address must be a host address string such as '127.0.0.1', got {address!r}")
    try:
        with socket.socket(_family(address), socket.SOCK_STREAM) as s:
            s.bind((address, 0))
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ServerPreflightError(
            f"address {address!r} cannot be bound on this machine ({reason}): Triton listens on an address of "
            "this machine; use '127.0.0.1' (the default, this machine only), '0.0.0.0' (every interface) or one "
            "of this machine's own addresses"
        ) from exc


def check_ports_free(address: str, ports: dict[str, int | None]) -> None:
    """Refuse given ports another process already listens on (the field, the port and the fix)."""
    for field, port in ports.items():
        if port is None:
            continue
        with socket.socket(_family(address), socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((address, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise ServerPreflightError(
                        f"{field}={port} on {address}: cannot be bound ({exc.strerror})"
                    ) from exc
                raise PortInUseError(
                    f"{field}={port} is already in use on {address} (another server or process listens there); "
                    f"pass a free port, or leave {field} out and a free one is picked"
                ) from exc
