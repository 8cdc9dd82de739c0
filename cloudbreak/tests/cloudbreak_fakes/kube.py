"""kmock's KubernetesEmulator in its own event-loop thread, and a fake controller.

kmock stores objects and answers the Kubernetes REST API, but runs no controllers: the
:class:`FakeController` plays them by patching ``/status`` (Deployments ready, load balancers
given an IP, DaemonSets scheduled) through the real ``kubernetes`` client.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp.test_utils
import kmock
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client


def self_signed_certificate(directory: Path) -> tuple[bytes, Path, Path]:
    """A CA-flagged self-signed certificate for 127.0.0.1: ``(pem, cert_file, key_file)``.

    It plays GKE's cluster CA and the API server's certificate at once.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-kube-apiserver")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file, key_file = directory / "apiserver.crt", directory / "apiserver.key"
    cert_file.write_bytes(pem)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return pem, cert_file, key_file


def _tls_server_class(context: ssl.SSLContext) -> type[aiohttp.test_utils.RawTestServer]:
    class TLSServer(aiohttp.test_utils.RawTestServer):
        async def start_server(self, loop: Any = None, **kwargs: Any) -> None:
            await super().start_server(loop=loop, ssl=context, **kwargs)

    return TLSServer


@contextmanager
def kube_emulator(tls: ssl.SSLContext | None = None) -> Iterator[tuple[Any, str]]:
    """Run a KubernetesEmulator on 127.0.0.1 (over HTTPS with ``tls``); yields ``(emulator, url)``."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}
    server_kwargs: dict[str, Any] = {"server_cls": _tls_server_class(tls)} if tls is not None else {}

    async def main() -> None:
        box["stop"] = asyncio.Event()
        async with kmock.KubernetesEmulator() as emu, kmock.Server(emu, **server_kwargs) as srv:
            for resource in (
                "apps/v1/deployments",
                "apps/v1/daemonsets",
                "v1/services",
                "v1/serviceaccounts",
                "v1/pods",
                "v1/events",
                "v1/endpoints",
                "keda.sh/v1alpha1/scaledobjects",
            ):
                emu.resources[resource] = {}
            box.update(emu=emu, url=str(srv.url).rstrip("/"))
            ready.set()
            await box["stop"].wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="kmock", daemon=True)
    thread.start()
    try:
        assert ready.wait(10), "kmock did not start"
        yield box["emu"], box["url"]
    finally:
        loop.call_soon_threadsafe(box["stop"].set)
        thread.join(10)
        loop.close()


def api_client_for(url: str, *, ca_file: Path | None = None) -> client.ApiClient:
    """A real kubernetes ApiClient on the emulator (trusting ``ca_file`` over HTTPS)."""
    config = client.Configuration()
    config.host = url
    if ca_file is not None:
        config.ssl_ca_cert = str(ca_file)
    return client.ApiClient(config)


LB_FINALIZER = "service.kubernetes.io/load-balancer-cleanup"


class FakeController(threading.Thread):
    """Marks Deployments ready, gives LoadBalancer Services an ingress IP, schedules DaemonSets.

    Like GKE's service controller, it puts the finalizer ``service.kubernetes.io/load-balancer-cleanup``
    on a LoadBalancer Service and removes it ``lb_cleanup_polls`` polls after the Service was deleted
    (the forwarding rule is gone), so the Service lingers until then.

    Args:
        url: the emulator's URL.
        namespace: where to look for Deployments and Services.
        lb_ip: the ingress address load balancers get (each Service its own: ``lb_ip`` with
            the last number increased per Service, unless ``same_ip``).
        enabled: clear it to stop marking things ready (a rollout that never finishes).
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "default",
        lb_ip: str = "10.0.0.10",
        interval_s: float = 0.02,
        ca_file: Path | None = None,
    ):
        super().__init__(name="fake-controller", daemon=True)
        self.api = api_client_for(url, ca_file=ca_file)
        self.namespace = namespace
        self.lb_ip = lb_ip
        self.interval_s = interval_s
        self.enabled = threading.Event()
        self.enabled.set()
        self.stopped = threading.Event()
        self.ips: dict[str, str] = {}
        self.lb_cleanup_polls = 5
        self.daemonset_nodes = 2  # nodes the driver installer targets (0: GKE installs the drivers)
        self._cleanup: dict[str, int] = {}

    def run(self) -> None:
        apps, core = client.AppsV1Api(self.api), client.CoreV1Api(self.api)
        while not self.stopped.wait(self.interval_s):
            if not self.enabled.is_set():
                continue
            for dep in apps.list_namespaced_deployment(self.namespace).items:
                if (dep.status and dep.status.ready_replicas) != dep.spec.replicas:
                    n = dep.spec.replicas
                    apps.patch_namespaced_deployment_status(
                        dep.metadata.name,
                        self.namespace,
                        {
                            "status": {
                                "observedGeneration": 1,
                                "replicas": n,
                                "updatedReplicas": n,
                                "readyReplicas": n,
                                "availableReplicas": n,
                            }
                        },
                    )
            for svc in core.list_namespaced_service(self.namespace).items:
                if svc.spec.type != "LoadBalancer":
                    continue
                if svc.metadata.deletion_timestamp is not None:
                    self._clean_up(core, svc.metadata.name)
                    continue
                if not svc.metadata.finalizers:
                    core.patch_namespaced_service(
                        svc.metadata.name, self.namespace, {"metadata": {"finalizers": [LB_FINALIZER]}}
                    )
                if not (svc.status and svc.status.load_balancer and svc.status.load_balancer.ingress):
                    prefix, last = self.lb_ip.rsplit(".", 1)
                    ip = self.ips.setdefault(svc.metadata.name, f"{prefix}.{int(last) + len(self.ips)}")
                    core.patch_namespaced_service_status(
                        svc.metadata.name,
                        self.namespace,
                        {"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}},
                    )
            self._headless_endpoints(core, apps)
            for ds in apps.list_namespaced_daemon_set("kube-system").items:
                if not (ds.status and ds.status.desired_number_scheduled is not None):
                    apps.patch_namespaced_daemon_set_status(
                        ds.metadata.name,
                        "kube-system",
                        {
                            "status": {
                                "desiredNumberScheduled": self.daemonset_nodes,
                                "currentNumberScheduled": self.daemonset_nodes,
                                "numberReady": self.daemonset_nodes,
                                "numberMisscheduled": 0,
                            }
                        },
                    )

    def _headless_endpoints(self, core: client.CoreV1Api, apps: client.AppsV1Api) -> None:
        """The endpoints controller for headless Services: one ready address per replica of the Deployment."""
        for svc in core.list_namespaced_service(self.namespace).items:
            if svc.spec.cluster_ip != "None" or svc.metadata.deletion_timestamp is not None:
                continue
            try:
                dep = apps.read_namespaced_deployment(svc.metadata.name, self.namespace)
            except client.ApiException:
                continue
            ready = (dep.status.ready_replicas if dep.status else 0) or 0
            addresses = [
                {
                    "ip": f"10.8.0.{10 + i}",
                    "targetRef": {"kind": "Pod", "name": f"{svc.metadata.name}-7d4b9-{i}"},
                }
                for i in range(ready)
            ]
            ports = [{"name": p.name, "port": p.port, "protocol": "TCP"} for p in svc.spec.ports]
            body = {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": svc.metadata.name, "namespace": self.namespace},
                "subsets": [{"addresses": addresses, "ports": ports}] if addresses else [],
            }
            try:  # kmock has no PUT: read, then a merge patch (lists are replaced whole)
                core.read_namespaced_endpoints(svc.metadata.name, self.namespace)
            except client.ApiException:
                core.create_namespaced_endpoints(self.namespace, body)
            else:
                core.patch_namespaced_endpoints(
                    svc.metadata.name, self.namespace, {"subsets": body["subsets"]}
                )

    def _clean_up(self, core: client.CoreV1Api, name: str) -> None:
        left = self._cleanup.setdefault(name, self.lb_cleanup_polls)
        if left > 0:
            self._cleanup[name] = left - 1
            return
        core.patch_namespaced_service(name, self.namespace, {"metadata": {"finalizers": []}})
        self._cleanup.pop(name)

    def close(self) -> None:
        self.stopped.set()
        self.join(10)
        self.api.close()
