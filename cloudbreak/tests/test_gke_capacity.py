"""Google's real capacity answers: quota texts, typed stockout conditions, RUNNING_WITH_ERROR, failover, zones."""

from __future__ import annotations

import logging

import pytest
from cloudbreak_fakes.gke import FakeGKE
from google.api_core import exceptions as gexc
from google.cloud import container_v1

from hermes.cloudbreak import CapacityError, ClusterManager, ClusterSpec, NodePoolSpec, RetryPolicy
from hermes.cloudbreak._errors import (
    capacity_from_conditions,
    capacity_kind,
    quota_resource,
    translate_google_error,
)
from hermes.cloudbreak.exceptions import CloudApiError, CloudUnavailable

T4 = NodePoolSpec(name="gpus", accelerator_type="nvidia-tesla-t4", accelerator_count=1, node_count=2)
SPEC = ClusterSpec(name="triton", node_pools=(T4,))
ONCE = RetryPolicy(attempts=1, backoff_s=0.0)

# Texts as Google wrote them in public reports (see hermes.cloudbreak._errors for each source).
GKE_QUOTA = (
    'Insufficient regional quota to satisfy request: resource "PREEMPTIBLE_NVIDIA_V100_GPUS": '
    "request requires '8.0' and is short '8.0'. project has a quota of '0.0' with '0.0' available."
)
COMPUTE_QUOTA = "Quota 'GPUS_ALL_REGIONS' exceeded. Limit: 0.0 globally."
IGM_STOCKOUT = (
    "Google Compute Engine: Not all instances running in IGM after 35m4.033429035s. Expected 5, running 2, "
    "transitioning 3. Current errors: [GCE_STOCKOUT]: Instance 'gke-x' creation failed: The zone "
    "'projects/p/zones/us-central1-c' does not have enough resources available to fulfill the request. "
    "'(resource type:compute)'."
)
POOL_EXHAUSTED = (
    "Instance 'control-plane' creation failed: The zone 'projects/p/zones/us-central1-a' does not have enough "
    "resources available to fulfill the request.  'NULL:0/NULL:0/NULL:0 (state:STOCKOUT, sub-state:STOCKOUT, "
    "resource type:compute)'."
)
RATE_LIMIT = (
    "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute' of service "
    "'container.googleapis.com'"
)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (GKE_QUOTA, "quota"),
        (COMPUTE_QUOTA, "quota"),
        (IGM_STOCKOUT, "stockout"),
        (POOL_EXHAUSTED, "stockout"),
        ("Permission 'container.clusters.create' denied on resource", None),
        (RATE_LIMIT, None),
    ],
)
def test_capacity_kind_reads_the_real_texts(text: str, kind: str | None) -> None:
    assert capacity_kind(text) == kind


def test_quota_resource_is_named() -> None:
    assert quota_resource(GKE_QUOTA) == "PREEMPTIBLE_NVIDIA_V100_GPUS"
    assert quota_resource(COMPUTE_QUOTA) == "GPUS_ALL_REGIONS"


def test_403_quota_is_capacity_but_403_iam_and_rate_limits_are_not() -> None:
    quota = translate_google_error(gexc.PermissionDenied(GKE_QUOTA), "create cluster c")
    assert isinstance(quota, CapacityError) and (quota.kind, quota.code) == ("quota", 403)
    iam = translate_google_error(gexc.PermissionDenied("Required 'container.clusters.create'"), "create")
    assert type(iam) is CloudApiError and iam.code == 403
    rate = translate_google_error(gexc.TooManyRequests(RATE_LIMIT), "get operation")
    assert isinstance(rate, CloudUnavailable)
    exhausted = translate_google_error(gexc.ResourceExhausted("RESOURCE_EXHAUSTED"), "create")
    assert isinstance(exhausted, CapacityError) and exhausted.kind == "quota"
    assert isinstance(translate_google_error(gexc.ServiceUnavailable("x"), "get"), CloudUnavailable)


def test_typed_conditions_win_over_text() -> None:
    stock = container_v1.StatusCondition(
        code=container_v1.StatusCondition.Code.GCE_STOCKOUT, message="no VMs"
    )
    quota = container_v1.StatusCondition(
        code=container_v1.StatusCondition.Code.GCE_QUOTA_EXCEEDED, message="q"
    )
    other = container_v1.StatusCondition(code=container_v1.StatusCondition.Code.CA_EXPIRING, message="ca")
    assert capacity_from_conditions([other, stock]) == ("stockout", "no VMs")
    assert capacity_from_conditions([quota]) == ("quota", "q")
    assert capacity_from_conditions([other]) is None


