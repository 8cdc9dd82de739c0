"""Triton on Kubernetes against kmock's emulator, with manifests validated by kubernetes-validate."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
from kubernetes import client

from hermes.cloudbreak import CloudConfigError, OperationTimeout, ResourceNotFound
from hermes.cloudbreak.kubernetes import (
    Endpoint,
    TritonDeployment,
    TritonSpec,
    apply_gpu_driver_installer,
    apply_manifest,
    gpu_driver_installer_manifest,
    read_endpoints,
    read_manifest,
    triton_manifests,
)

SPEC = TritonSpec(
    name="triton",
    model_repository="gs://my-bucket/repo",
    servers=2,
    gpus=1,
    accelerator_type="nvidia-tesla-t4",
    model_control="explicit",
    admin_token_secret="triton-admin",
    service_type="LoadBalancer",
    load_balancer_source_ranges=("203.0.113.0/24",),
    credentials_secret="s3-keys",
    env={"LOG_VERBOSE": "1"},
)


def test_manifests_pass_the_kubernetes_schemas_strictly() -> None:
    for manifest in [*triton_manifests(SPEC), gpu_driver_installer_manifest()]:
        kubernetes_validate.validate(manifest, "1.33", strict=True)


def test_schema_validation_catches_a_misplaced_field() -> None:
    broken = triton_manifests(SPEC)[0]
    broken["spec"]["template"]["spec"]["containers"][0]["containerPort"] = 8001
    with pytest.raises(kubernetes_validate.ValidationError, match="containerPort"):
        kubernetes_validate.validate(broken, "1.33", strict=True)


def test_each_server_gets_its_own_deployment_and_service() -> None:
    manifests = triton_manifests(SPEC)
    assert [(m["kind"], m["metadata"]["name"]) for m in manifests] == [
        ("Deployment", "triton-0"),
        ("Service", "triton-0"),
        ("Deployment", "triton-1"),
        ("Service", "triton-1"),
    ]
    deployment, service = manifests[2], manifests[3]
    assert deployment["spec"]["replicas"] == 1
    assert service["spec"]["selector"] == {"hermes.cloudbreak/server": "triton-1"}
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == [
        "--model-repository=gs://my-bucket/repo",
        "--model-control-mode=explicit",
        "--exit-timeout-secs=30",
        "--http-restricted-api=model-repository:hermes-admin-token=$(HERMES_ADMIN_TOKEN)",
        "--grpc-restricted-protocol=model-repository:hermes-admin-token=$(HERMES_ADMIN_TOKEN)",
    ]
    assert container["env"] == [
        {"name": "LOG_VERBOSE", "value": "1"},
        {
            "name": "HERMES_ADMIN_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "triton-admin", "key": "token"}},
        },
    ]
    assert container["resources"]["limits"] == {"memory": "16Gi", "nvidia.com/gpu": "1"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["envFrom"] == [{"secretRef": {"name": "s3-keys"}}]
    assert service["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    assert pod["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}]
    assert container["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"model_repository": "/local/repo"},
            "model_repository must be 'gs://bucket/path' or 's3://bucket/path'",
        ),
        ({"servers": 0}, "servers must be >= 1, got 0"),
        ({"shm_size": "1 GB"}, "shm_size must be a Kubernetes quantity.*'1 GB'"),
        ({"server_args": ("--model-repository=/x",)}, "must not set --model-repository"),
        (
            {"server_args": ("--model-control-mode=explicit",)},
            "must not set --model-control-mode.*use model_control",
        ),
        ({"service_type": "Ingress"}, "service_type must be one of"),
        (
            {"service_type": "LoadBalancer"},
            "exposes the servers outside the VPC; give load_balancer_source_ranges",
        ),
        (
            {"load_balancer_source_ranges": ("1.2.3.0/24",)},
            "needs a load balancer, but service_type is 'ClusterIP'",
        ),
        (
            {"service_type": "LoadBalancer", "load_balancer_source_ranges": ("my-lab",)},
            "must be CIDRs like",
        ),
        ({"model_control": "explicit"}, "lets clients load and unload models; give admin_token_secret"),
        ({"workload_identity": "me@gmail.com"}, "must be a Google service account email"),
    ],
)
def test_triton_spec_rejects_bad_fields(kwargs: dict, message: str) -> None:
    base = {"name": "t", "model_repository": "s3://b/r"}
    with pytest.raises(CloudConfigError, match=message):
        TritonSpec(**{**base, **kwargs})


def test_apply_creates_then_patches_and_reads_back(kube_api: client.ApiClient, kube: tuple) -> None:
    deployment = triton_manifests(SPEC)[0]
    _, created = apply_manifest(kube_api, deployment)
    assert created is True
    changed = json.loads(json.dumps(deployment))
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "nvcr.io/nvidia/tritonserver:24.09-py3"
    _, created = apply_manifest(kube_api, changed)
    assert created is False
    live = read_manifest(kube_api, deployment)
    assert (
        live["spec"]["template"]["spec"]["containers"][0]["image"] == "nvcr.io/nvidia/tritonserver:24.09-py3"
    )
    emu = kube[0]
    assert [r.method for r in emu] == ["POST", "POST", "PATCH", "GET"]


def test_reading_a_missing_object_raises_not_found(kube_api: client.ApiClient) -> None:
    with pytest.raises(ResourceNotFound, match="read Service default/nope: HTTP 404") as info:
        read_manifest(kube_api, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "nope"}})
    assert info.value.code == 404


def test_deploy_waits_ready_returns_endpoints_and_deletes_on_exit(
    kube_api: client.ApiClient, controller: object, tmp_path: Path
) -> None:
    path = tmp_path / "endpoints.json"
    with TritonDeployment(
        kube_api, SPEC, poll_interval_s=0.02, timeout_s=20, endpoints_file=path
    ) as deployment:
        assert [e.to_dict() for e in deployment.endpoints] == [
            {
                "name": "triton-0",
                "grpc": "10.0.0.10:8001",
                "http": "10.0.0.10:8000",
                "metrics": "10.0.0.10:8002",
            },
            {
                "name": "triton-1",
                "grpc": "10.0.0.11:8001",
                "http": "10.0.0.11:8000",
                "metrics": "10.0.0.11:8002",
            },
        ]
        assert json.loads(path.read_text()) == {"endpoints": [e.to_dict() for e in deployment.endpoints]}
        assert read_endpoints(path) == deployment.endpoints
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    assert apps.list_namespaced_deployment("default").items == []
    assert core.list_namespaced_service("default").items == []


def test_rollout_that_never_gets_ready_times_out_and_deletes_everything(
    kube_api: client.ApiClient, controller: object
) -> None:
    controller.enabled.clear()  # type: ignore[attr-defined]
    with (
        pytest.raises(
            OperationTimeout,
            match=r"rollout of Triton deployment triton \(2 servers\).*within 0.2 s"
            r".*waiting for Deployment default/triton-0",
        ),
        TritonDeployment(kube_api, SPEC, poll_interval_s=0.02, timeout_s=0.2),
    ):
        pass
    assert client.AppsV1Api(kube_api).list_namespaced_deployment("default").items == []
    assert client.CoreV1Api(kube_api).list_namespaced_service("default").items == []


def test_cluster_ip_services_resolve_to_cluster_dns(kube_api: client.ApiClient, controller: object) -> None:
    spec = TritonSpec(name="inner", model_repository="s3://b/r", gpus=0)  # ClusterIP: the default
    with TritonDeployment(kube_api, spec, poll_interval_s=0.02, timeout_s=20) as deployment:
        assert deployment.endpoints == [
            Endpoint(
                name="inner-0",
                grpc="inner-0.default.svc.cluster.local:8001",
                http="inner-0.default.svc.cluster.local:8000",
                metrics="inner-0.default.svc.cluster.local:8002",
            )
        ]


def test_gpu_driver_installer_is_applied_and_waited_for(
    kube_api: client.ApiClient, controller: object
) -> None:
    live = apply_gpu_driver_installer(kube_api, timeout_s=20, poll_interval_s=0.02)
    assert live["metadata"] == {
        **live["metadata"],
        "name": "nvidia-driver-installer",
        "namespace": "kube-system",
    }
    assert live["status"]["numberReady"] == 2
