"""ClusterManager over both GKE transports, gRPC and REST, against the same fake state.

Each test runs twice: through the gRPC fake (insecure channel) and through the REST fake
(plain HTTP, JSON bodies parsed with google-cloud-container's own types). The manager is built
from ``transport=`` and ``api_endpoint=`` only, as a user would build it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cloudbreak_fakes.gke import FakeGKE, start_fake_gke
from cloudbreak_fakes.gke_rest import start_fake_gke_rest
from google.api_core import exceptions as gexc
from google.cloud import container_v1

from hermes.cloudbreak import (
    CapacityError,
    CloudConfigError,
    ClusterManager,
    ClusterSpec,
    NodePoolSpec,
    ResourceExists,
    ResourceNotFound,
    RetryPolicy,
)

SPEC = ClusterSpec(
    name="triton",
    node_pools=(
        NodePoolSpec(name="gpus", accelerator_type="nvidia-tesla-t4", accelerator_count=1, spot=True),
    ),
    labels={"job": "o3"},
)


@pytest.fixture(params=["grpc", "rest"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fake(transport: str) -> Iterator[FakeGKE]:
    fake = FakeGKE()
    if transport == "grpc":
        server: Any = start_fake_gke(fake)
        try:
            yield fake
        finally:
            server.stop(grace=None).wait(5)
    else:
        server = start_fake_gke_rest(fake)
        try:
            yield fake
        finally:
            server.shutdown()
            server.server_close()


@pytest.fixture
def manager(fake: FakeGKE, transport: str) -> Iterator[ClusterManager]:
    with ClusterManager(
        project="hermes-p1",
        location="us-central1-a",
        transport=transport,
        api_endpoint=f"http://127.0.0.1:{fake.port}",
        retry=RetryPolicy(attempts=2, backoff_s=0.0, deadline_s=30.0),
        poll_interval_s=0.01,
        timeout_s=10.0,
    ) as gke:
        yield gke


def test_create_waits_until_running_and_sends_the_spec(
    manager: ClusterManager, fake: FakeGKE, transport: str
) -> None:
    fake.polls_per_operation = 2
    cluster = manager.create_cluster(SPEC)
    assert cluster.status == container_v1.Cluster.Status.RUNNING
    assert fake.methods() == ["CreateCluster", "GetOperation", "GetOperation", "GetCluster"]
    _, request, metadata = fake.requests[0]
    assert request == manager.create_cluster_request(SPEC)
    assert dict(request.cluster.resource_labels) == {"managed-by": "hermes-cloudbreak", "job": "o3"}
    accelerator = request.cluster.node_pools[0].config.accelerators[0]
    assert (accelerator.accelerator_type, accelerator.accelerator_count) == ("nvidia-tesla-t4", 1)
    if transport == "rest":
        assert metadata["query"] == "%24alt=json%3Benum-encoding%3Dint"
    else:
        assert metadata["x-goog-request-params"] == "parent=projects/hermes-p1/locations/us-central1-a"


def test_get_list_and_delete(manager: ClusterManager, fake: FakeGKE) -> None:
    manager.create_cluster(SPEC)
    assert manager.get_cluster("triton").resource_labels["job"] == "o3"
    assert [c.name for c in manager.list_clusters()] == ["triton"]
    assert manager.delete_cluster("triton") is True
    assert manager.list_clusters() == []
    assert fake.clusters == {}


def test_duplicate_create_raises_resource_exists_with_409(manager: ClusterManager, transport: str) -> None:
    manager.create_cluster(SPEC)
    with pytest.raises(ResourceExists, match=r"create cluster triton: .*Already exists") as info:
        manager.create_cluster(SPEC)
    assert info.value.code == 409
    # the google-api-core class differs by transport; both are translated the same way
    expected = gexc.AlreadyExists if transport == "grpc" else gexc.Conflict
    assert type(info.value.__cause__) is expected


def test_missing_cluster_raises_not_found_with_404(manager: ClusterManager) -> None:
    with pytest.raises(ResourceNotFound, match=r"get cluster nope: .*Not found") as info:
        manager.get_cluster("nope")
    assert info.value.code == 404
    assert manager.delete_cluster("nope", missing_ok=True) is False


def test_delete_is_resent_while_another_operation_runs(manager: ClusterManager, fake: FakeGKE) -> None:
    fake.polls_per_operation = 4
    manager.client.create_cluster(request=manager.create_cluster_request(SPEC))  # not awaited
    assert manager.delete_cluster("triton") is True
    methods = fake.methods()
    assert methods[:3] == ["CreateCluster", "DeleteCluster", "DeleteCluster"]  # FAILED_PRECONDITION, resent
    assert fake.clusters == {}


def test_quota_error_becomes_a_capacity_error_after_the_retries(
    manager: ClusterManager, fake: FakeGKE
) -> None:
    fake.quota_errors = 5
    with pytest.raises(CapacityError, match="Insufficient regional quota to satisfy request") as info:
        manager.create_cluster(SPEC)
    # both transports: GKE's 403 PERMISSION_DENIED with the quota text is a capacity error
    assert (info.value.kind, info.value.attempts, info.value.code) == ("quota", 2, 403)
    assert info.value.resource == "NVIDIA_T4_GPUS"
    assert fake.methods() == ["CreateCluster", "CreateCluster"]


def test_node_pool_round_trip(manager: ClusterManager) -> None:
    manager.create_cluster(SPEC)
    pool = manager.create_node_pool("triton", NodePoolSpec(name="cpu", machine_type="e2-standard-8"))
    assert (pool.name, pool.status) == ("cpu", container_v1.NodePool.Status.RUNNING)
    assert [p.name for p in manager.list_node_pools("triton")] == ["gpus", "cpu"]
    assert manager.delete_node_pool("triton", "cpu") is True
    assert [p.name for p in manager.list_node_pools("triton")] == ["gpus"]


def test_unknown_transport_is_refused() -> None:
    with pytest.raises(
        CloudConfigError, match=r"ClusterManager.transport must be one of \['grpc', 'rest'\], got 'http'"
    ):
        ClusterManager(
            project="hermes-p1", location="us-central1-a", transport="http", api_endpoint="http://127.0.0.1:1"
        )
