"""Google credentials of any kind: Application Default Credentials, or an explicit credentials file. Never logged.

``google.auth`` does the loading, so every credential type Google's own tools accept works:
``authorized_user`` (``gcloud auth application-default login``), ``service_account`` keys,
``external_account`` (workload identity federation, e.g. GitHub Actions or a HPC site's OIDC),
``external_account_authorized_user`` and ``impersonated_service_account``. Only the type and
the file's path are ever logged or quoted; a file that does not load is reported by its type
and the exception's class, never by its content.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import google.auth
from google.auth.credentials import Credentials
from google.auth.exceptions import DefaultCredentialsError

from hermes.cloudbreak.exceptions import CloudConfigError

__all__ = ["CLOUD_PLATFORM_SCOPE", "CREDENTIAL_TYPES", "load_credentials"]

logger = logging.getLogger("hermes.cloudbreak.credentials")

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
#: The ``type`` values a credentials file may have (google-auth's own list).
CREDENTIAL_TYPES = (
    "authorized_user",
    "service_account",
    "external_account",
    "external_account_authorized_user",
    "impersonated_service_account",
    "gdch_service_account",
)


def _read_info(path: Path) -> dict[str, Any]:
    """The JSON of a credentials file, refused by its ``type`` alone (nothing else is quoted)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CloudConfigError(
            f"credentials_file {str(path)!r} is not a readable JSON credentials file ({type(exc).__name__})"
        ) from None
    kind = data.get("type") if isinstance(data, dict) else None
    if kind not in CREDENTIAL_TYPES:
        shown = kind if isinstance(kind, str) and len(kind) < 64 else "missing"
        raise CloudConfigError(
            f"credentials_file {str(path)!r} has type {shown!r}; expected one of {', '.join(CREDENTIAL_TYPES)}"
        )
    return data


def _external_account(info: dict[str, Any], scopes: list[str]) -> Credentials:
    source = info.get("credential_source") or {}
    if str(source.get("environment_id", "")).startswith("aws"):
        from google.auth import aws

        return aws.Credentials.from_info(info, scopes=scopes)
    if "executable" in source:
        from google.auth import pluggable

        return pluggable.Credentials.from_info(info, scopes=scopes)
    from google.auth import identity_pool

    return identity_pool.Credentials.from_info(info, scopes=scopes)


def _credentials_from_info(kind: str, info: dict[str, Any], scopes: list[str]) -> Credentials:
    """google-auth's own loader of each type (no token is fetched here)."""
    if kind == "service_account":
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_info(info, scopes=scopes)
    if kind == "authorized_user":
        from google.oauth2 import credentials as user

        return user.Credentials.from_authorized_user_info(info, scopes=scopes)
    if kind == "external_account":
        return _external_account(info, scopes)
    if kind == "external_account_authorized_user":
        from google.auth import external_account_authorized_user as eau

        return eau.Credentials.from_info(info, scopes=scopes)
    if kind == "impersonated_service_account":
        from google.auth import impersonated_credentials

        return impersonated_credentials.Credentials.from_impersonated_service_account_info(
            info, scopes=scopes
        )
    from google.oauth2 import gdch_credentials

    return gdch_credentials.ServiceAccountCredentials.from_service_account_info(info)


def _from_file(path: Path, scopes: tuple[str, ...]) -> tuple[Credentials, str | None]:
    if not path.is_file():
        raise CloudConfigError(
            f"credentials_file {str(path)!r} does not exist; expected a Google credentials JSON file "
            "(service account key, authorized_user or external_account)"
        )
    info = _read_info(path)
    kind = str(info["type"])
    try:
        creds = _credentials_from_info(kind, info, list(scopes))
    except (DefaultCredentialsError, ValueError, KeyError, TypeError) as exc:
        # the message of a malformed key could quote it: do not chain the original text
        raise CloudConfigError(
            f"credentials_file {str(path)!r} is not a valid {kind} credentials file ({type(exc).__name__})"
        ) from None
    logger.info("using %s credentials from a file", kind)
    project = info.get("project_id") or info.get("quota_project_id") or os.environ.get("GOOGLE_CLOUD_PROJECT")
    return creds, str(project) if project else None


def load_credentials(
    credentials_file: str | Path | None = None, *, scopes: tuple[str, ...] = (CLOUD_PLATFORM_SCOPE,)
) -> tuple[Credentials, str | None]:
    """Load Google credentials and the project they name.

    Args:
        credentials_file: a credentials JSON file of any type Google accepts (see the module);
            ``None`` uses Application Default Credentials: ``GOOGLE_APPLICATION_CREDENTIALS``
            (any type), ``gcloud auth application-default login``, or the metadata server (GKE
            workload identity, Compute Engine).
        scopes: OAuth scopes to request.

    Returns:
        ``(credentials, project)``; ``project`` is ``None`` when neither the credentials nor
        ``GOOGLE_CLOUD_PROJECT`` name one.

    Raises:
        CloudConfigError: the file is missing, of an unknown type or malformed, or no ADC is set up.
    """
    if credentials_file is not None:
        return _from_file(Path(credentials_file), scopes)
    try:
        creds, project = google.auth.default(scopes=list(scopes))
    except DefaultCredentialsError:
        raise CloudConfigError(
            "no Google credentials found: run `gcloud auth application-default login`, set "
            "GOOGLE_APPLICATION_CREDENTIALS to a credentials file, or pass credentials_file=..."
        ) from None
    logger.info("using Application Default Credentials (%s)", type(creds).__module__.rsplit(".", 1)[-1])
    return creds, project
