"""Server endpoints handed to the aeriel multi-server client, as a JSON file.

:class:`Endpoint` is aeriel's own (:class:`hermes.aeriel.endpoints.Endpoint`): one type from
the deployment that finds the servers to the client that routes over them.

The file has exactly this shape, one entry per Triton server replica::

    {"endpoints": [{"name": "triton-0", "grpc": "10.0.0.7:8001", "http": "10.0.0.7:8000",
                    "metrics": "10.0.0.7:8002"}]}
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from hermes.aeriel.endpoints import Endpoint
from hermes.aeriel.exceptions import EndpointError
from hermes.cloudbreak.exceptions import CloudConfigError

__all__ = ["Endpoint", "read_endpoints", "write_endpoints"]

_KEYS = ("name", "grpc", "http", "metrics")


def write_endpoints(path: str | Path, endpoints: Iterable[Endpoint]) -> Path:
    """Write ``{"endpoints": [...]}`` to ``path`` atomically (a reader never sees half a file)."""
    path = Path(path)
    payload = {"endpoints": [e.to_dict() for e in endpoints]}
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as fh:
            json.dump(payload, fh, indent=2)
            fh.write("\n")
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_endpoints(path: str | Path) -> list[Endpoint]:
    """Read a file written by :func:`write_endpoints`."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("endpoints"), list):
        raise CloudConfigError(f'{path} must hold {{"endpoints": [...]}}, got {str(data)[:80]!r}')
    out = []
    for item in data["endpoints"]:
        if not isinstance(item, dict) or set(item) != set(_KEYS):
            raise CloudConfigError(
                f"{path}: each endpoint needs exactly the keys {list(_KEYS)}, got {item!r}"
            )
        try:
            out.append(Endpoint(**item))
        except EndpointError as exc:
            raise CloudConfigError(f"{path}: {exc}") from exc
    return out
