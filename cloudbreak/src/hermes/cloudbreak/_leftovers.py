"""Find and delete what a crashed run left behind: GKE clusters, node pools and VMs labelled ``managed-by=hermes-cloudbreak``.

Context managers delete what they create, but a ``kill -9``, a lost laptop or a ``keep=True``
leaves resources running (and billing). :func:`find_leftovers` lists every GKE cluster and
Compute Engine VM in a project that carries hermes' label, optionally only those older than
some age; :func:`delete_leftovers` deletes them. A resource without the label is never
listed, so never deleted. ``hermes cloud gc`` is the command-line face of both.
"""

from __future__ import annotations

import datetime
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from google.cloud import compute_v1, container_v1

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


def _parse_time(stamp: str) -> datetime.datetime | None:
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
    """A GKE cluster or a VM that carries hermes' ``managed-by`` label.

    Args:
        kind: ``"gke-cluster"`` or ``"vm"``.
        name: the cluster's or VM's name.
        project: the GCP project id.
        location: the cluster's zone or region; the VM's zone.
        created: when it was created (UTC-aware); ``None`` when GCP did not say.
        labels: its GCP labels.
    """

    kind: str
    name: str
    project: str
    location: str
    created: datetime.datetime | None
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in (CLUSTER, NODE_POOL, VM):
            raise CloudConfigError(
                f"Leftover.kind must be {CLUSTER!r}, {NODE_POOL!r} or {VM!r}, got {self.kind!r}"
            )
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))

    def age_s(self, now: datetime.datetime | None = None) -> float | None:
        """Seconds since creation at ``now`` (default: the current time); ``None`` when unknown."""
        if self.created is None:
            return None
        now = now or datetime.datetime.now(datetime.UTC)
        return (now - self.created).total_seconds()

    def delete_request(self) -> Any:
        """The exact request :func:`delete_leftovers` sends to delete it."""
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
        }.get(self.kind, "compute.instances.delete")

    def to_dict(self, now: datetime.datetime | None = None) -> dict[str, Any]:
        """A JSON-ready description: kind, name, project, location, created (ISO 8601), age_s, labels."""
        age = self.age_s(now)
        return {
            "kind": self.kind,
            "name": self.name,
            "project": self.project,
            "location": self.location,
            "created": self.created.isoformat() if self.created else None,
            "age_s": round(age) if age is not None else None,
            "labels": dict(self.labels),
        }


def _managed(labels: Mapping[str, str]) -> bool:
    return labels.get(MANAGED_BY_LABEL) == MANAGED_BY


def _clusters(gke: ClusterManager, project: str, location: str) -> list[Leftover]:
    parent = f"projects/{project}/locations/{location}"
    try:
        response = gke.client.list_clusters(request=container_v1.ListClustersRequest(parent=parent))
    except GOOGLE_ERRORS as exc:
        raise translate_error(exc, f"list clusters in {parent}") from exc
    found = []
    for c in response.clusters:
        where = c.location or location
        if _managed(c.resource_labels):
            found.append(
                Leftover(
                    kind=CLUSTER,
                    name=c.name,
                    project=project,
                    location=where,
                    created=_parse_time(c.create_time),
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
            created=_parse_time(vm.creation_timestamp),
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
    """Every GKE cluster and VM of ``project`` labelled ``managed-by=hermes-cloudbreak``.

    Args:
        project: the GCP project id.
        locations: zones or regions to search; ``"-"`` is every location.
        gke: searches GKE clusters through this manager's client (its own location is not used);
            ``None`` skips GKE.
        compute: searches VMs with these clients; ``None`` skips Compute Engine.
        older_than_s: only resources created more than this many seconds before ``now``
            (a resource of unknown age is then left out).
        now: the reference time (UTC-aware); ``None`` takes the current time.

    Returns:
        Clusters first, then VMs, each sorted by location and name.
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
    found: dict[tuple[str, str, str], Leftover] = {}
    for location in dict.fromkeys(locations):
        for item in (_clusters(gke, project, location) if gke else []) + (
            _vms(compute, project, location) if compute else []
        ):
            found[(item.kind, item.location, item.name)] = item
    order = {CLUSTER: 0, NODE_POOL: 1, VM: 2}
    leftovers = sorted(found.values(), key=lambda x: (order[x.kind], x.location, x.name))
    if older_than_s is None:
        return leftovers
    return [x for x in leftovers if (age := x.age_s(now)) is not None and age > older_than_s]


def delete_leftovers(
    leftovers: Sequence[Leftover],
    *,
    gke: ClusterManager | None = None,
    compute: ComputeClients | None = None,
    timeout_s: float = 1800.0,
    poll_interval_s: float = 10.0,
) -> list[Leftover]:
    """Delete each leftover and wait until it is gone; one that is already gone counts as deleted.

    VM deletes are all sent first, then awaited; clusters are deleted one after the other.

    Args:
        leftovers: what :func:`find_leftovers` returned (or a part of it).
        gke: the manager whose client deletes the clusters (needed when there are any).
        compute: the clients that delete the VMs (needed when there are any).
        timeout_s: the deadline of each delete, in seconds.
        poll_interval_s: the wait between two polls of an operation, in seconds.

    Returns:
        The leftovers deleted.

    Raises:
        TeardownError: some could not be deleted; ``leftovers`` names each one (the others were deleted).
    """
    from hermes.cloudbreak.compute._specs import VMSpec
    from hermes.cloudbreak.compute._swarm import Swarm
    from hermes.cloudbreak.gke._manager import ClusterManager

    clusters = [x for x in leftovers if x.kind == CLUSTER]
    pools = [x for x in leftovers if x.kind == NODE_POOL]
    vms = [x for x in leftovers if x.kind == VM]
    if (clusters or pools) and gke is None:
        raise CloudConfigError("delete_leftovers got GKE clusters but no gke=ClusterManager to delete them")
    if vms and compute is None:
        raise CloudConfigError("delete_leftovers got VMs but no compute=ComputeClients to delete them")
    deleted: list[Leftover] = []
    failed: list[str] = []
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
    for pool in pools:
        assert gke is not None
        cluster_name, pool_name = pool.name.split("/", 1)
        manager = gke.at(pool.location)
        try:
            manager.delete_node_pool(cluster_name, pool_name, missing_ok=True)
        except CloudbreakError as exc:
            failed.append(f"node pool {pool.name} in {manager.parent} ({exc})")
            continue
        deleted.append(pool)
    for cluster in clusters:
        assert gke is not None
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
    if failed:
        raise TeardownError(
            "could not delete every leftover; delete by hand: " + "; ".join(failed), leftovers=failed
        )
    return deleted
