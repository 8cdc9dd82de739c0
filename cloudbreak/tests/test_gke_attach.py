"""An existing GKE cluster reached by name: ``ClusterManager.attach`` and ``Cluster.kube_api_client``.

The fake GKE reports kmock's HTTPS emulator as the cluster's control plane and its self-signed
certificate as the cluster CA, so the kube client's CA check and bearer token run for real.
"""

from __future__ import annotations

import base64
import datetime
from pathlib import Path

import pytest
import urllib3
from cloudbreak_fakes.clock import gke_time
from cloudbreak_fakes.gke import FakeGKE
from cloudbreak_fakes.kube import self_signed_certificate
from google.oauth2.credentials import Credentials
from kubernetes import client

from hermes.cloudbreak import ClusterManager, ResourceNotFound

NOW = gke_time()  # any time: these tests do not look at the age


def point_cluster_at(fake_gke: FakeGKE, url: str, ca_pem: bytes) -> None:
    """Make ``fake_gke`` report ``url`` as the control plane of its clusters, signed by ``ca_pem``."""
    fake_gke.endpoint = url.removeprefix("https://")
    fake_gke.ca_certificate = base64.b64encode(ca_pem).decode()


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)  # google-auth's naive UTC


def rotating_credentials() -> tuple[Credentials, list[str]]:
    """Real OAuth2 credentials that get a new one-hour token (tok-1, tok-2, ...) on each refresh."""
    issued: list[str] = []

    def refresh_handler(request: object, scopes: object) -> tuple[str, datetime.datetime]:
        issued.append(f"tok-{len(issued) + 1}")
        return issued[-1], utcnow() + datetime.timedelta(hours=1)

    return Credentials(token=None, refresh_handler=refresh_handler), issued


def test_attached_cluster_client_checks_the_cluster_ca_and_refreshes_the_token(
    gke: ClusterManager, fake_gke: FakeGKE, kube_tls: dict
) -> None:
    point_cluster_at(fake_gke, kube_tls["url"], kube_tls["ca_pem"])
    fake_gke.add_cluster("hermes-p1", "us-central1-a", "o3", labels={}, create_time=NOW)
    credentials, issued = rotating_credentials()
    gke.credentials = credentials
    with gke.attach("o3") as cluster:
        assert cluster.info is not None and cluster.info.endpoint == fake_gke.endpoint
        with cluster.kube_api_client() as api:
            core = client.CoreV1Api(api)
            assert core.list_namespaced_service("default").items == []
            credentials.expiry = utcnow() - datetime.timedelta(seconds=1)  # an hour later
            assert core.list_namespaced_service("default").items == []
        ca_file = Path(api.configuration.ssl_ca_cert)
        assert ca_file.read_bytes() == kube_tls["ca_pem"]
    assert not ca_file.exists()
    headers = [r.headers.get("Authorization") for r in list(kube_tls["emu"])]
    assert headers == ["Bearer tok-1", "Bearer tok-2"]
    assert issued == ["tok-1", "tok-2"]
    assert "DeleteCluster" not in fake_gke.methods()
    assert list(fake_gke.clusters) == ["projects/hermes-p1/locations/us-central1-a/clusters/o3"]


def test_kube_client_refuses_a_control_plane_not_signed_by_the_cluster_ca(
    gke: ClusterManager, fake_gke: FakeGKE, kube_tls: dict, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    stranger_pem, _, _ = self_signed_certificate(other)
    point_cluster_at(fake_gke, kube_tls["url"], stranger_pem)
    fake_gke.add_cluster("hermes-p1", "us-central1-a", "o3", labels={}, create_time=NOW)
    gke.credentials = Credentials(token="tok")
    with gke.attach("o3") as cluster, cluster.kube_api_client() as api:
        api.configuration.retries = 0
        with pytest.raises(urllib3.exceptions.MaxRetryError, match="CERTIFICATE_VERIFY_FAILED"):
            client.CoreV1Api(api).list_namespaced_service("default")
    assert list(kube_tls["emu"]) == []


def test_attaching_a_missing_cluster_raises_not_found_and_deletes_nothing(
    gke: ClusterManager, fake_gke: FakeGKE
) -> None:
    with (
        pytest.raises(
            ResourceNotFound, match="get cluster nope: Not found: projects/hermes-p1/locations/us-central1-a"
        ),
        gke.attach("nope"),
    ):
        pass
    assert fake_gke.methods() == ["GetCluster"]


def test_attached_cluster_without_credentials_explains_what_is_missing(
    gke: ClusterManager, fake_gke: FakeGKE
) -> None:
    fake_gke.add_cluster("hermes-p1", "us-central1-a", "o3", labels={}, create_time=NOW)
    with (
        gke.attach("o3") as cluster,
        pytest.raises(ValueError, match="kube_api_client needs the ClusterManager's Google credentials"),
    ):
        cluster.kube_api_client()


def test_a_cluster_whose_kube_api_was_used_deletes_its_load_balancers_first(
    gke: ClusterManager, fake_gke: FakeGKE, kube_tls: dict, tls_controller: object
) -> None:
    from hermes.cloudbreak import ClusterSpec, NodePoolSpec
    from hermes.cloudbreak.kubernetes import TritonDeployment, TritonSpec

    point_cluster_at(fake_gke, kube_tls["url"], kube_tls["ca_pem"])
    credentials, _ = rotating_credentials()
    gke.credentials = credentials
    spec = TritonSpec(
        name="ext",
        model_repository="gs://b/r",
        service_type="LoadBalancer",
        load_balancer_source_ranges=("10.0.0.0/8",),
    )
    with gke.cluster(ClusterSpec(name="c", node_pools=(NodePoolSpec(name="cpu"),))) as cluster:
        api = cluster.kube_api_client()
        TritonDeployment(
            api, spec, poll_interval_s=0.02, timeout_s=20, keep=True
        ).__enter__()  # kept: outlives us
        ca_file = Path(api.configuration.ssl_ca_cert)
    requests = list(kube_tls["emu"])
    deletes = [r.url.path for r in requests if r.method.value == "DELETE"]
    assert deletes == [
        "/api/v1/namespaces/default/services/ext-0"
    ]  # only the load balancer, before the cluster
    assert fake_gke.clusters == {}
    assert not ca_file.exists()
