"""Teardown always runs to its end: every error a Google client can raise is caught at the teardown
boundary, transient ones are retried with backoff, and what is left is listed in one TeardownError."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from cloudbreak_fakes.gke import FakeGKE
from cloudbreak_fakes.gke_rest import start_fake_gke_rest
from cloudbreak_fakes.token import FakeTokenEndpoint
from google.oauth2 import credentials as user_credentials

from hermes.cloudbreak import ClusterManager, ClusterSpec, NodePoolSpec, TeardownError
from hermes.cloudbreak._managed import ManagedResource

SPEC = ClusterSpec(name="triton", node_pools=(NodePoolSpec(name="cpu"),))


@pytest.fixture
def rest_fake() -> Iterator[tuple[FakeGKE, Any]]:
    fake = FakeGKE()
    server = start_fake_gke_rest(fake)
    try:
        yield fake, server
    finally:
        server.shutdown()
        server.server_close()


def test_api_core_retry_error_during_the_delete_poll_is_retried(
    fake_gke: FakeGKE, gke: ClusterManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hermes.cloudbreak")
    gke.read_retry_deadline_s = 0.2  # api-core gives up after 0.2 s of UNAVAILABLE with a RetryError
    with gke.cluster(SPEC):
        fake_gke.unavailable = 8
    assert fake_gke.clusters == {}
    assert "the API kept failing until its retry deadline (ServiceUnavailable" in caplog.text
    assert fake_gke.unavailable < 8


def test_unavailable_delete_calls_are_retried(fake_gke: FakeGKE, gke: ClusterManager) -> None:
    with gke.cluster(SPEC):
        fake_gke.unavailable_deletes = 3
    assert fake_gke.clusters == {}
    assert fake_gke.methods().count("DeleteCluster") == 4


def test_google_auth_refresh_error_during_teardown_is_retried(
    rest_fake: tuple[FakeGKE, Any], token_endpoint: FakeTokenEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hermes.cloudbreak")
    fake, _ = rest_fake
    creds = user_credentials.Credentials(
        token=None, refresh_token="1//r", token_uri=token_endpoint.url, client_id="c", client_secret="s"
    )
    manager = ClusterManager(
        project="hermes-p1",
        location="us-central1-a",
        transport="rest",
        api_endpoint=f"http://127.0.0.1:{fake.port}",
        credentials=creds,
        poll_interval_s=0.01,
        timeout_s=10.0,
    )
    with manager, manager.cluster(SPEC):
        # the token expires during a long job, and the refresh is refused twice (invalid_grant)
        creds.expiry = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(
            minutes=1
        )
        token_endpoint.refusals = 2
    assert fake.clusters == {}
    assert token_endpoint.grants.count("refresh_token") == 4  # 1 at start, 2 refused, 1 granted
    assert (
        "refreshing the Google credentials failed (RefreshError: ('invalid_grant: Bad Request'" in caplog.text
    )
    assert "1//r" not in caplog.text


def test_a_dead_transport_ends_in_one_teardown_error_naming_what_is_left(
    rest_fake: tuple[FakeGKE, Any],
) -> None:
    fake, server = rest_fake
    manager = ClusterManager(
        project="hermes-p1",
        location="us-central1-a",
        transport="rest",
        api_endpoint=f"http://127.0.0.1:{fake.port}",
        poll_interval_s=0.01,
        timeout_s=0.5,
    )
    with pytest.raises(TeardownError) as info, manager, manager.cluster(SPEC):
        server.shutdown()
        server.server_close()  # the API is gone (a requests ConnectionError on every call)
    assert len(info.value.leftovers) == 1
    leftover = info.value.leftovers[0]
    assert leftover.startswith("GKE cluster triton in projects/hermes-p1/locations/us-central1-a (")
    assert "could not be reached (ConnectionError" in leftover


class _Broken(ManagedResource):
    def _create(self) -> None:
        pass

    def _delete(self) -> list[str]:
        raise TypeError("a bug in a delete")

    def describe(self) -> str:
        return "broken thing"


def test_any_exception_of_a_delete_becomes_a_teardown_error() -> None:
    with (
        pytest.raises(TeardownError, match=r"broken thing \(TypeError: a bug in a delete\)") as info,
        _Broken(),
    ):
        pass
    assert info.value.leftovers == ["broken thing (TypeError: a bug in a delete)"]
