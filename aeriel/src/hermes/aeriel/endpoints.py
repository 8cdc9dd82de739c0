"""Where Triton servers listen: :class:`Endpoint` and :func:`load_endpoints`.

An endpoint list comes from code (``Endpoint`` objects, running
:class:`~hermes.aeriel.server.Server` objects, strings or dicts), from a file, or from the
cloud deployment's output, which has this JSON shape::

    {"endpoints": [{"name": "gpu-0", "grpc": "10.0.0.4:8001",
                    "http": "10.0.0.4:8000", "metrics": "10.0.0.4:8002"}]}
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hermes.aeriel.exceptions import EndpointError

__all__ = ["DEFAULT_PORTS", "Endpoint", "load_endpoints"]

DEFAULT_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
"""Triton's default ports, used when a bare host name is given."""

_FIELDS = ("name", "grpc", "http", "metrics")


def _check_address(value: str, field: str, name: str) -> str:
    """Validate ``host:port`` (``[v6]:port`` allowed) and return it stripped of any scheme."""
    text = value.strip()
    for prefix in ("http://", "https://", "grpc://"):
        text = text.removeprefix(prefix)
    text = text.removesuffix("/metrics").rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EndpointError(
            f"endpoint {name!r}: {field} must be 'host:port' with a port in 1..65535, got {value!r}"
        )
    return text


@dataclasses.dataclass(frozen=True, kw_only=True)
class Endpoint:
    """One Triton server: a name and the ``host:port`` of each of its endpoints.

    Args:
        name: unique name of the server in a cluster (used for hashing and in reports).
        grpc: ``host:port`` of the gRPC endpoint (inference, model control, statistics).
        http: ``host:port`` of the HTTP endpoint, if known.
        metrics: ``host:port`` of the Prometheus metrics endpoint, if known.
    """

    name: str
    grpc: str
    http: str | None = None
    metrics: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise EndpointError(f"an endpoint needs a non-empty name, got {self.name!r}")
        if not isinstance(self.grpc, str):
            raise EndpointError(
                f"endpoint {self.name!r}: grpc must be a 'host:port' string, got {self.grpc!r}"
            )
        object.__setattr__(self, "grpc", _check_address(self.grpc, "grpc", self.name))
        for field in ("http", "metrics"):
            value = getattr(self, field)
            if value is not None:
                if not isinstance(value, str):
                    raise EndpointError(
                        f"endpoint {self.name!r}: {field} must be a 'host:port' string, got {value!r}"
                    )
                object.__setattr__(self, field, _check_address(value, field, self.name))

    @property
    def metrics_url(self) -> str | None:
        """``http://host:port/metrics``, or ``None`` when no metrics address is known."""
        return f"http://{self.metrics}/metrics" if self.metrics else None

    @property
    def http_url(self) -> str | None:
        """``http://host:port``, or ``None`` when no HTTP address is known."""
        return f"http://{self.http}" if self.http else None

    def to_dict(self) -> dict[str, str]:
        """The entry of an endpoints file (``{"name", "grpc", "http", "metrics"}``; unknown ones left out)."""
        return {key: value for key in _FIELDS if (value := getattr(self, key)) is not None}

    @classmethod
    def from_server(cls, server: Any, name: str | None = None) -> Endpoint:
        """The endpoint of a running :class:`~hermes.aeriel.server.Server`."""
        spec = server.spec
        return cls(
            name=name or server.grpc_url,
            grpc=server.grpc_url,
            http=f"{server.host}:{spec.http_port}",
            metrics=f"{server.host}:{spec.metrics_port}",
        )

    @classmethod
    def parse(cls, text: str, name: str | None = None) -> Endpoint:
        """An endpoint from a string.

        ``"host"`` means Triton's default ports (gRPC 8001, HTTP 8000, metrics 8002);
        ``"host:port"`` is a gRPC address alone; ``"name=a,grpc=h:p,http=h:p,metrics=h:p"``
        names each part.

        Raises:
            EndpointError: the text is none of these.
        """
        text = text.strip()
        if not text:
            raise EndpointError(
                "an empty string is not an endpoint; expected 'host', 'host:port' or 'grpc=...'"
            )
        if "=" in text:
            fields: dict[str, str] = {}
            for part in text.split(","):
                key, sep, value = part.partition("=")
                key = key.strip()
                if not sep or key not in _FIELDS:
                    raise EndpointError(
                        f"endpoint {text!r}: {part!r} is not one of {', '.join(f + '=...' for f in _FIELDS)}"
                    )
                fields[key] = value.strip()
            if "grpc" not in fields:
                raise EndpointError(f"endpoint {text!r} has no grpc=host:port")
            fields.setdefault("name", name or fields["grpc"])
            return cls(**fields)
        if ":" in text and not text.endswith("]"):
            return cls(name=name or text, grpc=text)
        return cls(
            name=name or text,
            grpc=f"{text}:{DEFAULT_PORTS['grpc']}",
            http=f"{text}:{DEFAULT_PORTS['http']}",
            metrics=f"{text}:{DEFAULT_PORTS['metrics']}",
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], index: int = 0) -> Endpoint:
        """An endpoint from a dict with keys ``name``, ``grpc`` and optionally ``http``, ``metrics``."""
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise EndpointError(
                f"endpoint #{index} has unknown field(s) {', '.join(unknown)}; expected {', '.join(_FIELDS)}"
            )
        if "grpc" not in data:
            raise EndpointError(f"endpoint #{index} ({dict(data)!r}) has no 'grpc' address")
        return cls(
            name=str(data.get("name") or data["grpc"]),
            grpc=data["grpc"],
            http=data.get("http"),
            metrics=data.get("metrics"),
        )


