"""GKE clusters and GPU node pools (google-cloud-container)."""

from hermes.cloudbreak.gke._cluster import Cluster, NodePool
from hermes.cloudbreak.gke._manager import ClusterManager
from hermes.cloudbreak.gke._specs import (
    ClusterSpec,
    NodePoolSpec,
    create_cluster_request,
    delete_cluster_request,
)

__all__ = [
    "Cluster",
    "ClusterManager",
    "ClusterSpec",
    "NodePool",
    "NodePoolSpec",
    "create_cluster_request",
    "delete_cluster_request",
]
