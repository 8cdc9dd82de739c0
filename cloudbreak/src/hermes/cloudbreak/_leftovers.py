"""Find and delete what a crashed run left behind: GKE clusters, node pools and VMs labelled
``managed-by=hermes-cloudbreak``, and the load balancers' forwarding rules, target pools and firewall
rules their clusters left.

Context managers delete what they create, but a ``kill -9``, a lost laptop or a ``keep=True``
leaves resources running (and billing). :func:`find_leftovers` lists every GKE cluster and
Compute Engine VM in a project that carries hermes' label, optionally only those older than
some age; :func:`delete_leftovers` deletes them. A cluster or VM without the label is never
listed, so never deleted. GKE labels no load-balancer resource: those are found through the
cluster their firewall rule targets (see :mod:`hermes.cloudbreak._lb_leftovers`): one of ours,
or one that no longer exists. ``hermes cloud gc`` is the command-line face of both.
"""

from __future__ import annotations

import datetime
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from google.cloud import compute_v1, container_v1

from hermes.cloudbreak import _lb_leftovers as lb
from hermes.cloudbreak._errors import GOOGLE_ERRORS, translate_error
from hermes.cloudbreak._names import MANAGED_BY, MANAGED_BY_LABEL
from hermes.cloudbreak._validation import check_location, check_project
from hermes.cloudbreak.exceptions import CloudbreakError, CloudConfigError, ResourceNotFound, TeardownError

if TYPE_CHECKING:
    from hermes.cloudbreak.compute._swarm import ComputeClients
    from hermes.cloudbreak.gke._manager import ClusterManager

__all__ = ["Leftover", "delete_leftovers", "find_leftovers", "parse_duration"]

logger = logging.getLogger("hermes.cloudbreak.leftovers")

