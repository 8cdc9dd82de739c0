"""Credentials: a service-account key file loads, a broken one is refused without quoting it, none leaks in logs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

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
    assert "using service-account credentials from a key file" in caplog.text


def test_a_broken_key_file_is_refused_without_quoting_it(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"type": "service_account", "private_key": "SECRET-MATERIAL"}))
    with pytest.raises(CloudConfigError, match="is not a valid service-account JSON key") as info:
        load_credentials(path)
    assert "SECRET-MATERIAL" not in str(info.value) and info.value.__cause__ is None
    with pytest.raises(CloudConfigError, match="does not exist; expected a service-account JSON key"):
        load_credentials(tmp_path / "missing.json")