def test_a_stockout_reported_by_conditions_ends_the_wait_after_the_grace(
    gke: ClusterManager, fake_gke: FakeGKE, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hermes.cloudbreak")
    fake_gke.create_polls = 10**6  # GKE would keep retrying for 35 minutes
    fake_gke.stockouts = 1
    patient = gke.at("us-central1-a")
    patient.retry, patient.stockout_grace_s = ONCE, 0.05
    patient.timeout_s = 30.0
    with pytest.raises(
        CapacityError, match=r"GKE reported stockout for .*does not have enough resources"
    ) as info:
        patient.create_cluster(SPEC, timeout_s=30.0)
    assert info.value.kind == "stockout"
    assert "GKE reports stockout and keeps retrying" in caplog.text
    methods = fake_gke.methods()
    assert methods.index("CancelOperation") < methods.index("DeleteCluster")  # cancelled, then deleted
    assert fake_gke.clusters == {}


def test_a_timeout_during_a_stockout_keeps_the_cause(gke: ClusterManager, fake_gke: FakeGKE) -> None:
    fake_gke.polls_per_operation = 10**6
    fake_gke.stockouts = 1
    gke.retry, gke.stockout_grace_s = ONCE, None
    with pytest.raises(
        CapacityError, match=r"did not finish within 0.2 s.*GKE was still retrying: Instance creation"
    ):
        gke.wait_operation(
            gke.client.create_cluster(request=gke.create_cluster_request(SPEC)), what="create", timeout_s=0.2
        )


def test_the_final_igm_error_of_an_operation_is_a_stockout(gke: ClusterManager, fake_gke: FakeGKE) -> None:
    fake_gke.stockouts = 1
    gke.retry = ONCE
    with pytest.raises(CapacityError, match=r"Not all instances running in IGM.*GCE_STOCKOUT") as info:
        gke.create_cluster(SPEC)
    assert info.value.kind == "stockout"
    assert gke.list_clusters() == []


def test_running_with_error_for_lack_of_capacity_is_a_capacity_error(
    gke: ClusterManager, fake_gke: FakeGKE
) -> None:
    fake_gke.running_with_error = 1  # the first attempt comes up short, the second is whole
    cluster = gke.create_cluster(SPEC)
    assert cluster.node_pools[0].status == container_v1.NodePool.Status.RUNNING
    assert fake_gke.methods().count("CreateCluster") == 2 and fake_gke.methods().count("DeleteCluster") == 1


def test_failover_moves_to_the_next_location_and_deletes_the_failed_one(
    gke: ClusterManager, fake_gke: FakeGKE
) -> None:
    fake_gke.stockout_locations = {"us-central1-a", "us-central1-b"}
    gke.retry = ONCE
    with gke.cluster(SPEC, failover=("us-central1-b", "us-east1-c")) as cluster:
        assert cluster.location == "us-east1-c"
        assert [c.location for c in fake_gke.clusters.values()] == ["us-east1-c"]
        assert cluster.node_locations == ["us-east1-c"]
    assert fake_gke.clusters == {}
    creates = [r.parent for m, r, _ in fake_gke.requests if m == "CreateCluster"]
    assert creates == [
        f"projects/hermes-p1/locations/{loc}" for loc in ("us-central1-a", "us-central1-b", "us-east1-c")
    ]


def test_failover_that_finds_nothing_names_every_location(gke: ClusterManager, fake_gke: FakeGKE) -> None:
    fake_gke.stockout_locations = {"us-central1-a", "us-west1-b"}
    gke.retry = ONCE
    with (
        pytest.raises(CapacityError, match=r"locations tried: us-central1-a, us-west1-b") as info,
        gke.cluster(SPEC, failover=("us-west1-b",)),
    ):
        pass
    assert info.value.locations_tried == ("us-central1-a", "us-west1-b")
    assert fake_gke.clusters == {}


def test_regional_node_count_is_per_zone_and_totals_are_explicit(gke: ClusterManager) -> None:
    assert SPEC.gpu_total("us-central1-a") == 2
    assert SPEC.gpu_total("us-central1") == 6  # three zones x 2 nodes x 1 GPU
    pinned = ClusterSpec(name="r", node_pools=(T4,), node_locations=("us-central1-a", "us-central1-b"))
    assert pinned.gpu_total("us-central1") == 4
    assert pinned.to_proto().locations == ["us-central1-a", "us-central1-b"]
    assert SPEC.capacity_summary("us-central1") == [
        "gpus: 2 node(s)/zone x 3 zone(s) x 1 nvidia-tesla-t4 = 6 GPUs"
    ]
    regional = gke.at("us-central1")
    with regional.cluster(SPEC) as cluster:
        assert cluster.node_locations == ["us-central1-a", "us-central1-b", "us-central1-c"]
        assert cluster.gpu_total() == 6


def test_node_pools_carry_the_managed_by_label_and_their_zones() -> None:
    pool = NodePoolSpec(name="g", locations=("us-central1-f",)).to_proto()
    assert dict(pool.config.resource_labels) == {"managed-by": "hermes-cloudbreak"}
    assert list(pool.locations) == ["us-central1-f"]


def test_workload_identity_sets_the_project_pool() -> None:
    from hermes.cloudbreak.gke import create_cluster_request

    spec = ClusterSpec(name="wi", node_pools=(T4,), workload_identity=True)
    request = create_cluster_request("gw-project", "us-central1", spec)
    assert request.cluster.workload_identity_config.workload_pool == "gw-project.svc.id.goog"
