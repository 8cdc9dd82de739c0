"""GKE clusters and node pools against the loopback gRPC fake of ClusterManager."""

from __future__ import annotations

import pytest
from cloudbreak_fakes.gke import FakeGKE
from google.cloud import container_v1

from hermes.cloudbreak import (
    CapacityError,
    CloudConfigError,
    ClusterManager,
    ClusterSpec,
    NodePoolSpec,
    OperationTimeout,
    ResourceExists,
    ResourceNotFound,
    RetryPolicy,
)

T4 = NodePoolSpec(
    name="gpus",
    machine_type="n1-standard-8",
    accelerator_type="nvidia-tesla-t4",
    accelerator_count=2,
    node_count=1,
    min_node_count=0,
    max_node_count=4,
    spot=True,
)
SPEC = ClusterSpec(name="triton", node_pools=(T4,), labels={"job": "o3-offline"})


def test_create_cluster_sends_gpu_pool_and_waits_until_running(
    gke: ClusterManager, fake_gke: FakeGKE
) -> None:
    fake_gke.polls_per_operation = 3
    cluster = gke.create_cluster(SPEC)
    assert cluster.status == container_v1.Cluster.Status.RUNNING
    assert fake_gke.methods() == [
        "CreateCluster",
        "GetOperation",
        "GetOperation",
        "GetOperation",
        "GetCluster",
    ]
    _, request, metadata = fake_gke.requests[0]
    assert request.parent == "projects/hermes-p1/locations/us-central1-a"
    pool = request.cluster.node_pools[0]
    assert pool.config.accelerators[0].accelerator_type == "nvidia-tesla-t4"
    assert pool.config.accelerators[0].accelerator_count == 2
    assert pool.config.accelerators[0].gpu_driver_installation_config.gpu_driver_version.name == "DEFAULT"
    assert pool.config.spot is True
    assert (pool.autoscaling.enabled, pool.autoscaling.min_node_count, pool.autoscaling.max_node_count) == (
        True,
        0,
        4,
    )
    assert dict(request.cluster.resource_labels) == {"managed-by": "hermes-cloudbreak", "job": "o3-offline"}
    assert metadata["x-goog-request-params"] == "parent=projects/hermes-p1/locations/us-central1-a"


def test_get_and_list_clusters_and_delete(gke: ClusterManager) -> None:
    gke.create_cluster(SPEC)
    assert gke.get_cluster("triton").name == "triton"
    assert [c.name for c in gke.list_clusters()] == ["triton"]
    assert gke.delete_cluster("triton") is True
    assert gke.list_clusters() == []


def test_missing_cluster_raises_not_found_naming_it(gke: ClusterManager) -> None:
    with pytest.raises(
        ResourceNotFound, match="get cluster nope: Not found: projects/hermes-p1/locations/us-central1-a"
    ):
        gke.get_cluster("nope")
    with pytest.raises(ResourceNotFound) as info:
        gke.delete_cluster("nope")
    assert info.value.code == 404
    assert gke.delete_cluster("nope", missing_ok=True) is False


def test_duplicate_cluster_raises_exists_and_context_leaves_the_other_cluster_alone(
    gke: ClusterManager, fake_gke: FakeGKE
) -> None:
    gke.create_cluster(SPEC)
    with pytest.raises(ResourceExists, match="Already exists") as info, gke.cluster(SPEC):
        pass
    assert info.value.code == 409
    assert [c.name for c in gke.list_clusters()] == ["triton"]
    assert "DeleteCluster" not in fake_gke.methods()


def test_stockout_is_retried_after_deleting_the_failed_cluster(
    gke: ClusterManager, fake_gke: FakeGKE
) -> None:
    fake_gke.stockouts = 2
    cluster = gke.create_cluster(SPEC)
    assert cluster.status == container_v1.Cluster.Status.RUNNING
    assert fake_gke.methods().count("CreateCluster") == 3
    assert fake_gke.methods().count("DeleteCluster") == 2


def test_stockout_gives_up_after_the_policy_with_nothing_left_behind(
    gke: ClusterManager, fake_gke: FakeGKE
) -> None:
    fake_gke.stockouts = 5
    with pytest.raises(
        CapacityError, match=r"gave up after 3 attempt\(s\).*GCE_STOCKOUT.*another zone"
    ) as info:
        gke.create_cluster(SPEC)
    assert (info.value.kind, info.value.attempts) == ("stockout", 3)
    assert gke.list_clusters() == []


