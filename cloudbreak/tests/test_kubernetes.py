"""Triton on Kubernetes against kmock's emulator, with manifests validated by kubernetes-validate."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
from kubernetes import client

from hermes.aeriel.endpoints import Endpoint as AerielEndpoint
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
        assert all(type(e) is AerielEndpoint for e in deployment.endpoints)  # one Endpoint type, aeriel's
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


def test_secure_defaults_probes_drain_and_private_service() -> None:
    spec = TritonSpec(name="t", model_repository="gs://b/r", drain_s=20, startup_timeout_s=900)
    deployment, service = triton_manifests(spec)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert service["spec"]["type"] == "ClusterIP" and "loadBalancerSourceRanges" not in service["spec"]
    assert "--model-control-mode=none" in container["args"]
    assert container["startupProbe"] == {
        "httpGet": {"path": "/v2/health/live", "port": "http"},
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": 90,
    }
    assert container["readinessProbe"]["timeoutSeconds"] == 5
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "20"]}}}
    assert "--exit-timeout-secs=20" in container["args"]
    assert pod["terminationGracePeriodSeconds"] == 50
    assert pod["automountServiceAccountToken"] is False
    kubernetes_validate.validate(deployment, "1.33", strict=True)


def test_internal_load_balancer_and_gcs_key_file() -> None:
    spec = TritonSpec(
        name="t", model_repository="gs://b/r", service_type="InternalLoadBalancer", gcs_key_secret="gcs-key"
    )
    deployment, service = triton_manifests(spec)
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["metadata"]["annotations"] == {"networking.gke.io/load-balancer-type": "Internal"}
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/var/secrets/google/key.json"} in container[
        "env"
    ]
    assert {"name": "gcs-key", "mountPath": "/var/secrets/google", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert {
        "name": "gcs-key",
        "secret": {"secretName": "gcs-key", "items": [{"key": "key.json", "path": "key.json"}]},
    } in pod["volumes"]
    for manifest in (deployment, service):
        kubernetes_validate.validate(manifest, "1.33", strict=True)


def test_load_balancers_are_awaited_until_gke_removed_their_finalizer(
    kube_api: client.ApiClient, controller: object
) -> None:
    spec = TritonSpec(
        name="ext",
        model_repository="gs://b/r",
        service_type="LoadBalancer",
        load_balancer_source_ranges=("10.1.0.0/16",),
    )
    core = client.CoreV1Api(kube_api)
    with TritonDeployment(kube_api, spec, poll_interval_s=0.02, timeout_s=20):
        live = core.read_namespaced_service("ext-0", "default")
        assert live.metadata.finalizers == ["service.kubernetes.io/load-balancer-cleanup"]
    # the context returned only after the Service (and so its forwarding rule) was gone
    assert core.list_namespaced_service("default").items == []


def test_a_load_balancer_that_never_goes_is_listed(kube_api: client.ApiClient, controller: object) -> None:
    from hermes.cloudbreak import TeardownError

    spec = TritonSpec(
        name="ext",
        model_repository="gs://b/r",
        service_type="LoadBalancer",
        load_balancer_source_ranges=("10.1.0.0/16",),
    )
    controller.lb_cleanup_polls = 10**9  # type: ignore[attr-defined]
    with (
        pytest.raises(TeardownError, match=r"Service default/ext-0 and its GCP forwarding rule") as info,
        TritonDeployment(kube_api, spec, poll_interval_s=0.02, timeout_s=20, load_balancer_timeout_s=0.3),
    ):
        pass
    assert len(info.value.leftovers) == 1
    controller.lb_cleanup_polls = 0  # type: ignore[attr-defined]


def _stuck_pod(kube: tuple, name: str, *, started: bool) -> None:
    from cloudbreak_fakes.kube import api_client_for

    url = kube[1]

    with api_client_for(url) as api:
        core = client.CoreV1Api(api)
        pod: dict = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/instance": "triton"}},
            "spec": {"containers": [{"name": "tritonserver", "image": "i"}]},
        }
        core.create_namespaced_pod("default", pod)
        status: dict = {"phase": "Running" if started else "Pending"}
        if started:
            status["containerStatuses"] = [
                {"name": "tritonserver", "ready": False, "restartCount": 2, "image": "i", "imageID": "x"}
            ]
        core.patch_namespaced_pod_status(name, "default", {"status": status})


def _event(kube: tuple, pod: str, reason: str, message: str) -> None:
    from cloudbreak_fakes.kube import api_client_for

    with api_client_for(kube[1]) as api:
        client.CoreV1Api(api).create_namespaced_event(
            "default",
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": f"{pod}.{reason.lower()}"},
                "involvedObject": {"kind": "Pod", "name": pod, "namespace": "default"},
                "reason": reason,
                "message": message,
                "type": "Warning",
            },
        )


def test_a_rollout_that_fails_shows_pod_events_and_the_triton_log(
    kube_api: client.ApiClient, kube: tuple, controller: object
) -> None:
    controller.enabled.clear()  # type: ignore[attr-defined]
    _stuck_pod(kube, "triton-0-5f7c9-abcde", started=True)
    _event(
        kube,
        "triton-0-5f7c9-abcde",
        "Unhealthy",
        "Readiness probe failed: HTTP probe failed with statuscode: 400",
    )
    # the end of a real Triton log when a model does not load
    kube[0]["get /api/v1/namespaces/default/pods/triton-0-5f7c9-abcde/log"] << (
        "E1203 10:00:01.000 model_lifecycle.cc:654] failed to load 'deepclean' version 1: Invalid argument: "
        "unexpected inference output 'OUTPUT__0', allowed outputs are: output\n"
    )
    with (
        pytest.raises(OperationTimeout) as info,
        TritonDeployment(kube_api, SPEC, poll_interval_s=0.02, timeout_s=0.3),
    ):
        pass
    text = str(info.value)
    assert "pod triton-0-5f7c9-abcde (Running)" in text
    assert "event Warning Unhealthy: Readiness probe failed" in text
    assert "failed to load 'deepclean' version 1" in text


def test_an_autoscaler_stockout_event_is_a_capacity_error(
    kube_api: client.ApiClient, kube: tuple, controller: object
) -> None:
    from hermes.cloudbreak import CapacityError

    controller.enabled.clear()  # type: ignore[attr-defined]
    _stuck_pod(kube, "triton-1-5f7c9-fghij", started=False)
    _event(
        kube,
        "triton-1-5f7c9-fghij",
        "FailedScheduling",
        "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    )
    _event(
        kube,
        "triton-1-5f7c9-fghij",
        "FailedScaleUp",
        "Node scale up in zones us-central1-a associated with this pod failed: GCE out of resources. "
        "Pod is at risk of not being scheduled.",
    )
    with (
        pytest.raises(
            CapacityError, match="GKE has no capacity: pod triton-1-5f7c9-fghij: Warning FailedScaleUp"
        ) as info,
        TritonDeployment(kube_api, SPEC, poll_interval_s=0.02, timeout_s=0.3),
    ):
        pass
    assert info.value.kind == "stockout"
    assert "FailedScheduling: 0/3 nodes are available" in str(info.value)


def test_driver_installer_that_targets_no_node_is_ready_at_once(
    kube_api: client.ApiClient, controller: object
) -> None:
    controller.daemonset_nodes = 0  # type: ignore[attr-defined]  # GKE installs the drivers: nothing to schedule
    live = apply_gpu_driver_installer(kube_api, timeout_s=20, poll_interval_s=0.02)
    assert live["status"]["desiredNumberScheduled"] == 0


def test_elastic_servers_are_one_endpoint_per_ready_pod(
    kube_api: client.ApiClient, controller: object
) -> None:
    from hermes.cloudbreak.kubernetes import Autoscale

    spec = TritonSpec(
        name="el", model_repository="gs://b/r", autoscale=Autoscale(min_servers=2, max_servers=5)
    )
    with TritonDeployment(kube_api, spec, poll_interval_s=0.02, timeout_s=20) as deployment:
        assert [(e.name, e.grpc) for e in deployment.endpoints] == [
            ("el-7d4b9-0", "10.8.0.10:8001"),
            ("el-7d4b9-1", "10.8.0.11:8001"),
        ]
        scaled = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
            "keda.sh", "v1alpha1", "default", "scaledobjects", "el"
        )
        assert scaled["spec"]["scaleTargetRef"] == {"name": "el"}
    assert (
        client.CustomObjectsApi(kube_api).list_namespaced_custom_object(
            "keda.sh", "v1alpha1", "default", "scaledobjects"
        )["items"]
        == []
    )


class _Members:
    """Records what an EndpointWatcher feeds a RoutingClient (the two methods it calls)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.log: list[str] = []

    def add_endpoint(self, endpoint: object) -> None:
        self.names.append(endpoint.name)  # type: ignore[attr-defined]
        self.log.append(f"+{endpoint.name}@{endpoint.grpc}")  # type: ignore[attr-defined]

    def remove_endpoint(self, name: str, *, drain_timeout_s: float) -> int:
        self.names.remove(name)
        self.log.append(f"-{name} drain {drain_timeout_s:g}")
        return 0


