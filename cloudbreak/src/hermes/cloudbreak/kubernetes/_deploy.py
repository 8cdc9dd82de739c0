"""Triton servers on Kubernetes: apply, wait until ready, return the endpoints, delete on exit."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from kubernetes import client

from hermes.cloudbreak._managed import ManagedResource
from hermes.cloudbreak._retry import retry_transient
from hermes.cloudbreak._wait import poll_until
from hermes.cloudbreak.exceptions import (
    CapacityError,
    CloudbreakError,
    CloudConfigError,
    OperationTimeout,
    ResourceNotFound,
)
from hermes.cloudbreak.kubernetes._apply import (
    _translate,
    apply_manifest,
    delete_manifest,
    describe_manifest,
    read_manifest,
)
from hermes.cloudbreak.kubernetes._diagnostics import capacity_event, pod_reports
from hermes.cloudbreak.kubernetes._endpoints import Endpoint, write_endpoints
from hermes.cloudbreak.kubernetes._manifests import (
    DEPLOYMENT_LABEL,
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    TritonSpec,
    gpu_driver_installer_manifest,
    triton_manifests,
)

__all__ = [
    "TritonDeployment",
    "apply_gpu_driver_installer",
    "delete_load_balancers",
    "deployment_ready",
    "pod_endpoints",
    "service_address",
]

logger = logging.getLogger("hermes.cloudbreak.kubernetes")


def deployment_ready(obj: dict[str, Any], want: int | None = None) -> bool:
    """Whether a Deployment rolled out: the controller saw the latest spec and ``want`` replicas
    (default: ``spec.replicas``) are ready."""
    spec, status, meta = obj.get("spec", {}), obj.get("status") or {}, obj.get("metadata", {})
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if generation is not None and (observed is None or observed < generation):
        return False
    if want is None:
        want = spec.get("replicas", 1)
    return all(
        (status.get(key) or 0) >= want for key in ("updatedReplicas", "readyReplicas", "availableReplicas")
    )


def daemon_set_ready(obj: dict[str, Any]) -> bool:
    """Whether the controller has seen the DaemonSet and it is ready on every node it targets.

    Zero targeted nodes counts as ready: the driver installer never schedules on nodes whose
    driver GKE installs, and a GPU pool at zero nodes has none.
    """
    status, meta = obj.get("status") or {}, obj.get("metadata", {})
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if generation is not None and (observed is None or observed < generation):
        return False
    if "desiredNumberScheduled" not in status:  # not seen by the controller yet
        return False
    return int(status.get("numberReady") or 0) >= int(status["desiredNumberScheduled"] or 0)


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


def pod_endpoints(endpoints_obj: dict[str, Any]) -> list[Endpoint]:
    """One :class:`Endpoint` per ready pod behind a headless Service (its ``Endpoints`` object), by pod name."""
    found: dict[str, Endpoint] = {}
    for subset in endpoints_obj.get("subsets") or []:
        ports = {p.get("name"): int(p["port"]) for p in subset.get("ports") or []}
        for address in subset.get("addresses") or []:  # ready only: notReadyAddresses are left out
            ip = address["ip"]
            name = (address.get("targetRef") or {}).get("name") or ip
            found[name] = Endpoint(
                name=name,
                grpc=f"{ip}:{ports.get('grpc', GRPC_PORT)}",
                http=f"{ip}:{ports.get('http', HTTP_PORT)}",
                metrics=f"{ip}:{ports.get('metrics', METRICS_PORT)}",
            )
    return [found[name] for name in sorted(found)]


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
        load_balancer_timeout_s: on exit, how long to wait for each LoadBalancer Service to be
            gone (GKE deletes its forwarding rule first); the cluster must not go before.

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
        load_balancer_timeout_s: float = 600.0,
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
        self.load_balancer_timeout_s = load_balancer_timeout_s
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
        """Wait until every server is ready and reachable; return their endpoints.

        Raises:
            CapacityError: an event says GKE has no capacity for a pod (autoscaler ``FailedScaleUp``:
                "GCE out of resources" / "GCE quota exceeded"); the pods' events are in the message.
            OperationTimeout: not ready in time; the message holds each pod's events and the end of
                its Triton log (a model that does not load, an image that does not pull).
        """
        pending = {describe_manifest(m): m for m in self.manifests if m["kind"] in ("Deployment", "Service")}
        found: dict[str, list[Endpoint]] = {}

        def check() -> list[Endpoint] | None:
            for key, manifest in list(pending.items()):
                if self._is_ready(manifest, found):
                    del pending[key]
            if pending:
                return None
            return [e for name in self.spec.server_names() for e in found.get(name, [])]

        try:
            return poll_until(
                check,
                timeout_s=self.timeout_s if timeout_s is None else timeout_s,
                interval_s=self.poll_interval_s,
                what=f"rollout of {self.describe()}",
                describe=lambda: "waiting for " + ", ".join(sorted(pending)),
                stop=self.stop,
            )
        except OperationTimeout as exc:
            reports = pod_reports(
                self.api_client, self.spec.namespace, f"{DEPLOYMENT_LABEL}={self.spec.name}"
            )
            detail = "\n".join(r.render() for r in reports) or "no pods were created"
            capacity = capacity_event(reports)
            if capacity is not None:
                raise CapacityError(
                    f"{exc}: GKE has no capacity: {capacity[1]}\n{detail}", kind=capacity[0]
                ) from exc
            raise OperationTimeout(f"{exc}\n{detail}") from exc

    def _is_ready(self, manifest: dict[str, Any], found: dict[str, list[Endpoint]]) -> bool:
        name = manifest["metadata"]["name"]
        auto = self.spec.autoscale
        if manifest["kind"] == "Deployment":
            live = read_manifest(self.api_client, manifest)
            return deployment_ready(live, auto.min_servers if auto is not None else None)
        if auto is not None:  # headless: one endpoint per ready pod
            found[name] = pod_endpoints(self._read_endpoints(name))
            return len(found[name]) >= auto.min_servers
        live = read_manifest(self.api_client, manifest)
        if service_address(live) is None:
            return False
        found[name] = [endpoint_of(name, live)]
        return True

    def _read_endpoints(self, name: str) -> dict[str, Any]:
        manifest = {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": name, "namespace": self.spec.namespace},
        }
        try:
            obj = client.CoreV1Api(self.api_client).read_namespaced_endpoints(name, self.spec.namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return {}
            raise _translate(exc, f"read {describe_manifest(manifest)}") from exc
        result: dict[str, Any] = self.api_client.sanitize_for_serialization(obj)
        return result

    def _delete(self) -> list[str]:
        leftovers = []
        for manifest in reversed(self._applied):
            try:
                retry_transient(
                    lambda m=manifest: delete_manifest(self.api_client, m, missing_ok=True),  # type: ignore[misc]
                    what=f"delete {describe_manifest(manifest)}",
                    deadline_s=max(self.poll_interval_s * 20, 30.0),
                    backoff_s=self.poll_interval_s,
                )
            except CloudbreakError as exc:
                leftovers.append(f"{describe_manifest(manifest)} ({exc})")
        leftovers += self._await_load_balancers()
        self._applied.clear()
        return leftovers

    def _await_load_balancers(self) -> list[str]:
        """Wait until every LoadBalancer Service is gone: GKE holds it (finalizer
        ``service.kubernetes.io/load-balancer-cleanup``) until its forwarding rule is deleted."""
        balancers = [
            m for m in self._applied if m["kind"] == "Service" and m["spec"].get("type") == "LoadBalancer"
        ]
        leftovers = []
        for manifest in balancers:

            def gone(m: dict[str, Any] = manifest) -> bool | None:
                try:
                    read_manifest(self.api_client, m)
                except ResourceNotFound:
                    return True
                except CloudbreakError as exc:  # a blip: ask again at the next poll
                    logger.info("waiting for %s to go: %s", describe_manifest(m), exc)
                return None

            try:
                poll_until(
                    gone,
                    timeout_s=self.load_balancer_timeout_s,
                    interval_s=self.poll_interval_s,
                    what=f"deletion of the load balancer of {describe_manifest(manifest)}",
                )
            except OperationTimeout as exc:
                leftovers.append(
                    f"{describe_manifest(manifest)} and its GCP forwarding rule and firewall rule ({exc}); "
                    "`hermes cloud gc` lists what GKE left"
                )
        return leftovers


def apply_gpu_driver_installer(
    api_client: client.ApiClient, *, wait: bool = True, timeout_s: float = 900.0, poll_interval_s: float = 5.0
) -> dict[str, Any]:
    """Apply the NVIDIA driver installer DaemonSet (kube-system) and optionally wait until it is ready.

    It stays installed with the cluster (it is deleted with it). It schedules only on GPU nodes
    whose driver GKE does not install (``gpu_driver="disabled"``): with GKE-managed drivers, or
    a GPU pool at zero nodes, it targets no node, and that counts as ready at once — the wait
    ends as soon as the DaemonSet controller has seen it.
    """
    manifest = gpu_driver_installer_manifest()
    live, _ = apply_manifest(api_client, manifest)
    if not wait:
        return live

    def check() -> dict[str, Any] | None:
        obj = read_manifest(api_client, manifest)
        return obj if daemon_set_ready(obj) else None

    ready = poll_until(
        check, timeout_s=timeout_s, interval_s=poll_interval_s, what="the NVIDIA driver installer DaemonSet"
    )
    if not (ready.get("status") or {}).get("desiredNumberScheduled"):
        logger.info(
            "the NVIDIA driver installer targets no node (GKE installs the drivers, or no GPU node yet)"
        )
    return ready


def delete_load_balancers(
    api_client: client.ApiClient, *, timeout_s: float = 600.0, poll_interval_s: float = 5.0
) -> list[str]:
    """Delete every LoadBalancer Service of a cluster and wait until each is gone.

    Run before deleting a GKE cluster: a cluster deleted with live LoadBalancer Services leaves
    their forwarding rules and firewall rules behind (billed, outside any cluster).

    Returns:
        ``namespace/name`` of each Service deleted.

    Raises:
        TeardownError: some were still there at the deadline (their forwarding rules too).
    """
    from hermes.cloudbreak.exceptions import TeardownError

    core = client.CoreV1Api(api_client)
    what = "list the LoadBalancer Services of the cluster"
    try:
        items = core.list_service_for_all_namespaces().items
    except Exception as exc:
        raise _translate(exc, what) from exc
    manifests: list[dict[str, Any]] = []
    for svc in items:
        if svc.spec is not None and svc.spec.type == "LoadBalancer" and svc.metadata is not None:
            meta = {"name": svc.metadata.name, "namespace": svc.metadata.namespace}
            manifests.append({"apiVersion": "v1", "kind": "Service", "metadata": meta})
    for manifest in manifests:
        delete_manifest(api_client, manifest, missing_ok=True)
    left = []
    for manifest in manifests:

        def gone(m: dict[str, Any] = manifest) -> bool | None:
            try:
                read_manifest(api_client, m)
            except ResourceNotFound:
                return True
            return None

        try:
            poll_until(
                gone,
                timeout_s=timeout_s,
                interval_s=poll_interval_s,
                what=f"deletion of {describe_manifest(manifest)}",
            )
        except OperationTimeout as exc:
            left.append(f"{describe_manifest(manifest)} and its forwarding rule ({exc})")
    if left:
        raise TeardownError("load balancers still there: " + "; ".join(left), leftovers=left)
    return [describe_manifest(m).split(" ", 1)[1] for m in manifests]