def _one(entry: Any, index: int) -> Endpoint:
    if isinstance(entry, Endpoint):
        return entry
    if isinstance(entry, str):
        return Endpoint.parse(entry)
    if isinstance(entry, Mapping):
        return Endpoint.from_mapping(entry, index)
    if hasattr(entry, "grpc_url") and hasattr(entry, "spec"):
        return Endpoint.from_server(entry)
    raise EndpointError(
        f"endpoint #{index} is a {type(entry).__name__}; expected an Endpoint, a Server, a string or a dict"
    )


def _from_file(path: Path) -> list[Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise EndpointError(f"cannot read the endpoint file {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except ValueError:
        # a plain list: one endpoint string per line, '#' starts a comment
        lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
        return [ln for ln in lines if ln]
    if isinstance(data, Mapping):
        if "endpoints" not in data:
            raise EndpointError(
                f"{path}: a JSON object must hold an 'endpoints' list, got keys {sorted(data)}"
            )
        data = data["endpoints"]
    if not isinstance(data, list):
        raise EndpointError(f"{path}: 'endpoints' must be a list, got {type(data).__name__}")
    return data


def load_endpoints(source: str | os.PathLike[str] | Iterable[Any] | Mapping[str, Any]) -> list[Endpoint]:
    """Endpoints from code, a file, or the cloud deployment's output.

    Args:
        source: a path to a JSON file (``{"endpoints": [...]}`` or a list) or a text file
            (one endpoint string per line); a mapping with an ``endpoints`` list; or an
            iterable of :class:`Endpoint`, :class:`~hermes.aeriel.server.Server`, strings
            (see :meth:`Endpoint.parse`) and dicts.

    Returns:
        The endpoints, in order.

    Raises:
        EndpointError: the source is empty, an entry is malformed, or two share a name.
    """
    entries: list[Any]
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise EndpointError(f"endpoint file {path} does not exist")
        entries = _from_file(path)
    elif isinstance(source, Mapping):
        if "endpoints" not in source:
            raise EndpointError(
                f"a mapping of endpoints needs an 'endpoints' list, got keys {sorted(source)}"
            )
        entries = list(source["endpoints"])
    else:
        entries = list(source)
    endpoints = [_one(entry, i) for i, entry in enumerate(entries)]
    if not endpoints:
        raise EndpointError("no endpoints given; expected at least one server")
    seen: dict[str, int] = {}
    for i, ep in enumerate(endpoints):
        if ep.name in seen:
            raise EndpointError(
                f"endpoints #{seen[ep.name]} and #{i} share the name {ep.name!r}; names must differ"
            )
        seen[ep.name] = i
    return endpoints
