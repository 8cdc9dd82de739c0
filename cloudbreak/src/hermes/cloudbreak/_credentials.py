"""Google credentials: Application Default Credentials or a service-account key file. Never logged."""

from __future__ import annotations

import logging
from pathlib import Path

import google.auth
from google.auth.credentials import Credentials
from google.auth.exceptions import DefaultCredentialsError
from google.oauth2 import service_account

from hermes.cloudbreak.exceptions import CloudConfigError

__all__ = ["CLOUD_PLATFORM_SCOPE", "load_credentials"]

logger = logging.getLogger("hermes.cloudbreak.credentials")

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def load_credentials(
    credentials_file: str | Path | None = None, *, scopes: tuple[str, ...] = (CLOUD_PLATFORM_SCOPE,)
) -> tuple[Credentials, str | None]:
    """Load Google credentials and the project they name.

    Args:
        credentials_file: a service-account JSON key; ``None`` uses Application Default
            Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, ``gcloud auth application-default login``,
            or the metadata server).
        scopes: OAuth scopes to request.

    Returns:
        ``(credentials, project)``; ``project`` is ``None`` when the credentials do not name one.

    Raises:
        CloudConfigError: the file is missing or not a service-account key, or no ADC is set up.
    """
    if credentials_file is not None:
        path = Path(credentials_file)
        if not path.is_file():
            raise CloudConfigError(
                f"credentials_file {str(path)!r} does not exist; expected a service-account JSON key"
            )
        try:
            creds = service_account.Credentials.from_service_account_file(str(path), scopes=list(scopes))
        except (ValueError, KeyError) as exc:
            # the message of a malformed key could quote it: do not chain the original text
            raise CloudConfigError(
                f"credentials_file {str(path)!r} is not a valid service-account JSON key ({type(exc).__name__})"
            ) from None
        logger.info("using service-account credentials from a key file")
        return creds, creds.project_id
    try:
        creds, project = google.auth.default(scopes=list(scopes))
    except DefaultCredentialsError as exc:
        raise CloudConfigError(
            "no Google credentials found: run `gcloud auth application-default login`, set "
            "GOOGLE_APPLICATION_CREDENTIALS, or pass credentials_file=<service-account key>"
        ) from exc
    logger.info("using Application Default Credentials")
    return creds, project
