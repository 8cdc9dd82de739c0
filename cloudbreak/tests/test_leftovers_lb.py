"""What LoadBalancer Services leave in Compute Engine (forwarding rules, target pools, firewall rules),
found through the cluster their firewall rule targets, listed and deleted by `find_leftovers` and `gc`."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from cloudbreak_fakes.clock import compute_time, gke_time, utc_now
from cloudbreak_fakes.compute import FakeCompute
from cloudbreak_fakes.gke import FakeGKE
from google.cloud import compute_v1
from typer.testing import CliRunner

from hermes.cloudbreak import CloudConfigError, ClusterManager, Leftover, delete_leftovers, find_leftovers
from hermes.cloudbreak._cli import app
from hermes.cloudbreak.compute import ComputeClients

OURS = {"managed-by": "hermes-cloudbreak"}
NOW = utc_now()
HOUR = datetime.timedelta(hours=1)
UID = {  # Service UIDs (the load balancer is "a" + the UID without dashes, 32 characters)
    "crashed": "6f1c2d3e-4b5a-11ef-9a8b-42010a800002",
    "fresh": "0a1b2c3d-4e5f-11ef-8a9b-42010a800003",
    "theirs": "7e6d5c4b-3a29-11ef-8a7b-42010a800004",
    "gone": "1b2c3d4e-5f60-11ef-9b8c-42010a800005",
}


def lb(service: str) -> str:
    return ("a" + UID[service].replace("-", ""))[:32]


@pytest.fixture
def services_left(fake_gke: FakeGKE, fake_compute: FakeCompute) -> None:
    """Clusters (ours, someone else's, one deleted) whose LoadBalancer Services left Compute resources."""
    crashed = fake_gke.add_cluster(
        "hermes-p1", "us-central1-a", "crashed", labels=OURS, create_time=gke_time(NOW, 4 * HOUR)
    )
    crashed.id = "1a2b3c4d5e6f47a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2"
    fresh = fake_gke.add_cluster(
        "hermes-p1", "us-central1", "fresh", labels=OURS, create_time=gke_time(NOW, HOUR / 2)
    )
    fresh.id = "9d8c7b6a5f4e43d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8"
    theirs = fake_gke.add_cluster(
        "hermes-p1", "us-central1-a", "prod", labels={}, create_time=gke_time(NOW, 300 * 24 * HOUR)
    )
    theirs.id = "5c4b3a29f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1"
    old, new = compute_time(NOW, 4 * HOUR), compute_time(NOW, HOUR / 4)
    for service, region, tag, created in [
        ("crashed", "us-central1", "gke-crashed-1a2b3c4d-node", old),
        ("fresh", "us-central1", "gke-fresh-9d8c7b6a-node", new),
        ("theirs", "us-central1", "gke-prod-5c4b3a29-node", old),
        ("gone", "europe-west4", "gke-gone-0badc0de-node", compute_time(NOW, 3 * HOUR)),
    ]:
        fake_compute.add_service_load_balancer(
            "hermes-p1", region, f"default/{service}-0", uid=UID[service], node_tag=tag, created=created
        )
    # GKE's shared health-check rule of our cluster, and the cluster rule GKE left of the deleted one
    fake_compute.add_firewall(
        "hermes-p1",
        "k8s-0c1d2e3f4a5b6c7d-node-http-hc",
        target_tags=["gke-crashed-1a2b3c4d-node"],
        created=old,
    )
    fake_compute.add_firewall(
        "hermes-p1", "gke-gone-0badc0de-all", target_tags=["gke-gone-0badc0de-node"], created=old
    )
    # never ours: no target tags, tags of two clusters, a cluster rule of someone else's live cluster
    fake_compute.add_firewall("hermes-p1", "default-allow-ssh", target_tags=[], created=old)
    fake_compute.add_firewall(
        "hermes-p1",
        "k8s-fw-shared",
        target_tags=["gke-crashed-1a2b3c4d-node", "gke-prod-5c4b3a29-node"],
        created=old,
    )
    fake_compute.add_firewall(
        "hermes-p1", "gke-prod-5c4b3a29-all", target_tags=["gke-prod-5c4b3a29-node"], created=old
    )


def names(leftovers: list[Leftover]) -> list[str]:
    return [f"{x.kind}/{x.location}/{x.name}" for x in leftovers]


def test_find_leftovers_lists_what_services_of_our_and_deleted_clusters_left(
    services_left: None, gke: ClusterManager, compute: Any
) -> None:
    found = find_leftovers(project="hermes-p1", gke=gke, compute=compute, now=NOW)
    assert names(found) == [
        "gke-cluster/us-central1/fresh",
        "gke-cluster/us-central1-a/crashed",
        f"forwarding-rule/europe-west4/{lb('gone')}",
        f"forwarding-rule/us-central1/{lb('fresh')}",  # a0a1...
        f"forwarding-rule/us-central1/{lb('crashed')}",  # a6f1...
        f"target-pool/europe-west4/{lb('gone')}",
        f"target-pool/us-central1/{lb('fresh')}",
        f"target-pool/us-central1/{lb('crashed')}",
        "firewall/global/gke-gone-0badc0de-all",
        "firewall/global/k8s-0c1d2e3f4a5b6c7d-node-http-hc",
        f"firewall/global/k8s-fw-{lb('fresh')}",
        f"firewall/global/k8s-fw-{lb('gone')}",
        f"firewall/global/k8s-fw-{lb('crashed')}",
    ]
    by_name = {(x.kind, x.name): x for x in found}
    assert by_name[("forwarding-rule", lb("crashed"))].to_dict(NOW) == {
        "kind": "forwarding-rule",
        "name": lb("crashed"),
        "project": "hermes-p1",
        "location": "us-central1",
        "created": datetime.datetime.fromisoformat(
            compute_time(NOW, 4 * HOUR)
        ).isoformat(),  # its -08:00 kept
        "age_s": 4 * 3600,
        "labels": {},
        "cluster": {"name": "crashed", "location": "us-central1-a"},
    }
    assert by_name[("firewall", f"k8s-fw-{lb('gone')}")].to_dict(NOW)["cluster"] == {
        "name": "gone",
        "location": None,
    }
    assert "cluster" not in found[0].to_dict(NOW)  # clusters and VMs keep their shape


def test_a_load_balancer_goes_with_its_cluster_and_an_orphan_by_its_own_age_and_place(
    services_left: None, gke: ClusterManager, compute: Any
) -> None:
    old = find_leftovers(project="hermes-p1", gke=gke, compute=compute, older_than_s=3600, now=NOW)
    assert [
        x for x in names(old) if "fresh" in x or lb("fresh") in x
    ] == []  # fresh: too young, so its LB too
    assert f"forwarding-rule/europe-west4/{lb('gone')}" in names(old)
    zone = find_leftovers(project="hermes-p1", locations=["us-central1-a"], gke=gke, compute=compute, now=NOW)
    assert names(zone) == [
        "gke-cluster/us-central1-a/crashed",
        f"forwarding-rule/us-central1/{lb('crashed')}",  # regional, but it goes with its cluster
        f"target-pool/us-central1/{lb('crashed')}",
        "firewall/global/k8s-0c1d2e3f4a5b6c7d-node-http-hc",
        f"firewall/global/k8s-fw-{lb('crashed')}",
    ]
    europe = find_leftovers(
        project="hermes-p1", locations=["europe-west4"], gke=gke, compute=compute, now=NOW
    )
    assert names(europe) == [
        f"forwarding-rule/europe-west4/{lb('gone')}",
        f"target-pool/europe-west4/{lb('gone')}",
    ]


def test_delete_leftovers_deletes_rules_then_pools_then_firewalls_after_the_cluster(
    services_left: None, gke: ClusterManager, compute: Any, fake_gke: FakeGKE, fake_compute: FakeCompute
) -> None:
    found = find_leftovers(project="hermes-p1", gke=gke, compute=compute, older_than_s=3600, now=NOW)
    deleted = delete_leftovers(found, gke=gke, compute=compute, poll_interval_s=0.01, timeout_s=10)
    assert sorted(names(deleted)) == sorted(names(found))
    assert sorted(k.rsplit("/", 1)[-1] for k in fake_gke.clusters) == ["fresh", "prod"]
    assert sorted(fake_compute.forwarding_rules) == sorted([lb("fresh"), lb("theirs")])
    assert sorted(fake_compute.target_pools) == sorted([lb("fresh"), lb("theirs")])
    assert sorted(fake_compute.firewalls) == sorted(
        [
            "default-allow-ssh",
            "gke-prod-5c4b3a29-all",
            "k8s-fw-shared",
            f"k8s-fw-{lb('fresh')}",
            f"k8s-fw-{lb('theirs')}",
        ]
    )
    deletes = [path.split("/")[-2] for method, path, _ in fake_compute.requests if method == "DELETE"]
    # a target pool cannot go while a forwarding rule uses it (the fake refuses like Compute does)
    assert deletes == ["forwardingRules"] * 2 + ["targetPools"] * 2 + ["firewalls"] * 4
    assert [m for m, _, _ in fake_gke.requests if m == "DeleteCluster"] == ["DeleteCluster"]


def test_one_already_gone_counts_as_deleted(
    services_left: None, gke: ClusterManager, compute: Any, fake_compute: FakeCompute
) -> None:
    found = find_leftovers(project="hermes-p1", locations=["europe-west4"], gke=gke, compute=compute, now=NOW)
    fake_compute.forwarding_rules.pop(lb("gone"))  # deleted by hand in the meantime
    assert delete_leftovers(found, compute=compute, poll_interval_s=0.01) == found
    assert lb("gone") not in fake_compute.target_pools


def test_delete_requests_are_the_compute_api_ones() -> None:
    rule = Leftover(kind="forwarding-rule", name="a1", project="p-1", location="us-central1", created=None)
    assert rule.delete_method == "compute.forwardingRules.delete"
    assert rule.delete_request() == compute_v1.DeleteForwardingRuleRequest(
        project="p-1", region="us-central1", forwarding_rule="a1"
    )
    pool = Leftover(kind="target-pool", name="a1", project="p-1", location="us-central1", created=None)
    assert pool.delete_request() == compute_v1.DeleteTargetPoolRequest(
        project="p-1", region="us-central1", target_pool="a1"
    )
    wall = Leftover(kind="firewall", name="k8s-fw-a1", project="p-1", location="global", created=None)
    assert (wall.delete_method, wall.delete_request()) == (
        "compute.firewalls.delete",
        compute_v1.DeleteFirewallRequest(project="p-1", firewall="k8s-fw-a1"),
    )
    with pytest.raises(
        CloudConfigError, match=r"Leftover.kind must be one of \['gke-cluster', .*'firewall'\], got 'lb'"
    ):
        Leftover(kind="lb", name="a1", project="p-1", location="global", created=None)


def test_compute_clients_without_the_network_ones_cannot_delete_them(compute: Any) -> None:
    wall = Leftover(kind="firewall", name="k8s-fw-a1", project="p-1", location="global", created=None)
    bare = ComputeClients(compute.instances, compute.operations)
    assert not bare.has_network and compute.has_network
    with pytest.raises(
        CloudConfigError, match="got forwarding rules, target pools or firewall rules but no compute="
    ):
        delete_leftovers([wall], compute=bare)


def test_gc_dry_run_prints_the_load_balancer_deletes(
    services_left: None, fake_gke: FakeGKE, fake_compute: FakeCompute
) -> None:
    result = CliRunner().invoke(
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
            "--location",
            "europe-west4",
            "--dry-run",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    requests = json.loads(result.stdout)["requests"]
    assert requests == [
        {
            "method": "compute.forwardingRules.delete",
            "request": {"project": "hermes-p1", "region": "europe-west4", "forwardingRule": lb("gone")},
        },
        {
            "method": "compute.targetPools.delete",
            "request": {"project": "hermes-p1", "region": "europe-west4", "targetPool": lb("gone")},
        },
    ]
    assert all(method == "GET" for method, _, _ in fake_compute.requests)