def test_membership_follows_the_autoscaled_deployment(
    kube_api: client.ApiClient, kube: tuple, controller: object, tmp_path: Path
) -> None:
    from hermes.cloudbreak.kubernetes import Autoscale, EndpointWatcher

    spec = TritonSpec(
        name="el", model_repository="gs://b/r", autoscale=Autoscale(min_servers=1, max_servers=3)
    )
    path = tmp_path / "live.json"
    members = _Members()
    apps = client.AppsV1Api(kube_api)
    with TritonDeployment(kube_api, spec, poll_interval_s=0.02, timeout_s=20):
        watcher = EndpointWatcher(kube_api, "el", endpoints_file=path, interval_s=0.02).follow(
            members, drain_timeout_s=5
        )
        with watcher:
            _wait_for(lambda: members.names == ["el-7d4b9-0"])
            apps.patch_namespaced_deployment("el", "default", {"spec": {"replicas": 3}})  # KEDA scales up
            _wait_for(lambda: sorted(members.names) == ["el-7d4b9-0", "el-7d4b9-1", "el-7d4b9-2"])
            assert [e.name for e in read_endpoints(path)] == ["el-7d4b9-0", "el-7d4b9-1", "el-7d4b9-2"]
            apps.patch_namespaced_deployment("el", "default", {"spec": {"replicas": 1}})  # and down
            _wait_for(lambda: members.names == ["el-7d4b9-0"])
    assert members.log[0] == "+el-7d4b9-0@10.8.0.10:8001"
    assert sorted(members.log[1:3]) == ["+el-7d4b9-1@10.8.0.11:8001", "+el-7d4b9-2@10.8.0.12:8001"]
    assert sorted(members.log[3:]) == ["-el-7d4b9-1 drain 5", "-el-7d4b9-2 drain 5"]
    # the watcher listed the Endpoints once and then watched them (kmock serves ?watch=true streams)
    reads = [r.params for r in kube[0] if r.method == "GET" and r.url.path == ENDPOINTS_PATH]
    assert [p.get("watch") for p in reads] == [None, "true"]
    assert all(p["fieldSelector"] == "metadata.name=el" for p in reads)


ENDPOINTS_PATH = "/api/v1/namespaces/default/endpoints"


def _wait_for(condition: object, timeout_s: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_503_during_teardown_is_retried_and_the_teardown_finishes(
    kube_api: client.ApiClient, kube: tuple, controller: object, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.WARNING, logger="hermes.cloudbreak")
    spec = TritonSpec(name="blip", model_repository="gs://b/r")
    with TritonDeployment(kube_api, spec, poll_interval_s=0.02, timeout_s=20):
        kube[0]["delete /api/v1/namespaces/default/services/blip-0"][:1] << 503  # the API server blips once
    assert "delete Service default/blip-0: HTTP 503" in caplog.text and "retrying" in caplog.text
    assert client.AppsV1Api(kube_api).list_namespaced_deployment("default").items == []
