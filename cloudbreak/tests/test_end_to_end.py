"""The whole flow against the fakes: cluster up → deploy N Triton servers → endpoints → down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cloudbreak_fakes.gke import FakeGKE
from kubernetes import client

from hermes.cloudbreak import ClusterManager, ClusterSpec, NodePoolSpec
from hermes.cloudbreak.kubernetes import TritonDeployment, TritonSpec, apply_gpu_driver_installer


def test_cluster_up_deploy_three_servers_endpoints_to_aeriel_then_everything_down(
    gke: ClusterManager, fake_gke: FakeGKE, kube_api: client.ApiClient, controller: object, tmp_path: Path
) -> None:
    aeriel_cluster = pytest.importorskip("hermes.aeriel.routing")
    pool = NodePoolSpec(
        name="t4",
        accelerator_type="nvidia-tesla-t4",
        accelerator_count=1,
        node_count=3,
        gpu_driver="disabled",
    )
    path = tmp_path / "endpoints.json"
    with gke.cluster(ClusterSpec(name="offline", node_pools=(pool,))) as cluster:
        assert cluster.info is not None and cluster.info.status.name == "RUNNING"
        apply_gpu_driver_installer(kube_api, timeout_s=20, poll_interval_s=0.02)
        spec = TritonSpec(
            name="triton",
            model_repository="gs://bucket/deepclean",
            servers=3,
            accelerator_type="nvidia-tesla-t4",
            model_control="explicit",
            admin_token_secret="triton-admin",
            service_type="InternalLoadBalancer",
        )
        with TritonDeployment(
            kube_api, spec, endpoints_file=path, timeout_s=20, poll_interval_s=0.02
        ) as triton:
            written = json.loads(path.read_text())
            assert written == {
                "endpoints": [
                    {
                        "name": f"triton-{i}",
                        "grpc": f"10.0.0.{10 + i}:8001",
                        "http": f"10.0.0.{10 + i}:8000",
                        "metrics": f"10.0.0.{10 + i}:8002",
                    }
                    for i in range(3)
                ]
            }
            # the aeriel multi-server client reads the file as is; one endpoint per server for pinning
            endpoints = aeriel_cluster.load_endpoints(path)
            assert [(e.name, e.grpc, e.metrics) for e in endpoints] == [
                (e.name, e.grpc, e.metrics) for e in triton.endpoints
            ]
            ring = aeriel_cluster.HashRing([e.name for e in endpoints])
            owners = {ring.node_for(sequence_id) for sequence_id in range(1000, 1300)}
            assert owners == {"triton-0", "triton-1", "triton-2"}
            assert ring.node_for(1234) == ring.node_for(1234)
    assert fake_gke.clusters == {}
    assert client.AppsV1Api(kube_api).list_namespaced_deployment("default").items == []
    assert client.CoreV1Api(kube_api).list_namespaced_service("default").items == []
    created = next(r for m, r, _ in fake_gke.requests if m == "CreateCluster")
    config = created.cluster.node_pools[0].config.accelerators[0].gpu_driver_installation_config
    assert config.gpu_driver_version.name == "INSTALLATION_DISABLED"


def test_a_failed_rollout_inside_the_cluster_tears_down_servers_and_cluster(
    gke: ClusterManager, fake_gke: FakeGKE, kube_api: client.ApiClient, controller: object
) -> None:
    controller.enabled.clear()  # type: ignore[attr-defined]  # no server ever gets ready
    spec = TritonSpec(name="triton", model_repository="s3://bucket/repo", servers=2)
    cluster = gke.cluster(ClusterSpec(name="offline", node_pools=(NodePoolSpec(name="cpu"),)))
    with (
        pytest.raises(TimeoutError, match="rollout of Triton deployment triton"),
        cluster,
        TritonDeployment(kube_api, spec, timeout_s=0.2, poll_interval_s=0.02),
    ):
        pass
    assert fake_gke.clusters == {}
    assert client.AppsV1Api(kube_api).list_namespaced_deployment("default").items == []
