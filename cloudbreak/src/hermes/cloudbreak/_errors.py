"""The one boundary where google-api-core errors become hermes.cloudbreak errors."""

from __future__ import annotations

import re
from typing import Any

from google.api_core import exceptions as gexc

from hermes.cloudbreak.exceptions import (
    CapacityError,
    CloudApiError,
    CloudbreakError,
    ResourceExists,
    ResourceNotFound,
)

__all__ = ["capacity_kind", "google_status", "translate_google_error"]

_STOCKOUT = re.compile(
    r"GCE_STOCKOUT|ZONE_RESOURCE_POOL_EXHAUSTED|STOCKOUT|does not have enough resources|"
    r"resource pool exhausted",
    re.IGNORECASE,
)
_QUOTA = re.compile(
    r"QUOTA_EXCEEDED|quota .*exceeded|exceeded quota|insufficient quota|GCE_QUOTA", re.IGNORECASE
)


def capacity_kind(message: str) -> str | None:
    """``"stockout"`` or ``"quota"`` when a cloud error message says capacity ran out, else ``None``."""
    if _STOCKOUT.search(message):
        return "stockout"
    if _QUOTA.search(message):
        return "quota"
    return None


def google_status(exc: gexc.GoogleAPICallError) -> str | None:
    """The canonical status name of a failed call (``"FAILED_PRECONDITION"``), over gRPC and REST alike.

    gRPC errors carry it as their status code; REST errors only as ``error.status`` in the JSON body
    (their class follows the HTTP code, so a 400 FAILED_PRECONDITION is a plain ``BadRequest``).
    """
    response: Any = getattr(exc, "response", None)
    try:
        status = response.json()["error"]["status"]
    except (ValueError, KeyError, TypeError, AttributeError):  # a gRPC call, or a body without status
        status = None
    if isinstance(status, str) and status:
        return status
    # the class attribute: exact for gRPC; for REST it is the HTTP code's class (400 -> INVALID_ARGUMENT)
    return str(exc.grpc_status_code.name) if exc.grpc_status_code is not None else None


def translate_google_error(exc: gexc.GoogleAPICallError, what: str) -> CloudbreakError:
    """The hermes error for a failed google-api-core call; ``what`` names the request (``create cluster x``)."""
    code = exc.code if isinstance(exc.code, int) else None
    message = f"{what}: {exc.message or exc}"
    kind = capacity_kind(str(exc.message or exc))
    # REST raises the HTTP-level parents: TooManyRequests (429) for ResourceExhausted, Conflict (409)
    # for AlreadyExists; catch those so both transports translate the same way.
    if kind is not None or isinstance(exc, gexc.TooManyRequests):
        return CapacityError(message, kind=kind or "quota", code=code)
    if isinstance(exc, gexc.NotFound):
        return ResourceNotFound(message, code=code)
    if isinstance(exc, gexc.Conflict):  # gRPC raises AlreadyExists, REST its parent Conflict
        return ResourceExists(message, code=code)
    return CloudApiError(message, code=code)
