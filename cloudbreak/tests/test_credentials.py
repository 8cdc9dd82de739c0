"""Credentials: every type google-auth accepts loads (service account, authorized_user, external_account),
through a file or ADC; a broken one is refused without quoting it; no secret reaches a log or an error."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from hermes.cloudbreak import CloudConfigError, ClusterManager, load_credentials


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path = tmp_path / "sa.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "gw-project",
                "private_key_id": "abc123",
                "private_key": pem,
                "client_email": "hermes@gw-project.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    return path


def test_service_account_file_gives_credentials_and_project(
    key_file: Path, caplog: pytest.LogCaptureFixture, fake_gke: object
) -> None:
    caplog.set_level(logging.DEBUG, logger="hermes.cloudbreak")
    credentials, project = load_credentials(key_file)
    assert project == "gw-project"
    assert credentials.service_account_email == "hermes@gw-project.iam.gserviceaccount.com"  # type: ignore[attr-defined]
    manager = ClusterManager(location="us-central1-a", credentials_file=key_file)
    assert manager.project == "gw-project"
    assert repr(manager) == "ClusterManager(project='gw-project', location='us-central1-a')"
    secret = json.loads(key_file.read_text())["private_key"].splitlines()[1]
    assert secret not in caplog.text and "abc123" not in caplog.text
    assert "using service_account credentials from a file" in caplog.text


def test_a_broken_key_file_is_refused_without_quoting_it(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"type": "service_account", "private_key": "SECRET-MATERIAL"}))
    with pytest.raises(CloudConfigError, match="is not a valid service_account credentials file") as info:
        load_credentials(path)
    assert "SECRET-MATERIAL" not in str(info.value) and info.value.__cause__ is None
    with pytest.raises(CloudConfigError, match="does not exist; expected a Google credentials JSON file"):
        load_credentials(tmp_path / "missing.json")


SECRET = "1//0refresh-SECRET-token"


def authorized_user_file(tmp_path: Path) -> Path:
    """What `gcloud auth application-default login` writes (its fields, made-up values)."""
    path = tmp_path / "application_default_credentials.json"
    path.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "764086051850-6qr4p6gpi6hn506pt8ejuq83di341hur.apps.googleusercontent.com",
                "client_secret": "d-CLIENT-SECRET",
                "refresh_token": SECRET,
                "quota_project_id": "gw-user-project",
            }
        )
    )
    return path


def external_account_file(tmp_path: Path) -> Path:
    """Workload identity federation with a file-sourced OIDC token (what CI systems get)."""
    subject = tmp_path / "oidc-token"
    subject.write_text("eyJ-SUBJECT-TOKEN")
    path = tmp_path / "wif.json"
    path.write_text(
        json.dumps(
            {
                "type": "external_account",
                "audience": "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/ci/providers/gh",
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                "token_url": "https://sts.googleapis.com/v1/token",
                "credential_source": {"file": str(subject)},
            }
        )
    )
    return path


def test_authorized_user_file_loads_with_its_quota_project(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hermes.cloudbreak")
    credentials, project = load_credentials(authorized_user_file(tmp_path))
    assert type(credentials).__module__ == "google.oauth2.credentials"
    assert project == "gw-user-project"
    assert "using authorized_user credentials from a file" in caplog.text
    assert SECRET not in caplog.text and "CLIENT-SECRET" not in caplog.text


def test_external_account_file_loads(tmp_path: Path) -> None:
    credentials, project = load_credentials(external_account_file(tmp_path))
    assert type(credentials).__module__ == "google.auth.identity_pool"
    assert project is None


def test_adc_takes_any_type_from_google_application_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(external_account_file(tmp_path)))
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "gw-ci-runner")
    credentials, project = load_credentials()
    assert type(credentials).__module__ == "google.auth.identity_pool"
    assert project == "gw-ci-runner"


def test_an_unknown_type_is_named_and_nothing_else_is_quoted(tmp_path: Path) -> None:
    path = tmp_path / "odd.json"
    path.write_text(json.dumps({"type": "api_key", "key": "AIza-SECRET"}))
    with pytest.raises(
        CloudConfigError, match=r"has type 'api_key'; expected one of authorized_user"
    ) as info:
        load_credentials(path)
    assert "AIza-SECRET" not in str(info.value)
    path.write_text("{not json AIza-SECRET")
    with pytest.raises(CloudConfigError, match="not a readable JSON credentials file") as info:
        load_credentials(path)
    assert "AIza-SECRET" not in str(info.value) and info.value.__cause__ is None


def user_credentials(token_uri: str) -> Any:
    """google-auth's authorized_user credentials refreshing at ``token_uri`` (from_authorized_user_info
    always uses Google's endpoint, so the fake's address is given to the constructor)."""
    from google.oauth2 import credentials

    return credentials.Credentials(
        token=None,
        refresh_token=SECRET,
        token_uri=token_uri,
        client_id="764086051850.apps.googleusercontent.com",
        client_secret="d-CLIENT-SECRET",
    )


def test_authorized_user_credentials_refresh_and_authorize_real_rest_calls(
    tmp_path: Path, token_endpoint: object, caplog: pytest.LogCaptureFixture
) -> None:
    """The REST transport refreshes through google-auth and sends the bearer token; nothing secret is logged."""
    from cloudbreak_fakes.gke import FakeGKE
    from cloudbreak_fakes.gke_rest import start_fake_gke_rest

    caplog.set_level(logging.DEBUG)
    fake = FakeGKE()
    server = start_fake_gke_rest(fake)
    try:
        credentials = user_credentials(token_endpoint.url)  # type: ignore[attr-defined]
        manager = ClusterManager(
            project="hermes-p1",
            location="us-central1-a",
            transport="rest",
            api_endpoint=f"http://127.0.0.1:{fake.port}",
            credentials=credentials,
        )
        assert manager.list_clusters() == []
        manager.close()
    finally:
        server.shutdown()
        server.server_close()
    assert token_endpoint.grants == ["refresh_token"]  # type: ignore[attr-defined]
    token = token_endpoint.tokens[0]  # type: ignore[attr-defined]
    assert fake.requests[0][2]["authorization"] == f"Bearer {token}"
    assert SECRET not in caplog.text and token not in caplog.text


def test_cli_takes_an_authorized_user_file_and_adc_of_any_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--credentials-file`` loads any type; without it ADC reads GOOGLE_APPLICATION_CREDENTIALS (also any type)."""
    from typer.testing import CliRunner

    from hermes.cloudbreak._cli import _credentials, app

    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "--credentials-file",
            str(authorized_user_file(tmp_path)),
            "cluster",
            "list",
            "--project",
            "hermes-p",
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    assert type(_credentials()).__module__ == "google.oauth2.credentials"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(external_account_file(tmp_path)))
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "gw-ci-runner")
    result = runner.invoke(app, ["cluster", "list", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert type(_credentials()).__module__ == "google.auth.identity_pool"
    assert SECRET not in result.output
