"""Finding and deleting what a crashed run left behind (``find_leftovers``, ``hermes cloud gc``)."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from cloudbreak_fakes.clock import compute_time, gke_time, utc_now
from cloudbreak_fakes.compute import FakeCompute
from cloudbreak_fakes.gke import FakeGKE
from google.cloud import compute_v1, container_v1
from typer.testing import CliRunner

from hermes.cloudbreak import CloudConfigError, ClusterManager, Leftover, delete_leftovers, find_leftovers
from hermes.cloudbreak._cli import app
from hermes.cloudbreak._leftovers import parse_duration

OURS = {"managed-by": "hermes-cloudbreak"}
# Ages are relative to the clock when the module is imported: find_leftovers gets ``now=NOW``, and
# `hermes cloud gc` reads the clock itself (minutes later at most, far from every threshold below).
NOW = utc_now()
HOUR = datetime.timedelta(hours=1)
runner = CliRunner()


@pytest.fixture
def crashed_run(fake_gke: FakeGKE, fake_compute: FakeCompute) -> None:
    """A project after a crash: hermes' cluster and VMs, plus things hermes must never touch."""
    fake_gke.add_cluster(
        "hermes-p1",
        "us-central1-a",
        "crashed",
        labels={**OURS, "job": "o3"},
        create_time=gke_time(NOW, 4 * HOUR),
    )
    fake_gke.add_cluster(
        "hermes-p1",
        "us-central1",
        "fresh",
        labels=OURS,
        create_time=gke_time(NOW, HOUR / 2).replace("+00:00", "Z"),
    )
    fake_gke.add_cluster(
        "hermes-p1", "us-central1-a", "someone-elses", labels={}, create_time=gke_time(NOW, 300 * 24 * HOUR)
    )
    fake_gke.add_cluster(
        "hermes-p1",
        "us-central1-a",
        "terraformed",
        labels={"managed-by": "terraform"},
        create_time=gke_time(NOW, 300 * 24 * HOUR),
    )
    fake_gke.add_cluster(
        "p2", "us-central1-a", "other-project", labels=OURS, create_time=gke_time(NOW, 300 * 24 * HOUR)
    )
    fake_compute.add_instance(
        "hermes-p1",
        "us-central1-a",
        "w-0",
        labels={**OURS, "hermes-swarm": "w"},
        creation_timestamp=compute_time(NOW, 3 * HOUR),
    )
    fake_compute.add_instance(
        "hermes-p1", "europe-west4-b", "w-eu", labels=OURS, creation_timestamp=compute_time(NOW, 3 * HOUR)
    )
    fake_compute.add_instance(
        "hermes-p1",
        "us-central1-a",
        "bastion",
        labels={},
        creation_timestamp=compute_time(NOW, 700 * 24 * HOUR),
    )


def names(leftovers: list[Leftover]) -> list[str]:
    return [f"{x.kind}/{x.location}/{x.name}" for x in leftovers]


def test_find_leftovers_lists_only_what_carries_hermes_label(
    crashed_run: None, gke: ClusterManager, compute: Any
) -> None:
    found = find_leftovers(project="hermes-p1", gke=gke, compute=compute, now=NOW)
    assert names(found) == [
        "gke-cluster/us-central1/fresh",
        "gke-cluster/us-central1-a/crashed",
        "vm/europe-west4-b/w-eu",
        "vm/us-central1-a/w-0",
    ]
    crashed = found[1]
    assert crashed.to_dict(NOW) == {
        "kind": "gke-cluster",
        "name": "crashed",
        "project": "hermes-p1",
        "location": "us-central1-a",
        "created": gke_time(NOW, 4 * HOUR),
        "age_s": 4 * 3600,
        "labels": {"managed-by": "hermes-cloudbreak", "job": "o3"},
    }
    assert found[3].age_s(NOW) == 3 * 3600  # reported at -08:00, aged in UTC


def test_find_leftovers_filters_by_age_and_location(
    crashed_run: None, gke: ClusterManager, compute: Any
) -> None:
    old = find_leftovers(project="hermes-p1", gke=gke, compute=compute, older_than_s=2 * 3600, now=NOW)
    assert names(old) == [
        "gke-cluster/us-central1-a/crashed",
        "vm/europe-west4-b/w-eu",
        "vm/us-central1-a/w-0",
    ]
    zone = find_leftovers(project="hermes-p1", locations=["us-central1-a"], gke=gke, compute=compute, now=NOW)
    assert names(zone) == ["gke-cluster/us-central1-a/crashed", "vm/us-central1-a/w-0"]
    region = find_leftovers(project="hermes-p1", locations=["europe-west4"], compute=compute, now=NOW)
    assert names(region) == ["vm/europe-west4-b/w-eu"]


