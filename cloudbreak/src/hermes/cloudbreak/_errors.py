"""The one boundary where google-api-core errors become hermes.cloudbreak errors."""

from __future__ import annotations

import re

from google.api_core import exceptions as gexc

from hermes.cloudbreak.exceptions import (
    CapacityError,
    CloudApiError,
    CloudbreakError,
    ResourceExists,
    ResourceNotFound,
)

__all__ = ["capacity_kind", "translate_google_error"]

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


def translate_google_error(exc: gexc.GoogleAPICallError, what: str) -> CloudbreakError:
    """The hermes error for a failed google-api-core call; ``what`` names the request (``create cluster x``)."""
    code = exc.code if isinstance(exc.code, int) else None
    message = f"{what}: {exc.message or exc}"
    kind = capacity_kind(str(exc.message or exc))
    if kind is not None or isinstance(exc, gexc.ResourceExhausted):
        return CapacityError(message, kind=kind or "quota", code=code)
    if isinstance(exc, gexc.NotFound):
        return ResourceNotFound(message, code=code)
    if isinstance(exc, gexc.Conflict):  # gRPC raises AlreadyExists, REST its parent Conflict
        return ResourceExists(message, code=code)
    return CloudApiError(message, code=code)
