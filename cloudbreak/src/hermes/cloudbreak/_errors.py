"""The one boundary where google-api-core, google-auth and transport errors become hermes.cloudbreak errors.

Capacity errors are recognised from what Google really answers (quoted from public reports):

* GKE quota, refused on the request (HTTP 403 / gRPC PERMISSION_DENIED; kubeflow/kubeflow#842,
  vanvalenlab/kiosk-console#367)::

      Insufficient regional quota to satisfy request: resource "PREEMPTIBLE_NVIDIA_V100_GPUS":
      request requires '8.0' and is short '8.0'. project has a quota of '0.0' with '0.0' available.

* Compute quota (gcloud output, fastai/course-v3#165): ``Quota 'GPUS_ALL_REGIONS' exceeded. Limit: 0.0 globally.``
* GKE stockout inside a node-pool operation, after GKE retried it for up to 35 min
  (akka/akka-core#32992, tranquilitybase-io/tb-gcp#589, NVIDIA/aicr#2764)::

      Google Compute Engine: Not all instances running in IGM after 35m4.03s. Expected 5, running 2,
      transitioning 3. Current errors: [GCE_STOCKOUT]: Instance 'gke-...' creation failed: The zone
      'projects/p/zones/us-central1-c' does not have enough resources available to fulfill the request.
      '(resource type:compute)'.

* Compute stockout: operation error code ``ZONE_RESOURCE_POOL_EXHAUSTED`` or
  ``ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS``, whose ``errorInfo.metadatas.zonesAvailable`` names
  zones with capacity (kubernetes/k8s.io#9834).
* Typed: ``StatusCondition.Code.GCE_STOCKOUT`` / ``GCE_QUOTA_EXCEEDED`` in ``Operation.nodepool_conditions``
  and ``cluster_conditions``, and a node pool in ``RUNNING_WITH_ERROR``.

A RESOURCE_EXHAUSTED that is an API *rate* limit ("Quota exceeded for quota metric 'Read requests'
and limit 'Read requests per minute'") is not a capacity error: it is :class:`CloudUnavailable`,
retried like a network blip.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import google.auth.exceptions
import requests
from google.api_core import exceptions as gexc
from google.cloud import container_v1

from hermes.cloudbreak.exceptions import (
    CapacityError,
    CloudApiError,
    CloudbreakError,
    CloudUnavailable,
    ResourceExists,
    ResourceNotFound,
)

__all__ = [
    "GOOGLE_ERRORS",
    "capacity_from_conditions",
    "capacity_kind",
    "google_status",
    "quota_resource",
    "translate_error",
    "translate_google_error",
]

#: Everything a Google client call can raise besides our own errors: API errors, api-core's
#: RetryError (its retry deadline passed), google-auth's RefreshError/TransportError, and the
#: raw ``requests`` errors the REST transport lets through.
GOOGLE_ERRORS: tuple[type[BaseException], ...] = (
    gexc.GoogleAPICallError,
    gexc.RetryError,
    google.auth.exceptions.GoogleAuthError,
    requests.exceptions.RequestException,
)

_STOCKOUT = re.compile(
    r"GCE_STOCKOUT|ZONE_RESOURCE_POOL_EXHAUSTED|state:STOCKOUT|"
    r"does not have enough resources available to fulfill the request",
    re.IGNORECASE,
)
_QUOTA = re.compile(
    r"GCE_QUOTA_EXCEEDED|QUOTA_EXCEEDED|Insufficient (?:regional |zonal |global )?quota to satisfy request|"
    r"Quota '[A-Z0-9_]+' exceeded",
    re.IGNORECASE,
)
_RATE_LIMIT = re.compile(r"Quota exceeded for quota metric|rate ?limit", re.IGNORECASE)
_QUOTA_RESOURCE = re.compile(r"""resource "([A-Z0-9_]+)"|Quota '([A-Z0-9_]+)' exceeded""")
_ZONES_AVAILABLE = re.compile(r"zonesAvailable[\"']?\s*[:=]\s*[\"']?([a-z0-9,\- ]+)")
_TRANSIENT_STATUS = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "ABORTED", "UNKNOWN"}
_CONDITION_KIND = {
    container_v1.StatusCondition.Code.GCE_STOCKOUT: "stockout",
    container_v1.StatusCondition.Code.GCE_QUOTA_EXCEEDED: "quota",
}


def capacity_kind(message: str) -> str | None:
    """``"stockout"`` or ``"quota"`` when a cloud error message says capacity ran out, else ``None``."""
    if _STOCKOUT.search(message):
        return "stockout"
    if _QUOTA.search(message):
        return "quota"
    return None


def quota_resource(message: str) -> str | None:
    """The quota a refusal names (``"PREEMPTIBLE_NVIDIA_V100_GPUS"``), or ``None``."""
    match = _QUOTA_RESOURCE.search(message)
    return (match.group(1) or match.group(2)) if match else None


def zones_available(text: str) -> tuple[str, ...]:
    """The zones a ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS answer says have capacity."""
    match = _ZONES_AVAILABLE.search(text)
    if not match:
        return ()
    return tuple(z.strip() for z in match.group(1).split(",") if z.strip())


def capacity_from_conditions(
    conditions: Iterable[container_v1.StatusCondition],
) -> tuple[str, str] | None:
    """``(kind, message)`` of the first condition that says capacity ran out, else ``None``.

    The typed ``code`` (GCE_STOCKOUT, GCE_QUOTA_EXCEEDED) wins; a condition with only a
    ``canonical_code`` of RESOURCE_EXHAUSTED is judged by its message.
    """
    for condition in conditions:
        kind = _CONDITION_KIND.get(condition.code)
        if kind is None:
            kind = capacity_kind(condition.message)
        if kind is not None:
            return kind, condition.message or condition.code.name
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


def _capacity(message: str, what: str, kind: str, code: int | None) -> CapacityError:
    return CapacityError(
        f"{what}: {message}",
        kind=kind,
        code=code,
        resource=quota_resource(message),
        zones_available=zones_available(message),
    )


def translate_google_error(exc: gexc.GoogleAPICallError, what: str) -> CloudbreakError:
    """The hermes error for a failed google-api-core call; ``what`` names the request (``create cluster x``)."""
    code = exc.code if isinstance(exc.code, int) else None
    text = str(exc.message or exc)
    message = f"{what}: {text}"
    kind = capacity_kind(text)
    if kind is not None:  # a 403 PERMISSION_DENIED quota text included: it is not an IAM problem
        return _capacity(text, what, kind, code)
    # REST raises the HTTP-level parents: TooManyRequests (429) for ResourceExhausted, Conflict (409)
    # for AlreadyExists; catch those so both transports translate the same way.
    if isinstance(exc, gexc.TooManyRequests):
        if _RATE_LIMIT.search(text):
            return CloudUnavailable(message, code=code)
        return _capacity(text, what, "quota", code)
    if isinstance(exc, gexc.NotFound):
        return ResourceNotFound(message, code=code)
    if isinstance(exc, gexc.Conflict):  # gRPC raises AlreadyExists, REST its parent Conflict
        return ResourceExists(message, code=code)
    if isinstance(exc, gexc.ServerError) or google_status(exc) in _TRANSIENT_STATUS:
        return CloudUnavailable(message, code=code)
    return CloudApiError(message, code=code)


def translate_error(exc: BaseException, what: str) -> CloudbreakError:
    """The hermes error for anything in :data:`GOOGLE_ERRORS` (a hermes error passes through).

    Never quotes credentials: google-auth's messages name the failing step, not the token.
    """
    if isinstance(exc, CloudbreakError):
        return exc
    if isinstance(exc, gexc.GoogleAPICallError):
        return translate_google_error(exc, what)
    if isinstance(exc, gexc.RetryError):
        cause = exc.cause
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
        return CloudUnavailable(f"{what}: the API kept failing until its retry deadline ({detail})")
    if isinstance(exc, google.auth.exceptions.RefreshError):
        return CloudUnavailable(
            f"{what}: refreshing the Google credentials failed ({type(exc).__name__}: {str(exc)[:200]})"
        )
    if isinstance(exc, google.auth.exceptions.GoogleAuthError):
        return CloudUnavailable(
            f"{what}: Google authentication failed ({type(exc).__name__}: {str(exc)[:200]})"
        )
    return CloudUnavailable(f"{what}: the API could not be reached ({type(exc).__name__}: {str(exc)[:200]})")