def test_delete_leftovers_deletes_them_and_never_touches_the_unlabelled(
    crashed_run: None, gke: ClusterManager, compute: Any, fake_gke: FakeGKE, fake_compute: FakeCompute
) -> None:
    found = find_leftovers(project="hermes-p1", gke=gke, compute=compute, older_than_s=3600, now=NOW)
    deleted = delete_leftovers(found, gke=gke, compute=compute, poll_interval_s=0.01, timeout_s=10)
    assert names(deleted) == [
        "vm/europe-west4-b/w-eu",
        "vm/us-central1-a/w-0",
        "gke-cluster/us-central1-a/crashed",
    ]
    assert sorted(fake_gke.clusters) == [
        "projects/hermes-p1/locations/us-central1-a/clusters/someone-elses",
        "projects/hermes-p1/locations/us-central1-a/clusters/terraformed",
        "projects/hermes-p1/locations/us-central1/clusters/fresh",
        "projects/p2/locations/us-central1-a/clusters/other-project",
    ]
    assert sorted(fake_compute.instances) == ["bastion"]
    deleted_clusters = [r.name for m, r, _ in fake_gke.requests if m == "DeleteCluster"]
    assert deleted_clusters == ["projects/hermes-p1/locations/us-central1-a/clusters/crashed"]


def test_delete_leftovers_needs_the_client_of_each_kind(
    crashed_run: None, gke: ClusterManager, compute: Any
) -> None:
    found = find_leftovers(project="hermes-p1", gke=gke, compute=compute)
    with pytest.raises(CloudConfigError, match="delete_leftovers got VMs but no compute=ComputeClients"):
        delete_leftovers(found, gke=gke)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("0.5h", 1800)],
)
def test_parse_duration_reads_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2", "2 hours", "h", "-1h", "2x"])
def test_parse_duration_rejects_what_it_cannot_read(text: str) -> None:
    with pytest.raises(CloudConfigError, match=f"duration {text!r} is not valid; expected e.g. '90s'"):
        parse_duration(text)


# ------------------------------------------------------------------------------ hermes cloud gc
# what `gc` reads besides instances: the load balancers' leftovers (all read with GET, none deleted)
LB_READS = [
    "GET /compute/v1/projects/hermes-p1/global/firewalls",
    "GET /compute/v1/projects/hermes-p1/aggregated/forwardingRules",
    "GET /compute/v1/projects/hermes-p1/aggregated/targetPools",
]


def compute_reads(fake: FakeCompute) -> list[str]:
    return [f"{method} {path}" for method, path, _ in fake.requests]


def gc_cli(fake_gke: FakeGKE, fake_compute: FakeCompute, *args: str) -> Any:
    return runner.invoke(
        app,
        [
            "--gke-endpoint",
            f"http://127.0.0.1:{fake_gke.port}",
            "--compute-endpoint",
            fake_compute.endpoint,
            "--anonymous",
            "gc",
            "--project",
            "hermes-p1",
            *args,
        ],
        catch_exceptions=False,
    )


def test_gc_lists_without_deleting_unless_told_yes(
    crashed_run: None, fake_gke: FakeGKE, fake_compute: FakeCompute
) -> None:
    result = gc_cli(fake_gke, fake_compute, "--location", "us-central1-a")
    assert result.exit_code == 0, result.output
    assert [(d["kind"], d["name"]) for d in map(json.loads, result.stdout.splitlines())] == [
        ("gke-cluster", "crashed"),
        ("vm", "w-0"),
    ]
    assert "2 leftover(s) found; pass --yes to delete them" in result.stderr
    assert fake_gke.methods() == ["ListClusters"]
    assert compute_reads(fake_compute) == [
        "GET /compute/v1/projects/hermes-p1/zones/us-central1-a/instances",
        *LB_READS,
    ]
    assert len(fake_gke.clusters) == 5 and len(fake_compute.instances) == 3


