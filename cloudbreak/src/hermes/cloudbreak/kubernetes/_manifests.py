"""Kubernetes manifests (plain dicts) for Triton servers and the NVIDIA driver installer.

Each server is one Deployment of one replica plus its own Service: one endpoint per server,
so the aeriel client can pin each stateful stream (sequence id) to the server that holds its
state — a load-balanced Service over several replicas would scatter a stream's requests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from hermes.cloudbreak._names import check_name
from hermes.cloudbreak._validation import check_accelerator
from hermes.cloudbreak.exceptions import CloudConfigError

__all__ = [
    "GRPC_PORT",
    "HTTP_PORT",
    "METRICS_PORT",
    "SERVER_LABEL",
    "TritonSpec",
    "gpu_driver_installer_manifest",
    "triton_manifests",
]

HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002
SERVER_LABEL = "hermes.cloudbreak/server"
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")
_SERVICE_TYPES = ("LoadBalancer", "ClusterIP", "NodePort")


@dataclass(frozen=True, kw_only=True)
class TritonSpec:
    """A set of Triton servers on Kubernetes, one Deployment and one Service each.

    Args:
        name: the base name; servers are ``<name>-0`` … ``<name>-<servers-1>``.
        model_repository: where Triton reads models: ``gs://bucket/path`` or ``s3://bucket/path``.
        servers: how many servers (each its own endpoint).
        image: the Triton container image.
        gpus: GPUs per server (``nvidia.com/gpu`` limit); 0 for CPU-only.
        accelerator_type: pins pods to GKE nodes with this GPU (``nvidia-tesla-t4``); ``None`` for any.
        server_args: extra ``tritonserver`` arguments, e.g. ``("--model-control-mode=explicit",)``.
        cpu: CPU request per server (a Kubernetes quantity).
        memory: memory request and limit per server (a Kubernetes quantity).
        shm_size: the size of ``/dev/shm`` (a memory-backed emptyDir) for shared-memory I/O and
            the python backend (at least 64Mi per model instance).
        namespace: the Kubernetes namespace.
        service_type: ``LoadBalancer`` (reachable from outside the cluster), ``ClusterIP`` or ``NodePort``.
        env: extra environment variables of the server container.
        credentials_secret: a Secret whose keys become environment variables (e.g. ``AWS_ACCESS_KEY_ID``,
            ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION`` for s3://).
        readiness_initial_delay_s: seconds before the first readiness probe.
        readiness_period_s: seconds between readiness probes.
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
    service_type: str = "LoadBalancer"
    env: Mapping[str, str] = field(default_factory=dict)
    credentials_secret: str | None = None
    readiness_initial_delay_s: int = 10
    readiness_period_s: int = 5

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
        if self.service_type not in _SERVICE_TYPES:
            raise CloudConfigError(
                f"TritonSpec.service_type must be one of {_SERVICE_TYPES}, got {self.service_type!r}"
            )
        if isinstance(self.server_args, str):
            raise CloudConfigError(
                f"TritonSpec.server_args must be a tuple of '--flag=value' strings, got the string "
                f"{self.server_args!r}; write server_args=({self.server_args!r},)"
            )
        args = tuple(self.server_args)
        for arg in args:
            if not isinstance(arg, str) or not arg.startswith("--"):
                raise CloudConfigError(f"TritonSpec.server_args must be '--flag=value' strings, got {arg!r}")
            if arg.startswith(("--model-repository", "--model-store")):
                raise CloudConfigError(
                    f"TritonSpec.server_args must not set the repository ({arg!r}); use model_repository"
                )
        object.__setattr__(self, "server_args", args)
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))

    def server_names(self) -> list[str]:
        """The name of each server: ``<name>-<i>``."""
        return [f"{self.name}-{i}" for i in range(self.servers)]


def _labels(spec: TritonSpec, server: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "tritonserver",
        "app.kubernetes.io/instance": spec.name,
        "app.kubernetes.io/managed-by": "hermes-cloudbreak",
        SERVER_LABEL: server,
    }