def test_quota_error_is_reported_clearly_and_bounded_by_attempts(
    fake_gke: FakeGKE, gke: ClusterManager
) -> None:
    fake_gke.quota_errors = 5
    once = ClusterManager(
        project="hermes-p1",
        location="us-central1-a",
        client=gke.client,
        retry=RetryPolicy(attempts=2, backoff_s=0.0),
        poll_interval_s=0.01,
    )
    with pytest.raises(CapacityError, match=r"Insufficient regional quota.*NVIDIA_T4_GPUS") as info:
        once.create_cluster(SPEC)
    # GKE answers 403 PERMISSION_DENIED: a quota refusal, not an IAM problem
    assert (info.value.kind, info.value.attempts, info.value.code) == ("quota", 2, 403)
    assert info.value.resource == "NVIDIA_T4_GPUS"
    assert fake_gke.methods() == ["CreateCluster", "CreateCluster"]


def test_operation_wait_times_out_with_the_last_state(gke: ClusterManager, fake_gke: FakeGKE) -> None:
    fake_gke.polls_per_operation = 10**9
    with pytest.raises(
        OperationTimeout,
        match=r"create cluster triton \(operation operation-1\) did not finish "
        r"within 0.05 s \(last state: RUNNING\)",
    ):
        gke.create_cluster(SPEC, timeout_s=0.05)


def test_context_deletes_cluster_on_exit_and_on_exception(gke: ClusterManager, fake_gke: FakeGKE) -> None:
    with gke.cluster(SPEC) as cluster:
        assert cluster.info is not None and cluster.info.endpoint == "127.0.0.1"
        assert [c.name for c in gke.list_clusters()] == ["triton"]
    assert gke.list_clusters() == []
    with pytest.raises(RuntimeError, match="job failed"), gke.cluster(SPEC):
        raise RuntimeError("job failed")
    assert gke.list_clusters() == []
    cluster.close()  # idempotent
    with pytest.raises(Exception, match="already closed"):
        cluster.__enter__()


def test_keep_leaves_the_cluster_running(gke: ClusterManager) -> None:
    with gke.cluster(SPEC, keep=True):
        pass
    assert [c.name for c in gke.list_clusters()] == ["triton"]


def test_timeout_during_create_still_deletes_the_half_made_cluster(
    gke: ClusterManager, fake_gke: FakeGKE
) -> None:
    fake_gke.polls_per_operation = 30  # the create op is still running when we give up, and blocks deletes
    with pytest.raises(OperationTimeout), gke.cluster(SPEC, timeout_s=0.01):
        pass
    assert gke.list_clusters() == []
    methods = fake_gke.methods()
    assert methods.count("DeleteCluster") >= 2  # the first ones hit FAILED_PRECONDITION and were sent again


def test_node_pool_context_adds_and_deletes_the_pool(gke: ClusterManager) -> None:
    extra = NodePoolSpec(name="clients", machine_type="e2-standard-4", node_count=2)
    with gke.cluster(SPEC) as cluster:
        with cluster.node_pool(extra) as pool:
            assert pool.info is not None and pool.info.status == container_v1.NodePool.Status.RUNNING
            assert [p.name for p in gke.list_node_pools("triton")] == ["gpus", "clients"]
            assert gke.get_node_pool("triton", "clients").config.machine_type == "e2-standard-4"
        assert [p.name for p in gke.list_node_pools("triton")] == ["gpus"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "GPU"}, "NodePoolSpec.name must be lowercase.*got 'GPU'"),
        ({"name": "g", "accelerator_count": 2}, "accelerator_type is not set"),
        ({"name": "g", "accelerator_type": "nvidia-l4"}, "accelerator_count is 0"),
        ({"name": "g", "min_node_count": 1}, "min_node_count=1, max_node_count=None"),
        ({"name": "g", "min_node_count": 3, "max_node_count": 2}, "min_node_count <= max_node_count"),
        ({"name": "g", "gpu_driver": "newest"}, "gpu_driver must be one of .*'newest'"),
        ({"name": "g", "labels": {"Team": "x"}}, "invalid label 'Team'"),
    ],
)
def test_node_pool_spec_rejects_bad_fields(kwargs: dict, message: str) -> None:
    with pytest.raises(CloudConfigError, match=message):
        NodePoolSpec(**kwargs)


def test_cluster_spec_needs_pools_with_unique_names() -> None:
    with pytest.raises(CloudConfigError, match="at least one NodePoolSpec"):
        ClusterSpec(name="c", node_pools=())
    with pytest.raises(CloudConfigError, match="duplicate names"):
        ClusterSpec(name="c", node_pools=(T4, T4))


def test_retry_policy_validates_and_grows_backoff() -> None:
    policy = RetryPolicy(attempts=4, backoff_s=10, multiplier=3, max_backoff_s=60)
    assert list(policy.delays()) == [10, 30, 60]
    assert list(RetryPolicy.never().delays()) == []
    with pytest.raises(CloudConfigError, match=r"RetryPolicy\.attempts must be >= 1, got 0"):
        RetryPolicy(attempts=0)
