"""Descriptions of GKE clusters and node pools, and the exact API requests made from them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from google.cloud import container_v1

from hermes.cloudbreak._credentials import CLOUD_PLATFORM_SCOPE
from hermes.cloudbreak._names import MANAGED_BY, MANAGED_BY_LABEL, check_labels, check_name
from hermes.cloudbreak._validation import check_accelerator, check_location, check_project
from hermes.cloudbreak.exceptions import CloudConfigError

__all__ = [
    "REGIONAL_DEFAULT_ZONES",
    "ClusterSpec",
    "NodePoolSpec",
    "create_cluster_request",
    "delete_cluster_request",
    "is_zone",
]

_DRIVER_VERSIONS = {
    "default": container_v1.GPUDriverInstallationConfig.GPUDriverVersion.DEFAULT,
    "latest": container_v1.GPUDriverInstallationConfig.GPUDriverVersion.LATEST,
    "disabled": container_v1.GPUDriverInstallationConfig.GPUDriverVersion.INSTALLATION_DISABLED,
}


#: How many zones GKE gives the nodes of a regional cluster when none are named (its documented default).
REGIONAL_DEFAULT_ZONES = 3
_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")  # us-central1-a; a region has no final letter


def is_zone(location: str) -> bool:
    """Whether ``location`` is a zone (``us-central1-a``) rather than a region (``us-central1``)."""
    return bool(_ZONE.match(location))


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, kw_only=True)
class NodePoolSpec:
    """A GKE node pool, e.g. GPU nodes for Triton servers.

    Args:
        name: the pool's name (lowercase, at most 40 characters).
        machine_type: the Compute Engine machine type of each node (``n1-standard-8``).
        accelerator_type: the GPU type (``nvidia-tesla-t4``, ``nvidia-l4``); ``None`` for CPU nodes.
        accelerator_count: GPUs per node (0 without ``accelerator_type``).
        node_count: nodes at creation **per zone** of the pool: a regional cluster without
            ``locations`` has three zones, so three times as many nodes (and GPUs);
            see :meth:`ClusterSpec.gpu_total`.
        min_node_count: with ``max_node_count``, turns autoscaling on between the two.
        max_node_count: the autoscaling upper bound.
        spot: use Spot VMs (cheaper; can be preempted).
        disk_size_gb: the boot disk of each node, in GB.
        gpu_driver: ``"default"`` or ``"latest"`` has GKE install the NVIDIA driver; ``"disabled"``
            leaves it to the driver-installer DaemonSet (:func:`gpu_driver_installer_manifest`);
            ``None`` sends no preference (GKE's default for the cluster version).
        labels: Kubernetes labels of the nodes.
        oauth_scopes: scopes of the nodes' service account (``cloud-platform`` reads gs:// repositories).
        locations: the zones of the pool's nodes (``NodePool.locations``); empty takes the cluster's.
    """

    name: str
    machine_type: str = "n1-standard-8"
    accelerator_type: str | None = None
    accelerator_count: int = 0
    node_count: int = 1
    min_node_count: int | None = None
    max_node_count: int | None = None
    spot: bool = False
    disk_size_gb: int = 100
    gpu_driver: str | None = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    oauth_scopes: tuple[str, ...] = (CLOUD_PLATFORM_SCOPE,)
    locations: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_name("NodePoolSpec", "name", self.name, max_length=40)
        check_accelerator("NodePoolSpec", self.accelerator_type)
        object.__setattr__(self, "locations", tuple(self.locations))
        if not self.machine_type:
            raise CloudConfigError("NodePoolSpec.machine_type must name a machine type, e.g. 'n1-standard-8'")
        if self.accelerator_count < 0:
            raise CloudConfigError(
                f"NodePoolSpec.accelerator_count must be >= 0, got {self.accelerator_count}"
            )
        if self.accelerator_count and not self.accelerator_type:
            raise CloudConfigError(
                f"NodePoolSpec.accelerator_count is {self.accelerator_count} but accelerator_type is not set; "
                "expected a GPU type such as 'nvidia-tesla-t4'"
            )
        if self.accelerator_type and self.accelerator_count == 0:
            raise CloudConfigError(
                f"NodePoolSpec.accelerator_type is {self.accelerator_type!r} but accelerator_count is 0; expected >= 1"
            )
        if self.node_count < 0:
            raise CloudConfigError(f"NodePoolSpec.node_count must be >= 0, got {self.node_count}")
        if (self.min_node_count is None) != (self.max_node_count is None):
            raise CloudConfigError(
                "NodePoolSpec.min_node_count and max_node_count turn autoscaling on together; "
                f"got min_node_count={self.min_node_count}, max_node_count={self.max_node_count}"
            )
        if (
            self.min_node_count is not None
            and self.max_node_count is not None
            and (not 0 <= self.min_node_count <= self.max_node_count or self.max_node_count < 1)
        ):
            raise CloudConfigError(
                "NodePoolSpec needs 0 <= min_node_count <= max_node_count and max_node_count >= 1; "
                f"got min_node_count={self.min_node_count}, max_node_count={self.max_node_count}"
            )
        if self.disk_size_gb < 10:
            raise CloudConfigError(f"NodePoolSpec.disk_size_gb must be >= 10, got {self.disk_size_gb}")
        if self.gpu_driver is not None and self.gpu_driver not in _DRIVER_VERSIONS:
            raise CloudConfigError(
                f"NodePoolSpec.gpu_driver must be one of {sorted(_DRIVER_VERSIONS)} or None, got {self.gpu_driver!r}"
            )
        check_labels("NodePoolSpec", "labels", self.labels)
        object.__setattr__(self, "labels", _frozen(self.labels))
        object.__setattr__(self, "oauth_scopes", tuple(self.oauth_scopes))

    @property
    def autoscaling(self) -> bool:
        """Whether the pool autoscales."""
        return self.max_node_count is not None

    def to_proto(self) -> container_v1.NodePool:
        """The ``google.container.v1.NodePool`` message for this pool."""
        accelerators = []
        if self.accelerator_type:
            accelerator = container_v1.AcceleratorConfig(
                accelerator_type=self.accelerator_type, accelerator_count=self.accelerator_count
            )
            if self.gpu_driver is not None:
                accelerator.gpu_driver_installation_config = container_v1.GPUDriverInstallationConfig(
                    gpu_driver_version=_DRIVER_VERSIONS[self.gpu_driver]
                )
            accelerators.append(accelerator)
        pool = container_v1.NodePool(
            name=self.name,
            initial_node_count=self.node_count,
            config=container_v1.NodeConfig(
                machine_type=self.machine_type,
                disk_size_gb=self.disk_size_gb,
                accelerators=accelerators,
                spot=self.spot,
                labels=dict(self.labels),
                oauth_scopes=list(self.oauth_scopes),
                # GCP labels of the pool's VMs: `hermes cloud gc` finds pools left in other clusters
                resource_labels={MANAGED_BY_LABEL: MANAGED_BY},
            ),
            locations=list(self.locations),
        )
        if self.autoscaling:
            pool.autoscaling = container_v1.NodePoolAutoscaling(
                enabled=True, min_node_count=self.min_node_count, max_node_count=self.max_node_count
            )
        return pool


@dataclass(frozen=True, kw_only=True)
class ClusterSpec:
    """A GKE Standard cluster and its node pools.

    Args:
        name: the cluster's name (lowercase, at most 40 characters).
        node_pools: the pools created with the cluster (at least one).
        kubernetes_version: the initial control-plane version; ``None`` takes GKE's default.
        network: the VPC network; ``None`` takes ``default``.
        labels: GCP resource labels (billing, and finding what a job left behind).
        node_locations: the zones of the nodes (``Cluster.locations``); empty takes the zone of a
            zonal cluster, or three zones GKE picks in a region.
        workload_identity: turn on GKE workload identity (pool ``<project>.svc.id.goog``), so pods
            read gs:// as a Google service account without keys (``TritonSpec.workload_identity``).
    """

    name: str
    node_pools: tuple[NodePoolSpec, ...]
    kubernetes_version: str | None = None
    network: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    node_locations: tuple[str, ...] = ()
    workload_identity: bool = False

    def __post_init__(self) -> None:
        check_name("ClusterSpec", "name", self.name, max_length=40)
        object.__setattr__(self, "node_locations", tuple(self.node_locations))
        pools = tuple(self.node_pools)
        if not pools or not all(isinstance(p, NodePoolSpec) for p in pools):
            raise CloudConfigError(
                f"ClusterSpec.node_pools must hold at least one NodePoolSpec, got {self.node_pools!r}"
            )
        names = [p.name for p in pools]
        if len(set(names)) != len(names):
            raise CloudConfigError(f"ClusterSpec.node_pools has duplicate names: {names}")
        check_labels("ClusterSpec", "labels", self.labels)
        object.__setattr__(self, "node_pools", pools)
        object.__setattr__(self, "labels", _frozen({MANAGED_BY_LABEL: MANAGED_BY, **self.labels}))

    def to_proto(self, project: str | None = None) -> container_v1.Cluster:
        """The ``google.container.v1.Cluster`` message for this cluster (``project`` names the
        workload identity pool)."""
        cluster = container_v1.Cluster(
            name=self.name,
            node_pools=[pool.to_proto() for pool in self.node_pools],
            resource_labels=dict(self.labels),
        )
        if self.kubernetes_version:
            cluster.initial_cluster_version = self.kubernetes_version
        if self.network:
            cluster.network = self.network
        if self.node_locations:
            cluster.locations = list(self.node_locations)
        if self.workload_identity:
            if not project:
                raise CloudConfigError(
                    "ClusterSpec.workload_identity needs the project (its pool is <project>.svc.id.goog)"
                )
            cluster.workload_identity_config = container_v1.WorkloadIdentityConfig(
                workload_pool=f"{project}.svc.id.goog"
            )
        return cluster

    def zones_of(self, pool: NodePoolSpec, location: str) -> int:
        """How many zones ``pool`` spans when the cluster is created in ``location``."""
        if pool.locations:
            return len(pool.locations)
        if self.node_locations:
            return len(self.node_locations)
        return 1 if is_zone(location) else REGIONAL_DEFAULT_ZONES

    def node_total(self, location: str) -> int:
        """Nodes at creation in all: each pool's per-zone ``node_count`` x its zones."""
        return sum(p.node_count * self.zones_of(p, location) for p in self.node_pools)

    def gpu_total(self, location: str) -> int:
        """GPUs at creation in all (``node_count`` is per zone: a regional cluster multiplies it)."""
        return sum(p.node_count * self.zones_of(p, location) * p.accelerator_count for p in self.node_pools)

    def capacity_summary(self, location: str) -> list[str]:
        """One line per pool: ``gpus: 2 nodes/zone x 3 zones x 1 nvidia-tesla-t4 = 6 GPUs``."""
        lines = []
        for p in self.node_pools:
            zones = self.zones_of(p, location)
            gpu = f" x {p.accelerator_count} {p.accelerator_type}" if p.accelerator_type else ""
            total = f" = {p.node_count * zones * p.accelerator_count} GPUs" if p.accelerator_type else ""
            lines.append(f"{p.name}: {p.node_count} node(s)/zone x {zones} zone(s){gpu}{total}")
        return lines


def create_cluster_request(
    project: str, location: str, spec: ClusterSpec
) -> container_v1.CreateClusterRequest:
    """The exact ``CreateClusterRequest`` sent to create ``spec`` in ``project``/``location``."""
    check_project("create_cluster_request", project)
    check_location("create_cluster_request", location)
    return container_v1.CreateClusterRequest(
        parent=f"projects/{project}/locations/{location}", cluster=spec.to_proto(project)
    )


def delete_cluster_request(project: str, location: str, name: str) -> container_v1.DeleteClusterRequest:
    """The exact ``DeleteClusterRequest`` sent to delete the cluster ``name``."""
    check_project("delete_cluster_request", project)
    check_location("delete_cluster_request", location)
    return container_v1.DeleteClusterRequest(name=f"projects/{project}/locations/{location}/clusters/{name}")
