"""Triton servers on Kubernetes: apply, wait until ready, return the endpoints, delete on exit."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from kubernetes import client

from hermes.cloudbreak._managed import ManagedResource
from hermes.cloudbreak._wait import poll_until
from hermes.cloudbreak.exceptions import CloudbreakError, CloudConfigError
from hermes.cloudbreak.kubernetes._apply import (
    apply_manifest,
    delete_manifest,
    describe_manifest,
    read_manifest,
)
from hermes.cloudbreak.kubernetes._endpoints import Endpoint, write_endpoints
from hermes.cloudbreak.kubernetes._manifests import (
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    TritonSpec,
    gpu_driver_installer_manifest,
    triton_manifests,
)

__all__ = ["TritonDeployment", "apply_gpu_driver_installer", "deployment_ready", "service_address"]

logger = logging.getLogger("hermes.cloudbreak.kubernetes")


def deployment_ready(obj: dict[str, Any]) -> bool:
    """Whether a Deployment rolled out: the controller saw the latest spec and every replica is ready."""
    spec, status, meta = obj.get("spec", {}), obj.get("status") or {}, obj.get("metadata", {})
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if generation is not None and (observed is None or observed < generation):
        return False
    want = spec.get("replicas", 1)
    return all(
        (status.get(key) or 0) >= want for key in ("updatedReplicas", "readyReplicas", "availableReplicas")
    )


def daemon_set_ready(obj: dict[str, Any]) -> bool:
    """Whether a DaemonSet runs ready on every node it targets (at least one)."""
    status = obj.get("status") or {}
    desired = status.get("desiredNumberScheduled") or 0
    return desired > 0 and (status.get("numberReady") or 0) >= desired


def service_address(obj: dict[str, Any]) -> str | None:
    """The host clients reach a Service at, or ``None`` while a load balancer is still pending.

    LoadBalancer: the ingress IP (or hostname). ClusterIP and NodePort: the in-cluster DNS name.
    """
    meta, spec = obj.get("metadata", {}), obj.get("spec", {})
    if spec.get("type") == "LoadBalancer":
        ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if not ingress:
            return None
        return ingress[0].get("ip") or ingress[0].get("hostname")
    return f"{meta['name']}.{meta.get('namespace', 'default')}.svc.cluster.local"


def _port(service: dict[str, Any], name: str, default: int) -> int:
    for port in service.get("spec", {}).get("ports", []):
        if port.get("name") == name:
            return int(port["port"])
    return default


def endpoint_of(name: str, service: dict[str, Any]) -> Endpoint:
    """The :class:`Endpoint` of a ready Service."""
    host = service_address(service)
    if host is None:
        raise CloudbreakError(f"Service {name} has no address yet")
    return Endpoint(
        name=name,
        grpc=f"{host}:{_port(service, 'grpc', GRPC_PORT)}",
        http=f"{host}:{_port(service, 'http', HTTP_PORT)}",
        metrics=f"{host}:{_port(service, 'metrics', METRICS_PORT)}",
    )


class TritonDeployment(ManagedResource):
    """Triton servers on Kubernetes, applied on ``__enter__`` and deleted on exit.

    Entering applies every manifest (create, or patch when present), waits until each
    Deployment is ready and each Service has an address, and fills :attr:`endpoints` (and
    ``endpoints_file``, when given). Exit — normal, on error, on SIGINT/SIGTERM — deletes every
    object it applied, unless ``keep=True``.

    Args:
        api_client: a ``kubernetes.client.ApiClient`` for the cluster (e.g. ``Cluster.kube_api_client()``).
        spec: what to deploy.
        keep: leave the servers running on exit.
        timeout_s: the deadline for every server to become ready, in seconds.
        poll_interval_s: the wait between two status reads, in seconds.
        endpoints_file: where to write ``{"endpoints": [...]}`` for the aeriel client.

    Attributes:
        endpoints: one :class:`Endpoint` per server, in server order.
        manifests: what is applied, in order.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        spec: TritonSpec,
        *,
        keep: bool = False,
        timeout_s: float = 900.0,
        poll_interval_s: float = 5.0,
        endpoints_file: str | Path | None = None,
    ):
        super().__init__(keep=keep)
        if timeout_s <= 0 or poll_interval_s <= 0:
            raise CloudConfigError(
                f"TritonDeployment.timeout_s and poll_interval_s must be > 0, "
                f"got {timeout_s} and {poll_interval_s}"
            )
        self.api_client = api_client
        self.spec = spec
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self.endpoints_file = Path(endpoints_file) if endpoints_file is not None else None
        self.manifests = triton_manifests(spec)
        self.endpoints: list[Endpoint] = []
        self.stop = threading.Event()
        self._applied: list[dict[str, Any]] = []

    def describe(self) -> str:
        return f"Triton deployment {self.spec.name} ({self.spec.servers} servers) in namespace {self.spec.namespace}"

    def __enter__(self) -> TritonDeployment:
        super().__enter__()
        return self

    def _create(self) -> None:
        for manifest in self.manifests:
            self._applied.append(manifest)  # recorded first: a failed call may still have created it
            apply_manifest(self.api_client, manifest)
        self.endpoints = self.wait_ready()
        if self.endpoints_file is not None:
            write_endpoints(self.endpoints_file, self.endpoints)
            logger.info("wrote %d endpoints to %s", len(self.endpoints), self.endpoints_file)

    def wait_ready(self, timeout_s: float | None = None) -> list[Endpoint]:
        """Wait until every server is ready and reachable; return their endpoints."""
        pending = {describe_manifest(m): m for m in self.manifests}
        found: dict[str, Endpoint] = {}

        def check() -> list[Endpoint] | None:
            for key, manifest in list(pending.items()):
                live = read_manifest(self.api_client, manifest)
                if manifest["kind"] == "Deployment" and deployment_ready(live):
                    del pending[key]
                elif manifest["kind"] == "Service" and service_address(live) is not None:
                    found[manifest["metadata"]["name"]] = endpoint_of(manifest["metadata"]["name"], live)
                    del pending[key]
            if pending:
                return None
            return [found[name] for name in self.spec.server_names()]

        return poll_until(
            check,
            timeout_s=self.timeout_s if timeout_s is None else timeout_s,
            interval_s=self.poll_interval_s,
            what=f"rollout of {self.describe()}",
            describe=lambda: "waiting for " + ", ".join(sorted(pending)),
            stop=self.stop,
        )

    def _delete(self) -> list[str]:
        leftovers = []
        for manifest in reversed(self._applied):
            try:
                delete_manifest(self.api_client, manifest, missing_ok=True)
            except CloudbreakError as exc:
                leftovers.append(f"{describe_manifest(manifest)} ({exc})")
        self._applied.clear()
        return leftovers


def apply_gpu_driver_installer(
    api_client: client.ApiClient, *, wait: bool = True, timeout_s: float = 900.0, poll_interval_s: float = 5.0
) -> dict[str, Any]:
    """Apply the NVIDIA driver installer DaemonSet (kube-system) and optionally wait until it is ready.

    It stays installed with the cluster (it is deleted with it); it is a no-op on nodes whose
    drivers GKE manages.
    """
    manifest = gpu_driver_installer_manifest()
    live, _ = apply_manifest(api_client, manifest)
    if not wait:
        return live

    def check() -> dict[str, Any] | None:
        obj = read_manifest(api_client, manifest)
        return obj if daemon_set_ready(obj) else None

    return poll_until(
        check, timeout_s=timeout_s, interval_s=poll_interval_s, what="the NVIDIA driver installer DaemonSet"
    )