CLUSTER = "gke-cluster"
NODE_POOL = "gke-node-pool"  # a pool hermes added to a cluster that is not its own; name "<cluster>/<pool>"
VM = "vm"
_ORDER = {CLUSTER: 0, NODE_POOL: 1, VM: 2, lb.FORWARDING_RULE: 3, lb.TARGET_POOL: 4, lb.FIREWALL: 5}
_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")  # us-central1-a; a region has no final letter
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``"90s"``, ``"30m"``, ``"2h"``, ``"1d"`` or ``"1h30m"``.

    Raises:
        CloudConfigError: ``text`` is not one or more ``<number><s|m|h|d>`` parts.
    """
    compact = text.strip().lower()
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise CloudConfigError(
            f"duration {text!r} is not valid; expected e.g. '90s', '30m', '2h', '1d' or '1h30m'"
        )
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def parse_time(stamp: str) -> datetime.datetime | None:
    """A GKE ``createTime`` or Compute ``creationTimestamp`` (RFC 3339), UTC-aware; ``None`` when unreadable."""
    if not stamp:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        logger.warning("cannot read the creation time %r; the resource is treated as of unknown age", stamp)
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


@dataclass(frozen=True, kw_only=True)
class Leftover:
    """A GKE cluster, node pool or VM that carries hermes' ``managed-by`` label, or a load balancer's
    forwarding rule, target pool or firewall rule that such a cluster (or a deleted one) left.

    Args:
        kind: ``"gke-cluster"``, ``"gke-node-pool"``, ``"vm"``, ``"forwarding-rule"``, ``"target-pool"``
            or ``"firewall"``.
        name: the resource's name (a node pool's: ``"<cluster>/<pool>"``).
        project: the GCP project id.
        location: the cluster's zone or region; the VM's zone; the forwarding rule's or target pool's
            region; ``"global"`` for a firewall rule.
        created: when it was created (UTC-aware); ``None`` when GCP did not say.
        labels: its GCP labels.
        cluster: the GKE cluster a load-balancer resource belongs to (``None`` for the other kinds).
        cluster_location: that cluster's location; ``None`` when the cluster no longer exists.
    """

    kind: str
    name: str
    project: str
    location: str
    created: datetime.datetime | None
    labels: Mapping[str, str] = field(default_factory=dict)
    cluster: str | None = None
    cluster_location: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _ORDER:
            raise CloudConfigError(f"Leftover.kind must be one of {list(_ORDER)}, got {self.kind!r}")
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))

    def age_s(self, now: datetime.datetime | None = None) -> float | None:
        """Seconds since creation at ``now`` (default: the current time); ``None`` when unknown."""
        if self.created is None:
            return None
        now = now or datetime.datetime.now(datetime.UTC)
        return (now - self.created).total_seconds()

    def delete_request(self) -> Any:
        """The exact request :func:`delete_leftovers` sends to delete it."""
        if self.kind in lb.KINDS:
            return lb.delete_request(self)
        if self.kind == NODE_POOL:
            cluster, pool = self.name.split("/", 1)
            return container_v1.DeleteNodePoolRequest(
                name=f"projects/{self.project}/locations/{self.location}/clusters/{cluster}/nodePools/{pool}"
            )
        if self.kind == CLUSTER:
            return container_v1.DeleteClusterRequest(
                name=f"projects/{self.project}/locations/{self.location}/clusters/{self.name}"
            )
        return compute_v1.DeleteInstanceRequest(project=self.project, zone=self.location, instance=self.name)

    @property
    def delete_method(self) -> str:
        """The API method of :meth:`delete_request`."""
        return {
            CLUSTER: "google.container.v1.ClusterManager/DeleteCluster",
            NODE_POOL: "google.container.v1.ClusterManager/DeleteNodePool",
            **lb.DELETE_METHODS,
        }.get(self.kind, "compute.instances.delete")

    def to_dict(self, now: datetime.datetime | None = None) -> dict[str, Any]:
        """A JSON-ready description: kind, name, project, location, created (ISO 8601), age_s, labels,
        and for a load-balancer resource its ``cluster`` (``{"name", "location"}``, location ``None``
        when the cluster no longer exists)."""
        age = self.age_s(now)
        out: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "project": self.project,
            "location": self.location,
            "created": self.created.isoformat() if self.created else None,
            "age_s": round(age) if age is not None else None,
            "labels": dict(self.labels),
        }
        if self.cluster is not None:
            out["cluster"] = {"name": self.cluster, "location": self.cluster_location}
        return out


def _managed(labels: Mapping[str, str]) -> bool:
    return labels.get(MANAGED_BY_LABEL) == MANAGED_BY


def _all_clusters(gke: ClusterManager, project: str) -> list[container_v1.Cluster]:
    """Every GKE cluster of ``project``, in every location (one request)."""
    parent = f"projects/{project}/locations/-"
    try:
        response = gke.client.list_clusters(request=container_v1.ListClustersRequest(parent=parent))
    except GOOGLE_ERRORS as exc:
        raise translate_error(exc, f"list clusters in {parent}") from exc
    return list(response.clusters)


def _in_location(where: str, location: str) -> bool:
    """Whether a resource at ``where`` (zone, region or "global") is in ``location`` ("-": everywhere)."""
    return location == "-" or where == location or where.startswith(location + "-")


def _clusters(clusters: list[container_v1.Cluster], project: str, location: str) -> list[Leftover]:
    found = []
    for c in clusters:
        where = c.location or location
        if not _in_location(where, location):
            continue
        if _managed(c.resource_labels):
            found.append(
                Leftover(
                    kind=CLUSTER,
                    name=c.name,
                    project=project,
                    location=where,
                    created=parse_time(c.create_time),
                    labels=dict(c.resource_labels),
                )
            )
            continue
        # pools hermes added to someone else's cluster (GKE gives no creation time for a pool)
        found += [
            Leftover(
                kind=NODE_POOL,
                name=f"{c.name}/{pool.name}",
                project=project,
                location=where,
                created=None,
                labels=dict(pool.config.resource_labels),
            )
            for pool in c.node_pools
            if _managed(pool.config.resource_labels)
        ]
    return found


def _vms(compute: ComputeClients, project: str, location: str) -> list[Leftover]:
    label_filter = f"labels.{MANAGED_BY_LABEL} = {MANAGED_BY}"
    found: list[tuple[str, compute_v1.Instance]] = []
    try:
        if _ZONE.match(location):
            request = compute_v1.ListInstancesRequest(project=project, zone=location, filter=label_filter)
            found = [(location, vm) for vm in compute.instances.list(request=request)]
        else:  # a region, or "-" for every zone
            request = compute_v1.AggregatedListInstancesRequest(project=project, filter=label_filter)
            for scope, scoped in compute.instances.aggregated_list(request=request):
                zone = scope.rsplit("/", 1)[-1]
                if location == "-" or zone.startswith(location + "-"):
                    found.extend((zone, vm) for vm in scoped.instances)
    except GOOGLE_ERRORS as exc:
        raise translate_error(exc, f"list VMs of project {project} in {location}") from exc
    return [
        Leftover(
            kind=VM,
            name=vm.name,
            project=project,
            location=zone,
            created=parse_time(vm.creation_timestamp),
            labels=dict(vm.labels),
        )
        for zone, vm in found
        if _managed(vm.labels)  # the filter is the server's; check the label ourselves too
    ]


def find_leftovers(
    *,
    project: str,
    locations: Sequence[str] = ("-",),
    gke: ClusterManager | None = None,
    compute: ComputeClients | None = None,
    older_than_s: float | None = None,
    now: datetime.datetime | None = None,
) -> list[Leftover]:
    """Every GKE cluster, node pool and VM of ``project`` labelled ``managed-by=hermes-cloudbreak``, and
    the load balancers' forwarding rules, target pools and firewall rules those clusters left.

    A load-balancer resource is listed with its cluster (when that cluster is listed: same age and
    location filter) or, when its cluster no longer exists, on its own age and location (a firewall
    rule is global: listed only with ``"-"``). They are searched only with both ``gke`` and ``compute``
    (the owner is told by the cluster list).

    Args:
        project: the GCP project id.
        locations: zones or regions to search; ``"-"`` is every location.
        gke: searches GKE clusters through this manager's client (its own location is not used);
            ``None`` skips GKE.
        compute: searches VMs (and load-balancer resources) with these clients; ``None`` skips
            Compute Engine.
        older_than_s: only resources created more than this many seconds before ``now``
            (a resource of unknown age is then left out).
        now: the reference time (UTC-aware); ``None`` takes the current time.

    Returns:
        Clusters, node pools, VMs, forwarding rules, target pools, firewall rules; each kind sorted by
        location and name.
    """
    if older_than_s is not None and older_than_s < 0:
        raise CloudConfigError(f"older_than_s must be >= 0, got {older_than_s}")
    if not locations:
        raise CloudConfigError("locations must name at least one zone or region ('-' for all)")
    check_project("find_leftovers", project)
    if isinstance(locations, str):
        raise CloudConfigError(
            f"find_leftovers: locations must be a list of zones or regions, got the string {locations!r}; "
            f"write locations=[{locations!r}]"
        )
    for location in locations:
        check_location("find_leftovers", location, allow_all=True)
    now = now or datetime.datetime.now(datetime.UTC)
    clusters = _all_clusters(gke, project) if gke else []
    found: dict[tuple[str, str, str], Leftover] = {}
    for location in dict.fromkeys(locations):
        for item in _clusters(clusters, project, location) + (
            _vms(compute, project, location) if compute else []
        ):
            found[(item.kind, item.location, item.name)] = item
    leftovers = _sorted(found.values())
    if older_than_s is not None:
        leftovers = [x for x in leftovers if _older(x, older_than_s, now)]
    if gke is not None and compute is not None and compute.has_network:
        kept = {(x.location, x.name): x for x in leftovers if x.kind == CLUSTER}
        network = [
            item
            for item in lb.find_lb_leftovers(compute, project, clusters, Leftover)
            if lb.owned_by(item, kept)
            or (
                item.cluster_location is None
                and any(_in_location(item.location, where) for where in locations)
                and (older_than_s is None or _older(item, older_than_s, now))
            )
        ]
        leftovers += _sorted(network)
    return leftovers


def _sorted(items: Iterable[Leftover]) -> list[Leftover]:
    return sorted(items, key=lambda x: (_ORDER[x.kind], x.location, x.name))


def _older(item: Leftover, older_than_s: float, now: datetime.datetime) -> bool:
    age = item.age_s(now)
    return age is not None and age > older_than_s


def delete_leftovers(
    leftovers: Sequence[Leftover],
    *,
    gke: ClusterManager | None = None,
    compute: ComputeClients | None = None,
    timeout_s: float = 1800.0,
    poll_interval_s: float = 10.0,
) -> list[Leftover]:
    """Delete each leftover and wait until it is gone; one that is already gone counts as deleted.

    VM deletes are all sent first, then awaited; node pools and clusters are deleted one after the
    other; then forwarding rules, target pools and firewall rules (each kind sent, then awaited). A
    load-balancer resource whose cluster could not be deleted is kept (the cluster still uses it).

    Args:
        leftovers: what :func:`find_leftovers` returned (or a part of it).
        gke: the manager whose client deletes the clusters (needed when there are any).
        compute: the clients that delete the VMs and load-balancer resources (needed when there are any).
        timeout_s: the deadline of each delete, in seconds.
        poll_interval_s: the wait between two polls of an operation, in seconds.

    Returns:
        The leftovers deleted.

    Raises:
        TeardownError: some could not be deleted; ``leftovers`` names each one (the others were deleted).
    """
    kinds = {x.kind for x in leftovers}
    if kinds & {CLUSTER, NODE_POOL} and gke is None:
        raise CloudConfigError("delete_leftovers got GKE clusters but no gke=ClusterManager to delete them")
    if VM in kinds and compute is None:
        raise CloudConfigError("delete_leftovers got VMs but no compute=ComputeClients to delete them")
    if kinds & set(lb.KINDS) and (compute is None or not compute.has_network):
        raise CloudConfigError(
            "delete_leftovers got forwarding rules, target pools or firewall rules but no compute=ComputeClients "
            "with their clients (compute_clients() makes them)"
        )
    deleted: list[Leftover] = []
    failed: list[str] = []
    wait = {"timeout_s": timeout_s, "poll_interval_s": poll_interval_s}
    if VM in kinds:
        assert compute is not None
        _delete_vms([x for x in leftovers if x.kind == VM], compute, deleted, failed, **wait)
    if gke is not None:
        _delete_pools([x for x in leftovers if x.kind == NODE_POOL], gke, deleted, failed)
        _delete_clusters([x for x in leftovers if x.kind == CLUSTER], gke, deleted, failed, **wait)
    network = [x for x in leftovers if x.kind in lb.KINDS]
    if network:
        assert compute is not None
        kept = {(x.location, x.name) for x in leftovers if x.kind == CLUSTER and x not in deleted}
        for item in network:
            if (item.cluster_location, item.cluster) in kept:
                failed.append(
                    f"{item.kind} {item.name} in {item.project}/{item.location} (kept: its cluster "
                    f"{item.cluster} in {item.cluster_location} could not be deleted)"
                )
        go = [x for x in network if (x.cluster_location, x.cluster) not in kept]
        done, errors = lb.delete_lb_leftovers(go, compute, **wait)
        deleted += done
        failed += errors
    if failed:
        raise TeardownError(
            "could not delete every leftover; delete by hand: " + "; ".join(failed), leftovers=failed
        )
    return deleted


def _delete_vms(
    vms: list[Leftover],
    compute: ComputeClients,
    deleted: list[Leftover],
    failed: list[str],
    *,
    timeout_s: float,
    poll_interval_s: float,
) -> None:
    from hermes.cloudbreak.compute._specs import VMSpec
    from hermes.cloudbreak.compute._swarm import Swarm

    by_zone: dict[tuple[str, str], list[Leftover]] = {}
    for vm in vms:
        by_zone.setdefault((vm.project, vm.location), []).append(vm)
    for (project, zone), group in by_zone.items():
        # a Swarm that "requested" exactly these VMs deletes them: all deletes sent, then awaited
        swarm = Swarm(
            VMSpec(name="gc"),
            len(group),
            project=project,
            zone=zone,
            clients=compute,
            timeout_s=timeout_s,
            poll_interval_s=poll_interval_s,
        )
        swarm._requested = [vm.name for vm in group]
        logger.info("deleting VMs %s in %s/%s", swarm._requested, project, zone)
        try:
            swarm.close()
            deleted.extend(group)
        except TeardownError as exc:
            failed.extend(exc.leftovers)
            deleted.extend(vm for vm in group if not any(f"VM {vm.name} " in f for f in exc.leftovers))


def _delete_pools(
    pools: list[Leftover], gke: ClusterManager, deleted: list[Leftover], failed: list[str]
) -> None:
    for pool in pools:
        cluster_name, pool_name = pool.name.split("/", 1)
        manager = gke.at(pool.location)
        try:
            manager.delete_node_pool(cluster_name, pool_name, missing_ok=True)
        except CloudbreakError as exc:
            failed.append(f"node pool {pool.name} in {manager.parent} ({exc})")
            continue
        deleted.append(pool)


def _delete_clusters(
    clusters: list[Leftover],
    gke: ClusterManager,
    deleted: list[Leftover],
    failed: list[str],
    *,
    timeout_s: float,
    poll_interval_s: float,
) -> None:
    from hermes.cloudbreak.gke._manager import ClusterManager

    for cluster in clusters:
        manager = ClusterManager(
            project=cluster.project,
            location=cluster.location,
            client=gke.client,
            credentials=gke.credentials,
            timeout_s=timeout_s,
            poll_interval_s=poll_interval_s,
        )
        logger.info("deleting GKE cluster %s in %s", cluster.name, manager.parent)
        start = time.monotonic()
        try:
            manager.delete_cluster(cluster.name, missing_ok=True)
        except ResourceNotFound:
            pass
        except CloudbreakError as exc:
            failed.append(f"GKE cluster {cluster.name} in {manager.parent} ({exc})")
            continue
        logger.info("deleted GKE cluster %s in %.0f s", cluster.name, time.monotonic() - start)
        deleted.append(cluster)
