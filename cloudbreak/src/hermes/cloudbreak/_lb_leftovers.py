"""What a LoadBalancer Service leaves in Compute Engine when its cluster goes first: forwarding rules,
target pools and firewall rules.

GKE labels none of them. Kubernetes' GCE service controller (kubernetes/cloud-provider-gcp,
``gce_loadbalancer_external.go`` and ``gce_loadbalancer_naming.go``) names and describes them so:

* forwarding rule and target pool: the load balancer's name, ``a`` + the Service's UID without
  dashes (32 characters), regional, with the description ``{"kubernetes.io/service-name":"<ns>/<name>"}``;
* firewall rule ``k8s-fw-<load balancer name>``, description
  ``{"kubernetes.io/service-name":"<ns>/<name>", "kubernetes.io/service-ip":"<ip>"}``, and the shared
  health-check rules ``k8s-<cluster id>-node-hc`` / ``k8s-<cluster id>-node-http-hc``, all with
  ``targetTags`` = the cluster's node tag ``gke-<cluster name>-<cluster hash>-node`` (GKE's
  "Automatically created firewall rules" page names its own rules ``gke-[cluster-name]-[cluster-hash]-*``).

So a firewall rule's target tag names its cluster, and ``k8s-fw-<lb>`` ties forwarding rule and target
pool ``<lb>`` to it. A resource is a leftover when that cluster is one of ours (labelled
``managed-by=hermes-cloudbreak``) or no longer exists in the project; a resource whose tags name a
cluster that exists and is not ours, or several clusters, or none, is never listed.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google.cloud import compute_v1, container_v1

from hermes.cloudbreak._errors import GOOGLE_ERRORS, translate_error
from hermes.cloudbreak._names import MANAGED_BY, MANAGED_BY_LABEL
from hermes.cloudbreak._wait import poll_until
from hermes.cloudbreak.exceptions import CloudbreakError, CloudConfigError, OperationFailed, ResourceNotFound

if TYPE_CHECKING:
    from hermes.cloudbreak._leftovers import Leftover
    from hermes.cloudbreak.compute._swarm import ComputeClients

__all__ = ["FIREWALL", "FORWARDING_RULE", "TARGET_POOL", "delete_lb_leftovers", "find_lb_leftovers"]

logger = logging.getLogger("hermes.cloudbreak.leftovers")

FORWARDING_RULE = "forwarding-rule"
TARGET_POOL = "target-pool"
FIREWALL = "firewall"
KINDS = (FORWARDING_RULE, TARGET_POOL, FIREWALL)
#: a GKE node tag: gke-<cluster name>-<8 hex>-node (cluster names: RFC 1035 labels)
_NODE_TAG = re.compile(r"^gke-(?P<cluster>[a-z](?:[-a-z0-9]*[a-z0-9])?)-(?P<hash>[0-9a-f]{8})-node$")
_DONE = compute_v1.Operation.Status.DONE


@dataclass(frozen=True)
class Owner:
    """The GKE cluster a resource belongs to; ``location`` is ``None`` when it no longer exists."""

    cluster: str
    location: str | None
    ours: bool


def owner_of(tags: Iterable[str], clusters: Sequence[container_v1.Cluster]) -> Owner | None:
    """The one cluster whose node tag every one of ``tags`` is, or ``None`` (no tags, several clusters,
    not a node tag, or a name shared by clusters that the tag's hash does not tell apart)."""
    matches = [_NODE_TAG.match(tag) for tag in tags]
    if not matches or not all(matches):
        return None
    named = {(m["cluster"], m["hash"]) for m in matches if m}
    if len(named) != 1:
        return None
    name, digest = named.pop()
    candidates = [c for c in clusters if c.name == name]
    if not candidates:
        return Owner(name, None, ours=False)
    if len(candidates) > 1:  # same name in several locations: GKE's cluster hash begins the cluster id
        candidates = [c for c in candidates if c.id.startswith(digest)]
    if len(candidates) != 1:
        return None
    cluster = candidates[0]
    return Owner(name, cluster.location, ours=cluster.resource_labels.get(MANAGED_BY_LABEL) == MANAGED_BY)


@dataclass(frozen=True)
class _Clients:
    forwarding_rules: compute_v1.ForwardingRulesClient
    target_pools: compute_v1.TargetPoolsClient
    firewalls: compute_v1.FirewallsClient
    region_operations: compute_v1.RegionOperationsClient
    global_operations: compute_v1.GlobalOperationsClient


def _clients(compute: ComputeClients) -> _Clients:
    """The load-balancer clients of ``compute``; a clear error when one is missing."""
    if (
        compute.forwarding_rules is None
        or compute.target_pools is None
        or compute.firewalls is None
        or compute.region_operations is None
        or compute.global_operations is None
    ):
        raise CloudConfigError(
            "ComputeClients lacks the forwarding-rule, target-pool, firewall or operations clients that "
            "load-balancer leftovers need; build it with compute_clients()"
        )
    return _Clients(
        compute.forwarding_rules,
        compute.target_pools,
        compute.firewalls,
        compute.region_operations,
        compute.global_operations,
    )


def _is_service_lb(description: str) -> bool:
    try:
        parsed = json.loads(description or "null")
    except ValueError:
        return False
    return isinstance(parsed, dict) and "kubernetes.io/service-name" in parsed


def _listed(what: str, call: Callable[[], Iterable[Any]]) -> list[Any]:
    try:
        return list(call())
    except GOOGLE_ERRORS as exc:
        raise translate_error(exc, what) from exc


def _regional(compute: ComputeClients, project: str, kind: str) -> list[tuple[str, Any]]:
    """``(region, resource)`` of every forwarding rule or target pool of ``project``."""
    clients = _clients(compute)
    call: Callable[[], Iterable[Any]]
    if kind == FORWARDING_RULE:
        request = compute_v1.AggregatedListForwardingRulesRequest(project=project)
        call, field = lambda: clients.forwarding_rules.aggregated_list(request=request), "forwarding_rules"
    else:
        pools = compute_v1.AggregatedListTargetPoolsRequest(project=project)
        call, field = lambda: clients.target_pools.aggregated_list(request=pools), "target_pools"
    pages = _listed(f"list the {kind}s of project {project}", call)
    return [(scope.rsplit("/", 1)[-1], item) for scope, scoped in pages for item in getattr(scoped, field)]


def find_lb_leftovers(
    compute: ComputeClients,
    project: str,
    clusters: Sequence[container_v1.Cluster],
    make: Callable[..., Leftover],
) -> list[Leftover]:
    """Every forwarding rule, target pool and firewall rule of ``project`` that a cluster of ours, or a
    cluster that no longer exists, left (``make`` builds each :class:`Leftover`)."""
    from hermes.cloudbreak._leftovers import parse_time

    firewalls = _listed(
        f"list the firewall rules of project {project}",
        lambda: _clients(compute).firewalls.list(request=compute_v1.ListFirewallsRequest(project=project)),
    )
    found: list[Leftover] = []
    by_lb: dict[str, Owner] = {}
    for fw in firewalls:
        owner = owner_of(fw.target_tags, clusters)
        if owner is None or (owner.location is not None and not owner.ours):
            continue
        lb_rule = fw.name.startswith("k8s-")
        gke_rule = owner.location is None and fw.name.startswith(f"gke-{owner.cluster}-")
        if not (lb_rule or gke_rule):
            continue
        if fw.name.startswith("k8s-fw-"):
            by_lb[fw.name.removeprefix("k8s-fw-")] = owner
        found.append(
            _leftover(make, FIREWALL, fw.name, project, "global", parse_time(fw.creation_timestamp), owner)
        )
    for kind in (FORWARDING_RULE, TARGET_POOL):
        for region, item in _regional(compute, project, kind):
            owner = by_lb.get(item.name)
            if owner is None or not _is_service_lb(item.description):
                continue
            found.append(
                _leftover(make, kind, item.name, project, region, parse_time(item.creation_timestamp), owner)
            )
    return found


def _leftover(make: Callable[..., Leftover], kind: str, name: str, project: str, location: str, created: Any, owner: Owner) -> Leftover:  # fmt: skip
    return make(
        kind=kind,
        name=name,
        project=project,
        location=location,
        created=created,
        cluster=owner.cluster,
        cluster_location=owner.location,
    )


def delete_request(item: Leftover) -> Any:
    """The request that deletes a forwarding rule, target pool or firewall rule."""
    if item.kind == FORWARDING_RULE:
        return compute_v1.DeleteForwardingRuleRequest(
            project=item.project, region=item.location, forwarding_rule=item.name
        )
    if item.kind == TARGET_POOL:
        return compute_v1.DeleteTargetPoolRequest(
            project=item.project, region=item.location, target_pool=item.name
        )
    return compute_v1.DeleteFirewallRequest(project=item.project, firewall=item.name)


DELETE_METHODS = {
    FORWARDING_RULE: "compute.forwardingRules.delete",
    TARGET_POOL: "compute.targetPools.delete",
    FIREWALL: "compute.firewalls.delete",
}


def _send_delete(compute: ComputeClients, item: Leftover) -> compute_v1.Operation | None:
    """Send the delete; ``None`` when the resource is already gone."""
    clients = _clients(compute)
    try:
        if item.kind == FORWARDING_RULE:
            return clients.forwarding_rules.delete_unary(request=delete_request(item))
        if item.kind == TARGET_POOL:
            return clients.target_pools.delete_unary(request=delete_request(item))
        return clients.firewalls.delete_unary(request=delete_request(item))
    except GOOGLE_ERRORS as exc:
        error = translate_error(exc, f"delete {item.kind} {item.name}")
        if isinstance(error, ResourceNotFound):
            return None
        raise error from exc


def _wait(compute: ComputeClients, item: Leftover, op: compute_v1.Operation, timeout_s: float, interval_s: float) -> None:  # fmt: skip
    """Wait for the region or global operation of a delete (``*Operations.wait`` on the clients' endpoint)."""

    clients = _clients(compute)

    def check() -> compute_v1.Operation | None:
        try:
            if item.kind == FIREWALL:
                current = clients.global_operations.wait(project=item.project, operation=op.name)
            else:
                current = clients.region_operations.wait(
                    project=item.project, region=item.location, operation=op.name
                )
        except GOOGLE_ERRORS as exc:
            raise translate_error(exc, f"delete {item.kind} {item.name}: wait") from exc
        return current if current.status == _DONE else None

    done = poll_until(
        check, timeout_s=timeout_s, interval_s=interval_s, what=f"delete {item.kind} {item.name} ({op.name})"
    )
    from hermes.cloudbreak.compute._swarm import _operation_error

    error = _operation_error(done)
    if error is not None:
        raise OperationFailed(f"delete {item.kind} {item.name} failed: {error}")


def delete_lb_leftovers(
    items: Sequence[Leftover],
    compute: ComputeClients,
    *,
    timeout_s: float,
    poll_interval_s: float,
) -> tuple[list[Leftover], list[str]]:
    """Delete forwarding rules, then target pools (a pool in use by a rule cannot go), then firewall rules.

    Returns:
        ``(deleted, failures)``; one already gone counts as deleted.
    """
    deleted: list[Leftover] = []
    failed: list[str] = []
    deadline = time.monotonic() + timeout_s
    for kind in KINDS:
        batch = [x for x in items if x.kind == kind]
        pending: list[tuple[Leftover, compute_v1.Operation]] = []
        for item in batch:  # every delete of a kind first, then wait for each
            logger.info("deleting %s %s (%s)", kind, item.name, item.location)
            try:
                op = _send_delete(compute, item)
            except CloudbreakError as exc:
                failed.append(f"{kind} {item.name} in {item.project}/{item.location} ({exc})")
                continue
            if op is None:
                deleted.append(item)
            else:
                pending.append((item, op))
        for item, op in pending:
            try:
                _wait(compute, item, op, max(deadline - time.monotonic(), 0.01), poll_interval_s)
            except CloudbreakError as exc:
                failed.append(f"{kind} {item.name} in {item.project}/{item.location} ({exc})")
                continue
            deleted.append(item)
    return deleted, failed


def owned_by(item: Leftover, clusters: Mapping[tuple[str, str], Any]) -> bool:
    """Whether ``item`` belongs to one of ``clusters`` (keyed by ``(location, name)``)."""
    return item.cluster_location is not None and (item.cluster_location, item.cluster or "") in clusters
