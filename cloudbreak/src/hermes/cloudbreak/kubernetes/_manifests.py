"""Kubernetes manifests (plain dicts) for Triton servers and the NVIDIA driver installer.

Each server is one Deployment of one replica plus its own Service: one endpoint per server,
so the aeriel client can pin each stateful stream (sequence id) to the server that holds its
state — a load-balanced Service over several replicas would scatter a stream's requests.
(Elastic servers, :class:`Autoscale`, are one Deployment behind a *headless* Service: every
pod is still its own endpoint, found live from the Service's endpoints.)

Secure by default:

* private: ``ClusterIP`` Services (reachable inside the cluster and, for pod IPs, the VPC);
  ``InternalLoadBalancer`` for clients elsewhere in the VPC; an external ``LoadBalancer``
  only when asked, and then only with ``load_balancer_source_ranges``;
* model control off (Triton's ``--model-control-mode=none``: no load/unload over the network);
  ``explicit``/``poll`` need ``admin_token_secret`` and put the model-repository API behind
  Triton's own restricted-API header (``--http-restricted-api`` / ``--grpc-restricted-protocol``);
* startup, readiness and liveness probes with explicit timeouts, and a ``preStop`` drain;
* ``gs://`` read through GKE workload identity (a Kubernetes ServiceAccount bound to a Google
  service account) or a mounted key *file* (Triton reads ``GOOGLE_APPLICATION_CREDENTIALS``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from hermes.aeriel.control import ADMIN_TOKEN_HEADER
from hermes.cloudbreak._names import check_name
from hermes.cloudbreak._validation import check_accelerator
from hermes.cloudbreak.exceptions import CloudConfigError

__all__ = [
    "ADMIN_TOKEN_HEADER",
    "GRPC_PORT",
    "HTTP_PORT",
    "METRICS_PORT",
    "SERVER_LABEL",
    "Autoscale",
    "TritonSpec",
    "gpu_driver_installer_manifest",
    "triton_manifests",
]

HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002
SERVER_LABEL = "hermes.cloudbreak/server"
DEPLOYMENT_LABEL = "app.kubernetes.io/instance"
GCS_KEY_PATH = "/var/secrets/google/key.json"
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")
_CIDR = re.compile(r"^[0-9a-fA-F.:]+/[0-9]{1,3}$")
_SERVICE_TYPES = ("ClusterIP", "InternalLoadBalancer", "LoadBalancer", "NodePort")
_MODEL_CONTROL = ("none", "explicit", "poll")
_GSA = re.compile(r"^[a-z][-a-z0-9]{4,28}[a-z0-9]@[-a-z0-9.]+\.iam\.gserviceaccount\.com$")


@dataclass(frozen=True, kw_only=True)
class Autoscale:
    """Elastic servers: KEDA scales one Deployment on Triton's queue time.

    The servers are the pods of one Deployment behind a headless Service; each pod is its own
    endpoint (sequences stay pinned), and the client follows the membership live
    (:class:`~hermes.cloudbreak.kubernetes.EndpointWatcher`). KEDA (https://keda.sh, installable
    on any GKE cluster with ``helm install keda kedacore/keda -n keda --create-namespace``)
    reads the average queue time per request from Prometheus, as SuperSONIC does:
    ``increase(nv_inference_queue_duration_us) / increase(nv_inference_exec_count)``.

    Args:
        min_servers: the fewest servers (KEDA's ``minReplicaCount``; 0 scales to zero).
        max_servers: the most servers.
        queue_time_us: the target average queue time per request, in microseconds.
        prometheus: the Prometheus (or GKE Managed Prometheus frontend) URL that scrapes Triton.
        window: the rate window of the query (a PromQL duration).
        scale_down_stabilization_s: how long load must stay low before servers are removed
            (avoids the flapping dask-kubernetes#633 reports).
    """

    min_servers: int = 1
    max_servers: int = 4
    queue_time_us: int = 50_000
    prometheus: str = "http://prometheus-operated.monitoring.svc.cluster.local:9090"
    window: str = "1m"
    scale_down_stabilization_s: int = 300

    def __post_init__(self) -> None:
        if not 0 <= self.min_servers <= self.max_servers or self.max_servers < 1:
            raise CloudConfigError(
                "Autoscale needs 0 <= min_servers <= max_servers and max_servers >= 1, got "
                f"min_servers={self.min_servers}, max_servers={self.max_servers}"
            )
        if self.queue_time_us <= 0:
            raise CloudConfigError(f"Autoscale.queue_time_us must be > 0, got {self.queue_time_us}")
        if not self.prometheus.startswith(("http://", "https://")):
            raise CloudConfigError(f"Autoscale.prometheus must be an http(s) URL, got {self.prometheus!r}")

    def query(self, deployment: str, namespace: str) -> str:
        """The PromQL KEDA evaluates: average queue time per request over the window, in µs."""
        sel = f'namespace="{namespace}",pod=~"{deployment}-.*"'
        w = self.window
        return (
            f"sum(increase(nv_inference_queue_duration_us{{{sel}}}[{w}])) / "
            f"clamp_min(sum(increase(nv_inference_exec_count{{{sel}}}[{w}])), 1)"
        )


@dataclass(frozen=True, kw_only=True)
class TritonSpec:
    """A set of Triton servers on Kubernetes, one Deployment and one Service each (see the module).

    Args:
        name: the base name; servers are ``<name>-0`` … ``<name>-<servers-1>``.
        model_repository: where Triton reads models: ``gs://bucket/path`` or ``s3://bucket/path``.
        servers: how many servers (each its own endpoint); with ``autoscale``, ignored.
        image: the Triton container image.
        gpus: GPUs per server (``nvidia.com/gpu`` limit); 0 for CPU-only.
        accelerator_type: pins pods to GKE nodes with this GPU (``nvidia-tesla-t4``); ``None`` for any.
        server_args: extra ``tritonserver`` arguments (not the repository, model control or restricted APIs).
        cpu: CPU request per server (a Kubernetes quantity).
        memory: memory request and limit per server (a Kubernetes quantity).
        shm_size: the size of ``/dev/shm`` (a memory-backed emptyDir) for shared-memory I/O and
            the python backend (at least 64Mi per model instance).
        namespace: the Kubernetes namespace.
        service_type: ``ClusterIP`` (default: private), ``InternalLoadBalancer`` (a GKE internal
            passthrough load balancer: reachable from the VPC only), ``LoadBalancer`` (external:
            needs ``load_balancer_source_ranges``) or ``NodePort``.
        load_balancer_source_ranges: the CIDRs an external ``LoadBalancer`` accepts (your site's
            addresses); ``("0.0.0.0/0",)`` opens it to the internet, and must be written out.
        model_control: ``"none"`` (no load/unload over the network), ``"explicit"`` or ``"poll"``.
        admin_token_secret: a Secret with a ``token`` key; with model control on, model-repository
            calls must carry the token: over HTTP in the header ``hermes-admin-token``, over gRPC in
            ``triton-grpc-protocol-hermes-admin-token`` (Triton's prefix for gRPC), which
            ``hermes.aeriel.control.ControlClient(admin_token=...)`` and ``ModelManager`` send.
        service_account: the pod's Kubernetes ServiceAccount (e.g. bound to a Google service account).
        workload_identity: a Google service account email; a ServiceAccount ``<name>-triton``
            annotated for GKE workload identity is created and used (gs:// without keys).
        gcs_key_secret: a Secret with a ``key.json`` service-account key, mounted as a file and
            named by ``GOOGLE_APPLICATION_CREDENTIALS`` (when workload identity is not available).
        env: extra environment variables of the server container.
        credentials_secret: a Secret whose keys become environment variables (e.g. ``AWS_ACCESS_KEY_ID``,
            ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION`` for s3://).
        startup_timeout_s: how long a server may take to load its models before it is restarted.
        readiness_period_s: seconds between readiness probes.
        probe_timeout_s: how long one probe may take (the Kubernetes default, 1 s, is too short
            for a busy server).
        drain_s: on stop, the pod leaves the Service first and keeps serving this long (``preStop``),
            then Triton gets ``--exit-timeout-secs=drain_s`` to finish what is in flight.
        autoscale: elastic servers (see :class:`Autoscale`); ``None`` for a fixed number.
    """

    name: str
    model_repository: str
    servers: int = 1
    image: str = "nvcr.io/nvidia/tritonserver:24.08-py3"
    gpus: int = 1
    accelerator_type: str | None = None
    server_args: tuple[str, ...] = ()
    cpu: str = "4"
    memory: str = "16Gi"
    shm_size: str = "1Gi"
    namespace: str = "default"
    service_type: str = "ClusterIP"
    load_balancer_source_ranges: tuple[str, ...] = ()
    model_control: str = "none"
    admin_token_secret: str | None = None
    service_account: str | None = None
    workload_identity: str | None = None
    gcs_key_secret: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    credentials_secret: str | None = None
    startup_timeout_s: int = 600
    readiness_period_s: int = 5
    probe_timeout_s: int = 5
    drain_s: int = 30
    autoscale: Autoscale | None = None

    def __post_init__(self) -> None:
        check_accelerator("TritonSpec", self.accelerator_type)
        check_name("TritonSpec", "name", self.name, max_length=50)
        check_name("TritonSpec", "namespace", self.namespace, max_length=63)
        if not self.model_repository.startswith(("gs://", "s3://")) or len(self.model_repository) <= 5:
            raise CloudConfigError(
                f"TritonSpec.model_repository must be 'gs://bucket/path' or 's3://bucket/path', "
                f"got {self.model_repository!r}"
            )
        if self.servers < 1:
            raise CloudConfigError(f"TritonSpec.servers must be >= 1, got {self.servers}")
        if self.gpus < 0:
            raise CloudConfigError(f"TritonSpec.gpus must be >= 0, got {self.gpus}")
        for key in ("cpu", "memory", "shm_size"):
            value = getattr(self, key)
            if not isinstance(value, str) or not _QUANTITY.match(value):
                raise CloudConfigError(
                    f"TritonSpec.{key} must be a Kubernetes quantity like '4', '500m' or "
                    f"'16Gi', got {value!r}"
                )
        for key in ("startup_timeout_s", "readiness_period_s", "probe_timeout_s", "drain_s"):
            if getattr(self, key) < 1:
                raise CloudConfigError(f"TritonSpec.{key} must be >= 1 second, got {getattr(self, key)}")
        self._check_exposure()
        self._check_access()
        if isinstance(self.server_args, str):
            raise CloudConfigError(
                f"TritonSpec.server_args must be a tuple of '--flag=value' strings, got the string "
                f"{self.server_args!r}; write server_args=({self.server_args!r},)"
            )
        object.__setattr__(self, "server_args", _checked_args(tuple(self.server_args)))
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))

    def _check_exposure(self) -> None:
        if self.service_type not in _SERVICE_TYPES:
            raise CloudConfigError(
                f"TritonSpec.service_type must be one of {_SERVICE_TYPES}, got {self.service_type!r}"
            )
        ranges = tuple(self.load_balancer_source_ranges)
        object.__setattr__(self, "load_balancer_source_ranges", ranges)
        if self.service_type == "LoadBalancer" and not ranges:
            raise CloudConfigError(
                "TritonSpec.service_type='LoadBalancer' exposes the servers outside the VPC; give "
                "load_balancer_source_ranges (your site's CIDRs, or '0.0.0.0/0' to open it to everyone), "
                "or use 'InternalLoadBalancer' / 'ClusterIP'"
            )
        if ranges and self.service_type not in ("LoadBalancer", "InternalLoadBalancer"):
            raise CloudConfigError(
                f"TritonSpec.load_balancer_source_ranges needs a load balancer, but service_type is {self.service_type!r}"
            )
        bad = [r for r in ranges if not _CIDR.match(r)]
        if bad:
            raise CloudConfigError(
                f"TritonSpec.load_balancer_source_ranges must be CIDRs like '203.0.113.0/24', got {bad}"
            )
        if self.autoscale is not None and self.service_type != "ClusterIP":
            raise CloudConfigError(
                "TritonSpec.autoscale serves every pod as its own endpoint through a headless Service; "
                f"service_type must be 'ClusterIP', got {self.service_type!r}"
            )

    def _check_access(self) -> None:
        if self.model_control not in _MODEL_CONTROL:
            raise CloudConfigError(
                f"TritonSpec.model_control must be one of {_MODEL_CONTROL}, got {self.model_control!r}"
            )
        if self.model_control != "none" and not self.admin_token_secret:
            raise CloudConfigError(
                f"TritonSpec.model_control={self.model_control!r} lets clients load and unload models; give "
                "admin_token_secret (a Secret with a 'token' key) so only holders of the token can"
            )
        if self.workload_identity is not None and not _GSA.match(self.workload_identity):
            raise CloudConfigError(
                "TritonSpec.workload_identity must be a Google service account email "
                f"(name@project.iam.gserviceaccount.com), got {self.workload_identity!r}"
            )
        if self.workload_identity and self.service_account:
            raise CloudConfigError(
                "TritonSpec.workload_identity creates the ServiceAccount; do not also set service_account"
            )
        if self.gcs_key_secret and self.workload_identity:
            raise CloudConfigError(
                "TritonSpec.gcs_key_secret and workload_identity both give gs:// credentials; choose one"
            )

    def server_names(self) -> list[str]:
        """The name of each server: ``<name>-<i>`` (with ``autoscale``: the Deployment ``<name>``)."""
        if self.autoscale is not None:
            return [self.name]
        return [f"{self.name}-{i}" for i in range(self.servers)]

    @property
    def pod_service_account(self) -> str | None:
        """The ServiceAccount the pods run as."""
        return f"{self.name}-triton" if self.workload_identity else self.service_account


def _checked_args(args: tuple[str, ...]) -> tuple[str, ...]:
    owned = {
        "--model-repository": "model_repository",
        "--model-store": "model_repository",
        "--model-control-mode": "model_control",
        "--http-restricted-api": "model_control and admin_token_secret",
        "--grpc-restricted-protocol": "model_control and admin_token_secret",
        "--exit-timeout-secs": "drain_s",
    }
    for arg in args:
        if not isinstance(arg, str) or not arg.startswith("--"):
            raise CloudConfigError(f"TritonSpec.server_args must be '--flag=value' strings, got {arg!r}")
        flag = arg.split("=", 1)[0]
        if flag in owned:
            raise CloudConfigError(f"TritonSpec.server_args must not set {flag} ({arg!r}); use {owned[flag]}")
    return args


def _labels(spec: TritonSpec, server: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "tritonserver",
        DEPLOYMENT_LABEL: spec.name,
        "app.kubernetes.io/managed-by": "hermes-cloudbreak",
        SERVER_LABEL: server,
    }


def _args(spec: TritonSpec) -> list[str]:
    args = [
        f"--model-repository={spec.model_repository}",
        f"--model-control-mode={spec.model_control}",
        f"--exit-timeout-secs={spec.drain_s}",
    ]
    if spec.model_control != "none":  # Kubernetes expands $(VAR) from the env: the token stays in the Secret
        args += [
            f"--http-restricted-api=model-repository:{ADMIN_TOKEN_HEADER}=$(HERMES_ADMIN_TOKEN)",
            f"--grpc-restricted-protocol=model-repository:{ADMIN_TOKEN_HEADER}=$(HERMES_ADMIN_TOKEN)",
        ]
    return [*args, *spec.server_args]


def _probes(spec: TritonSpec) -> dict[str, Any]:
    period = 10
    return {
        # loading models from gs:// can take minutes: liveness waits until startup succeeded
        "startupProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": period,
            "timeoutSeconds": spec.probe_timeout_s,
            "failureThreshold": max(1, -(-spec.startup_timeout_s // period)),
        },
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": spec.readiness_period_s,
            "timeoutSeconds": spec.probe_timeout_s,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": period,
            "timeoutSeconds": spec.probe_timeout_s,
            "failureThreshold": 3,
        },
        # leave the Service's endpoints first, keep serving what is in flight; then SIGTERM
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(spec.drain_s)]}}},
    }


def _env(spec: TritonSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
    if spec.model_control != "none":
        env.append(
            {
                "name": "HERMES_ADMIN_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": spec.admin_token_secret, "key": "token"}},
            }
        )
    if spec.gcs_key_secret:
        env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": GCS_KEY_PATH})
    return env


def _container(spec: TritonSpec) -> dict[str, Any]:
    limits: dict[str, Any] = {"memory": spec.memory}
    if spec.gpus:
        limits["nvidia.com/gpu"] = str(spec.gpus)  # quantities are strings
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    if spec.gcs_key_secret:
        mounts.append({"name": "gcs-key", "mountPath": GCS_KEY_PATH.rsplit("/", 1)[0], "readOnly": True})
    container: dict[str, Any] = {
        "name": "tritonserver",
        "image": spec.image,
        "command": ["tritonserver"],
        "args": _args(spec),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        **_probes(spec),
        "resources": {"requests": {"cpu": spec.cpu, "memory": spec.memory}, "limits": limits},
        "volumeMounts": mounts,
    }
    env = _env(spec)
    if env:
        container["env"] = env
    if spec.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": spec.credentials_secret}}]
    return container


def _pod(spec: TritonSpec) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}}
    ]
    if spec.gcs_key_secret:
        volumes.append(
            {
                "name": "gcs-key",
                "secret": {
                    "secretName": spec.gcs_key_secret,
                    "items": [{"key": "key.json", "path": "key.json"}],
                },
            }
        )
    pod: dict[str, Any] = {
        "containers": [_container(spec)],
        "volumes": volumes,
        "terminationGracePeriodSeconds": 2 * spec.drain_s + 10,  # preStop + Triton's exit timeout
    }
    account = spec.pod_service_account
    if account:
        pod["serviceAccountName"] = account
    else:
        pod["automountServiceAccountToken"] = False  # Triton needs no Kubernetes API access
    if spec.gpus:
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    node_selector = {}
    if spec.accelerator_type:
        node_selector["cloud.google.com/gke-accelerator"] = spec.accelerator_type
    if spec.workload_identity:
        node_selector["iam.gke.io/gke-metadata-server-enabled"] = "true"
    if node_selector:
        pod["nodeSelector"] = node_selector
    return pod


def _deployment(spec: TritonSpec, server: str) -> dict[str, Any]:
    labels = _labels(spec, server)
    replicas = spec.autoscale.min_servers if spec.autoscale is not None else 1
    # one pod per server (GPUs, sequence state); elastic pods are replaced one by one
    strategy = {"type": "Recreate"} if spec.autoscale is None else {"type": "RollingUpdate"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": server, "namespace": spec.namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {SERVER_LABEL: server}},
            "strategy": strategy,
            "template": {"metadata": {"labels": dict(labels)}, "spec": _pod(spec)},
        },
    }


def _service(spec: TritonSpec, server: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": server, "namespace": spec.namespace, "labels": _labels(spec, server)}
    kind = "LoadBalancer" if spec.service_type == "InternalLoadBalancer" else spec.service_type
    body: dict[str, Any] = {
        "type": kind,
        "selector": {SERVER_LABEL: server},
        "ports": [
            {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
            {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
            {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
        ],
    }
    if spec.service_type == "InternalLoadBalancer":
        metadata["annotations"] = {"networking.gke.io/load-balancer-type": "Internal"}
    if spec.load_balancer_source_ranges:
        body["loadBalancerSourceRanges"] = list(spec.load_balancer_source_ranges)
    if spec.autoscale is not None:
        body["clusterIP"] = "None"  # headless: each pod is its own endpoint
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": body}


def _service_account(spec: TritonSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": f"{spec.name}-triton",
            "namespace": spec.namespace,
            "labels": {"app.kubernetes.io/managed-by": "hermes-cloudbreak", DEPLOYMENT_LABEL: spec.name},
            "annotations": {"iam.gke.io/gcp-service-account": spec.workload_identity},
        },
    }


def _scaled_object(spec: TritonSpec, auto: Autoscale) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": _labels(spec, spec.name)},
        "spec": {
            "scaleTargetRef": {"name": spec.name},
            "minReplicaCount": auto.min_servers,
            "maxReplicaCount": auto.max_servers,
            "pollingInterval": 15,
            "cooldownPeriod": auto.scale_down_stabilization_s,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleDown": {
                            "stabilizationWindowSeconds": auto.scale_down_stabilization_s,
                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                        }
                    }
                }
            },
            "triggers": [
                {
                    "type": "prometheus",
                    "metricType": "AverageValue",
                    "metadata": {
                        "serverAddress": auto.prometheus,
                        "query": auto.query(spec.name, spec.namespace),
                        "threshold": str(auto.queue_time_us),
                    },
                }
            ],
        },
    }


def triton_manifests(spec: TritonSpec) -> list[dict[str, Any]]:
    """Every object of the deployment, in the order they are applied.

    The ServiceAccount (workload identity) first, then the Deployment and Service of every
    server; with ``autoscale``, one Deployment, its headless Service and a KEDA ScaledObject.
    """
    out: list[dict[str, Any]] = [_service_account(spec)] if spec.workload_identity else []
    for server in spec.server_names():
        out += [_deployment(spec, server), _service(spec, server)]
    if spec.autoscale is not None:
        out.append(_scaled_object(spec, spec.autoscale))
    return out


_COS_HOST_PATHS = {
    "dev": "/dev",
    "vulkan-icd-mount": "/home/kubernetes/bin/nvidia/vulkan/icd.d",
    "nvidia-install-dir-host": "/home/kubernetes/bin/nvidia",
    "root-mount": "/",
    "cos-tools": "/var/lib/cos-tools",
    "nvidia-config": "/etc/nvidia",
}
_COS_MOUNTS = {
    "nvidia-install-dir-host": "/usr/local/nvidia",
    "vulkan-icd-mount": "/etc/vulkan/icd.d",
    "dev": "/dev",
    "root-mount": "/root",
    "cos-tools": "/build/cos-tools",
    "nvidia-config": "/etc/nvidia",
}
_COS_INSTALLER_ENV = {
    "NVIDIA_INSTALL_DIR_HOST": "/home/kubernetes/bin/nvidia",
    "NVIDIA_INSTALL_DIR_CONTAINER": "/usr/local/nvidia",
    "VULKAN_ICD_DIR_HOST": "/home/kubernetes/bin/nvidia/vulkan/icd.d",
    "VULKAN_ICD_DIR_CONTAINER": "/etc/vulkan/icd.d",
    "ROOT_MOUNT_DIR": "/root",
    "COS_TOOLS_DIR_HOST": "/var/lib/cos-tools",
    "COS_TOOLS_DIR_CONTAINER": "/build/cos-tools",
}


def gpu_driver_installer_manifest(
    image: str = "cos-nvidia-installer:fixed", pause_image: str = "gcr.io/google-containers/pause:2.0"
) -> dict[str, Any]:
    """The NVIDIA driver installer DaemonSet for GKE GPU nodes on Container-Optimized OS.

    Written after GoogleCloudPlatform/container-engine-accelerators
    ``nvidia-driver-installer/cos/daemonset-preloaded.yaml``: it runs on nodes labelled
    ``cloud.google.com/gke-accelerator`` that GKE does not already manage drivers for
    (no ``cloud.google.com/gke-gpu-driver-version`` label). Node pools created with
    ``NodePoolSpec(gpu_driver="default")`` get drivers from GKE and do not need it.
    """
    labels = {"k8s-app": "nvidia-driver-installer"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "nvidia-driver-installer", "namespace": "kube-system", "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": {"name": "nvidia-driver-installer", **labels}},
                "spec": _driver_installer_pod(image, pause_image),
            },
        },
    }


def _driver_installer_pod(image: str, pause_image: str) -> dict[str, Any]:
    """The installer's pod: privileged init container on GPU nodes whose drivers GKE does not manage."""
    unmanaged_gpu_node = {
        "matchExpressions": [
            {"key": "cloud.google.com/gke-accelerator", "operator": "Exists"},
            {"key": "cloud.google.com/gke-gpu-driver-version", "operator": "DoesNotExist"},
        ]
    }
    return {
        "priorityClassName": "system-node-critical",
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [unmanaged_gpu_node]}
            }
        },
        "tolerations": [{"operator": "Exists"}],
        "hostNetwork": True,
        "hostPID": True,
        "volumes": [{"name": n, "hostPath": {"path": p}} for n, p in _COS_HOST_PATHS.items()],
        "initContainers": [
            {
                "name": "nvidia-driver-installer",
                "image": image,
                "imagePullPolicy": "Never",
                "resources": {"requests": {"cpu": "150m"}},
                "securityContext": {"privileged": True},
                "env": [{"name": k, "value": v} for k, v in _COS_INSTALLER_ENV.items()],
                "volumeMounts": [{"name": n, "mountPath": p} for n, p in _COS_MOUNTS.items()],
            }
        ],
        "containers": [{"name": "pause", "image": pause_image}],
    }
