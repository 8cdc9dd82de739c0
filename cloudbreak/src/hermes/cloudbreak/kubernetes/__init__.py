"""Triton servers on Kubernetes (the official ``kubernetes`` client)."""

from hermes.cloudbreak.kubernetes._apply import apply_manifest, delete_manifest, read_manifest
from hermes.cloudbreak.kubernetes._deploy import (
    TritonDeployment,
    apply_gpu_driver_installer,
    delete_load_balancers,
    deployment_ready,
    pod_endpoints,
    service_address,
)
from hermes.cloudbreak.kubernetes._diagnostics import PodReport, pod_reports
from hermes.cloudbreak.kubernetes._endpoints import Endpoint, read_endpoints, write_endpoints
from hermes.cloudbreak.kubernetes._manifests import (
    ADMIN_TOKEN_HEADER,
    Autoscale,
    TritonSpec,
    gpu_driver_installer_manifest,
    triton_manifests,
)
from hermes.cloudbreak.kubernetes._membership import EndpointWatcher

__all__ = [
    "ADMIN_TOKEN_HEADER",
    "Autoscale",
    "Endpoint",
    "EndpointWatcher",
    "PodReport",
    "TritonDeployment",
    "TritonSpec",
    "apply_gpu_driver_installer",
    "apply_manifest",
    "delete_load_balancers",
    "delete_manifest",
    "deployment_ready",
    "gpu_driver_installer_manifest",
    "pod_endpoints",
    "pod_reports",
    "read_endpoints",
    "read_manifest",
    "service_address",
    "triton_manifests",
    "write_endpoints",
]
