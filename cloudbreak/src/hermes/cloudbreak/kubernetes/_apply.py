"""Idempotent apply, read and delete of manifests through the official ``kubernetes`` client.

Apply = create, or a strategic-merge patch when the object exists (409). Every
``kubernetes``/``urllib3`` error is translated here into a hermes.cloudbreak error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import urllib3.exceptions
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from hermes.cloudbreak._errors import GOOGLE_ERRORS
from hermes.cloudbreak.exceptions import (
    CloudApiError,
    CloudbreakError,
    CloudConfigError,
    CloudUnavailable,
    ResourceNotFound,
)

__all__ = ["apply_manifest", "delete_manifest", "describe_manifest", "read_manifest"]

logger = logging.getLogger("hermes.cloudbreak.kubernetes")

# (apiVersion, kind) -> (API class, method suffix)
_KINDS: dict[tuple[str, str], tuple[type, str]] = {
    ("apps/v1", "Deployment"): (client.AppsV1Api, "namespaced_deployment"),
    ("apps/v1", "DaemonSet"): (client.AppsV1Api, "namespaced_daemon_set"),
    ("v1", "Service"): (client.CoreV1Api, "namespaced_service"),
    ("v1", "Secret"): (client.CoreV1Api, "namespaced_secret"),
    ("v1", "ConfigMap"): (client.CoreV1Api, "namespaced_config_map"),
    ("v1", "ServiceAccount"): (client.CoreV1Api, "namespaced_service_account"),
}
# what a call can raise besides ApiException: urllib3 transport errors, and google-auth errors of
# the GKE bearer-token hook
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (urllib3.exceptions.HTTPError, *GOOGLE_ERRORS)
_ANY_ERROR: tuple[type[BaseException], ...] = (ApiException, *_TRANSPORT_ERRORS)
# custom resources: (apiVersion, kind) -> plural
_CUSTOM: dict[tuple[str, str], str] = {("keda.sh/v1alpha1", "ScaledObject"): "scaledobjects"}


def describe_manifest(manifest: dict[str, Any]) -> str:
    """``Deployment default/triton-0`` for logs and errors."""
    meta = manifest.get("metadata", {})
    return f"{manifest.get('kind')} {meta.get('namespace', 'default')}/{meta.get('name')}"


def _custom_method(api_client: client.ApiClient, key: tuple[str, str], verb: str) -> Callable[..., Any]:
    """A CustomObjectsApi call shaped like the typed ones: (namespace, body) / (name, namespace[, body])."""
    group, version = key[0].split("/", 1)
    plural = _CUSTOM[key]
    api = client.CustomObjectsApi(api_client)
    if verb == "create":
        return lambda namespace, body: api.create_namespaced_custom_object(
            group, version, namespace, plural, body
        )
    if verb == "patch":
        return lambda name, namespace, body: api.patch_namespaced_custom_object(
            group, version, namespace, plural, name, body
        )
    if verb == "read":
        return lambda name, namespace: api.get_namespaced_custom_object(
            group, version, namespace, plural, name
        )
    return lambda name, namespace, **kw: api.delete_namespaced_custom_object(
        group, version, namespace, plural, name, **kw
    )


def _method(api_client: client.ApiClient, manifest: dict[str, Any], verb: str) -> Callable[..., Any]:
    key = (manifest.get("apiVersion", ""), manifest.get("kind", ""))
    if key in _CUSTOM:
        return _custom_method(api_client, key, verb)
    if key not in _KINDS:
        raise CloudConfigError(
            f"cannot apply {key[1] or '?'} ({key[0] or '?'}); supported: "
            + ", ".join(f"{k} ({v})" for v, k in sorted([*_KINDS, *_CUSTOM]))
        )
    api_class, suffix = _KINDS[key]
    return getattr(api_class(api_client), f"{verb}_{suffix}")


def _reason(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


def _translate(exc: BaseException, what: str) -> CloudbreakError:
    if isinstance(exc, ApiException):
        message = f"{what}: HTTP {exc.status} {_reason(exc)}"
        if exc.status == 404:
            return ResourceNotFound(message, code=404)
        if exc.status in (429, 500, 502, 503, 504) or not exc.status:
            return CloudUnavailable(message, code=exc.status or None)
        return CloudApiError(message, code=exc.status)
    return CloudUnavailable(f"{what}: the Kubernetes API did not answer ({type(exc).__name__}: {exc})")


def _names(manifest: dict[str, Any]) -> tuple[str, str]:
    meta = manifest.get("metadata", {})
    if not meta.get("name"):
        raise CloudConfigError(f"manifest {manifest.get('kind')} has no metadata.name")
    return meta["name"], meta.get("namespace", "default")


def apply_manifest(api_client: client.ApiClient, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Create the object, or patch it when it exists already.

    Returns:
        ``(object as the API returned it, created)``; ``created`` is ``False`` when it was patched.
    """
    name, namespace = _names(manifest)
    what = f"apply {describe_manifest(manifest)}"
    try:
        result = _method(api_client, manifest, "create")(namespace, manifest)
        created = True
    except ValueError as exc:  # kubernetes >= 37 validates bodies (pydantic.ValidationError)
        raise CloudConfigError(
            f"{what}: the manifest does not match the Kubernetes API types: {exc}"
        ) from exc
    except ApiException as exc:
        if exc.status != 409:
            raise _translate(exc, what) from exc
        try:
            result = _method(api_client, manifest, "patch")(name, namespace, manifest)
        except _ANY_ERROR as exc2:
            raise _translate(exc2, what) from exc2
        created = False
    except _TRANSPORT_ERRORS as exc:
        raise _translate(exc, what) from exc
    logger.info("%s %s", "created" if created else "patched", describe_manifest(manifest))
    return api_client.sanitize_for_serialization(result), created


def read_manifest(api_client: client.ApiClient, manifest: dict[str, Any]) -> dict[str, Any]:
    """The live object (with its status) named by ``manifest``; :class:`ResourceNotFound` when absent."""
    name, namespace = _names(manifest)
    try:
        result = _method(api_client, manifest, "read")(name, namespace)
    except _ANY_ERROR as exc:
        raise _translate(exc, f"read {describe_manifest(manifest)}") from exc
    return api_client.sanitize_for_serialization(result)


def delete_manifest(
    api_client: client.ApiClient, manifest: dict[str, Any], *, missing_ok: bool = True
) -> bool:
    """Delete the object (its pods go with it, in the background).

    Returns:
        ``True`` when deleted, ``False`` when it was already gone and ``missing_ok``.
    """
    name, namespace = _names(manifest)
    what = f"delete {describe_manifest(manifest)}"
    try:
        _method(api_client, manifest, "delete")(name, namespace, propagation_policy="Background")
    except ApiException as exc:
        if exc.status == 404 and missing_ok:
            return False
        raise _translate(exc, what) from exc
    except _TRANSPORT_ERRORS as exc:
        raise _translate(exc, what) from exc
    logger.info("deleted %s", describe_manifest(manifest))
    return True