def test_gc_yes_deletes_the_old_labelled_leftovers_only(
    crashed_run: None, fake_gke: FakeGKE, fake_compute: FakeCompute
) -> None:
    # older than the oldest labelled leftover, whatever today's date: nothing qualifies
    oldest = datetime.datetime(2026, 11, 21, 8, tzinfo=datetime.UTC)
    days = (datetime.datetime.now(datetime.UTC) - oldest).days + 2
    result = gc_cli(fake_gke, fake_compute, "--older-than", f"{days}d", "--yes", "--poll-interval-s", "0.01")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == '{"deleted": []}'

    result = gc_cli(fake_gke, fake_compute, "--older-than", "5m", "--yes", "--poll-interval-s", "0.01")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert json.loads(lines[-1]) == {
        "deleted": [
            "vm/europe-west4-b/w-eu",
            "vm/us-central1-a/w-0",
            "gke-cluster/us-central1/fresh",
            "gke-cluster/us-central1-a/crashed",
        ]
    }
    assert sorted(k.rsplit("/", 1)[-1] for k in fake_gke.clusters) == [
        "other-project",
        "someone-elses",
        "terraformed",
    ]
    assert sorted(fake_compute.instances) == ["bastion"]


def test_gc_dry_run_prints_the_exact_delete_requests_and_sends_none(
    crashed_run: None, fake_gke: FakeGKE, fake_compute: FakeCompute
) -> None:
    result = gc_cli(fake_gke, fake_compute, "--dry-run")
    assert result.exit_code == 0, result.output
    requests = json.loads(result.stdout)["requests"]
    assert [r["method"] for r in requests] == [
        "google.container.v1.ClusterManager/DeleteCluster",
        "google.container.v1.ClusterManager/DeleteCluster",
        "compute.instances.delete",
        "compute.instances.delete",
    ]
    assert container_v1.DeleteClusterRequest.from_json(json.dumps(requests[1]["request"])) == (
        container_v1.DeleteClusterRequest(name="projects/hermes-p1/locations/us-central1-a/clusters/crashed")
    )
    assert compute_v1.DeleteInstanceRequest.from_json(json.dumps(requests[3]["request"])) == (
        compute_v1.DeleteInstanceRequest(project="hermes-p1", zone="us-central1-a", instance="w-0")
    )
    assert fake_gke.methods() == ["ListClusters"]  # only reads
    assert compute_reads(fake_compute) == [
        "GET /compute/v1/projects/hermes-p1/aggregated/instances",
        *LB_READS,
    ]
    assert len(fake_gke.clusters) == 5 and len(fake_compute.instances) == 3


def test_gc_rejects_a_bad_age(fake_gke: FakeGKE, fake_compute: FakeCompute) -> None:
    result = gc_cli(fake_gke, fake_compute, "--older-than", "2 hours")
    assert result.exit_code == 1
    assert (
        result.stderr
        == "error: duration '2 hours' is not valid; expected e.g. '90s', '30m', '2h', '1d' or '1h30m'\n"
    )
    assert fake_gke.requests == []


def test_node_pools_added_to_someone_elses_cluster_are_found_and_deleted(
    fake_gke: FakeGKE, gke: ClusterManager
) -> None:
    from google.cloud import container_v1

    from hermes.cloudbreak import NodePoolSpec

    theirs = fake_gke.add_cluster(
        "hermes-p1", "us-central1-a", "shared", labels={}, create_time=gke_time(NOW, 300 * 24 * HOUR)
    )
    theirs.node_pools.append(container_v1.NodePool(name="default-pool"))
    ours = NodePoolSpec(name="t4", accelerator_type="nvidia-tesla-t4", accelerator_count=1).to_proto()
    theirs.node_pools.append(ours)  # what ClusterManager.node_pool(...) created, then a crash
    found = find_leftovers(project="hermes-p1", locations=["us-central1-a"], gke=gke, now=NOW)
    assert names(found) == ["gke-node-pool/us-central1-a/shared/t4"]
    assert found[0].delete_method == "google.container.v1.ClusterManager/DeleteNodePool"
    assert (
        found[0].delete_request().name
        == "projects/hermes-p1/locations/us-central1-a/clusters/shared/nodePools/t4"
    )
    assert delete_leftovers(found, gke=gke, poll_interval_s=0.01) == found
    assert [
        p.name
        for p in fake_gke.clusters["projects/hermes-p1/locations/us-central1-a/clusters/shared"].node_pools
    ] == ["default-pool"]