def _deployment(spec: TritonSpec, server: str) -> dict[str, Any]:
    labels = _labels(spec, server)
    limits: dict[str, Any] = {"memory": spec.memory}
    if spec.gpus:
        limits["nvidia.com/gpu"] = str(spec.gpus)  # quantities are strings
    container: dict[str, Any] = {
        "name": "tritonserver",
        "image": spec.image,
        "command": ["tritonserver"],
        "args": [f"--model-repository={spec.model_repository}", *spec.server_args],
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "initialDelaySeconds": spec.readiness_initial_delay_s,
            "periodSeconds": spec.readiness_period_s,
            "failureThreshold": 3,
        },
        "resources": {"requests": {"cpu": spec.cpu, "memory": spec.memory}, "limits": limits},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    if spec.env:
        container["env"] = [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
    if spec.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": spec.credentials_secret}}]
    pod: dict[str, Any] = {
        "containers": [container],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}}],
    }
    if spec.gpus:
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    if spec.accelerator_type:
        pod["nodeSelector"] = {"cloud.google.com/gke-accelerator": spec.accelerator_type}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": server, "namespace": spec.namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {SERVER_LABEL: server}},
            "strategy": {"type": "Recreate"},  # never two pods of one server (GPUs, sequence state)
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
        },
    }


def _service(spec: TritonSpec, server: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": server, "namespace": spec.namespace, "labels": _labels(spec, server)},
        "spec": {
            "type": spec.service_type,
            "selector": {SERVER_LABEL: server},
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def triton_manifests(spec: TritonSpec) -> list[dict[str, Any]]:
    """The Deployment and Service of every server, in the order they are applied."""
    out: list[dict[str, Any]] = []
    for server in spec.server_names():
        out += [_deployment(spec, server), _service(spec, server)]
    return out


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
    host_paths = {
        "dev": "/dev",
        "vulkan-icd-mount": "/home/kubernetes/bin/nvidia/vulkan/icd.d",
        "nvidia-install-dir-host": "/home/kubernetes/bin/nvidia",
        "root-mount": "/",
        "cos-tools": "/var/lib/cos-tools",
        "nvidia-config": "/etc/nvidia",
    }
    mounts = {
        "nvidia-install-dir-host": "/usr/local/nvidia",
        "vulkan-icd-mount": "/etc/vulkan/icd.d",
        "dev": "/dev",
        "root-mount": "/root",
        "cos-tools": "/build/cos-tools",
        "nvidia-config": "/etc/nvidia",
    }
    env = {
        "NVIDIA_INSTALL_DIR_HOST": "/home/kubernetes/bin/nvidia",
        "NVIDIA_INSTALL_DIR_CONTAINER": "/usr/local/nvidia",
        "VULKAN_ICD_DIR_HOST": "/home/kubernetes/bin/nvidia/vulkan/icd.d",
        "VULKAN_ICD_DIR_CONTAINER": "/etc/vulkan/icd.d",
        "ROOT_MOUNT_DIR": "/root",
        "COS_TOOLS_DIR_HOST": "/var/lib/cos-tools",
        "COS_TOOLS_DIR_CONTAINER": "/build/cos-tools",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "nvidia-driver-installer", "namespace": "kube-system", "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": {"name": "nvidia-driver-installer", **labels}},
                "spec": {
                    "priorityClassName": "system-node-critical",
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {"key": "cloud.google.com/gke-accelerator", "operator": "Exists"},
                                            {
                                                "key": "cloud.google.com/gke-gpu-driver-version",
                                                "operator": "DoesNotExist",
                                            },
                                        ]
                                    }
                                ]
                            }
                        }
                    },
                    "tolerations": [{"operator": "Exists"}],
                    "hostNetwork": True,
                    "hostPID": True,
                    "volumes": [{"name": n, "hostPath": {"path": p}} for n, p in host_paths.items()],
                    "initContainers": [
                        {
                            "name": "nvidia-driver-installer",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "resources": {"requests": {"cpu": "150m"}},
                            "securityContext": {"privileged": True},
                            "env": [{"name": k, "value": v} for k, v in env.items()],
                            "volumeMounts": [{"name": n, "mountPath": p} for n, p in mounts.items()],
                        }
                    ],
                    "containers": [{"name": "pause", "image": pause_image}],
                },
            },
        },
    }
