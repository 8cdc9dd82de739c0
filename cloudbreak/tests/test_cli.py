"""``hermes cloud`` against the fakes, and its --dry-run output."""

from __future__ import annotations

import base64
import importlib.metadata
import json
from pathlib import Path

import kubernetes_validate
import yaml
from cloudbreak_fakes.compute import FakeCompute
from cloudbreak_fakes.gke import FakeGKE
from google.cloud import container_v1
from typer.testing import CliRunner

from hermes.cloudbreak._cli import app
from hermes.cloudbreak.gke import ClusterSpec, NodePoolSpec, create_cluster_request

runner = CliRunner()
WHERE = ["--project", "hermes-p1", "--location", "us-central1-a"]


def gke_cli(fake: FakeGKE, *args: str) -> object:
    return runner.invoke(
        app, ["--gke-endpoint", f"http://127.0.0.1:{fake.port}", *args], catch_exceptions=False
    )


def test_cluster_up_list_down(fake_gke: FakeGKE) -> None:
    up = gke_cli(
        fake_gke,
        "cluster",
        "up",
        "--name",
        "c1",
        *WHERE,
        "--gpu-type",
        "nvidia-tesla-t4",
        "--gpus",
        "1",
        "--min-nodes",
        "0",
        "--max-nodes",
        "3",
        "--poll-interval-s",
        "0.01",
    )
    assert up.exit_code == 0, up.output
    assert json.loads(up.stdout) == {
        "name": "c1",
        "location": "us-central1-a",
        "node_locations": ["us-central1-a"],
        "gpus": 1,
        "endpoint": "127.0.0.1",
        "status": "RUNNING",
    }
    assert (
        "capacity in us-central1-a: gpus: 1 node(s)/zone x 1 zone(s) x 1 nvidia-tesla-t4 = 1 GPUs"
        in up.stderr
    )
    assert "ESTIMATE (not a quote) of GKE cluster c1 in us-central1-a: about $" in up.stderr
    listed = gke_cli(fake_gke, "cluster", "list", *WHERE)
    assert [json.loads(line)["name"] for line in listed.stdout.splitlines()] == ["c1"]
    down = gke_cli(fake_gke, "cluster", "down", "--name", "c1", *WHERE, "--poll-interval-s", "0.01")
    assert down.stdout.strip() == "deleted cluster c1"
    again = gke_cli(fake_gke, "cluster", "down", "--name", "c1", *WHERE)
    assert again.stdout.strip() == "cluster c1 did not exist"


def test_cluster_up_reports_a_stockout_and_leaves_nothing(fake_gke: FakeGKE) -> None:
    fake_gke.stockouts = 10
    result = gke_cli(
        fake_gke,
        "cluster",
        "up",
        "--name",
        "c1",
        *WHERE,
        "--poll-interval-s",
        "0.01",
        "--retries",
        "2",
        "--retry-backoff-s",
        "0",
    )
    assert result.exit_code == 1
    assert "error: create cluster c1: gave up after 2 attempt(s)" in result.stderr
    assert "GCE_STOCKOUT" in result.stderr
    assert fake_gke.clusters == {}


def test_cluster_up_dry_run_prints_the_exact_request_and_sends_nothing(fake_gke: FakeGKE) -> None:
    result = gke_cli(
        fake_gke,
        "cluster",
        "up",
        "--name",
        "c1",
        *WHERE,
        "--gpu-type",
        "nvidia-l4",
        "--gpus",
        "2",
        "--spot",
        "--dry-run",
    )
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.stdout)["requests"]
    assert entry["method"] == "google.container.v1.ClusterManager/CreateCluster"
    sent = container_v1.CreateClusterRequest.from_json(json.dumps(entry["request"]))
    pool = NodePoolSpec(name="gpus", accelerator_type="nvidia-l4", accelerator_count=2, spot=True)
    assert sent == create_cluster_request(
        "hermes-p1", "us-central1-a", ClusterSpec(name="c1", node_pools=(pool,))
    )
    assert fake_gke.requests == []


def test_deploy_against_a_kubeconfig_writes_endpoints(
    kube: tuple, controller: object, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "fake",
                "clusters": [{"name": "fake", "cluster": {"server": kube[1]}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
            }
        )
    )
    path = tmp_path / "endpoints.json"
    result = runner.invoke(
        app,
        [
            "deploy",
            "--name",
            "tr",
            "--repository",
            "gs://b/r",
            "--servers",
            "2",
            "--kubeconfig",
            str(kubeconfig),
            "--endpoints-file",
            str(path),
            "--poll-interval-s",
            "0.02",
            "--timeout-s",
            "20",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(path.read_text())
    assert [e["name"] for e in json.loads(path.read_text())["endpoints"]] == ["tr-0", "tr-1"]


def test_deploy_dry_run_prints_valid_manifests() -> None:
    result = runner.invoke(
        app,
        [
            "deploy",
            "--name",
            "tr",
            "--repository",
            "s3://b/r",
            "--servers",
            "2",
            "--server-arg",
            "--log-verbose=1",
            "--gpu-driver-installer",
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.stdout))
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("DaemonSet", "nvidia-driver-installer"),
        ("Deployment", "tr-0"),
        ("Service", "tr-0"),
        ("Deployment", "tr-1"),
        ("Service", "tr-1"),
    ]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33", strict=True)
    assert docs[1]["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "--model-repository=s3://b/r",
        "--model-control-mode=none",
        "--exit-timeout-secs=30",
        "--log-verbose=1",
    ]
    assert docs[2]["spec"]["type"] == "ClusterIP"  # private unless asked


def test_deploy_dry_run_shows_the_secure_and_elastic_manifests() -> None:
    result = runner.invoke(
        app,
        [
            *["deploy", "--name", "tr", "--repository", "gs://b/r", "--gpu-type", "nvidia-l4"],
            *["--model-control", "explicit", "--admin-token-secret", "tr-admin"],
            *["--workload-identity", "triton@gw-project.iam.gserviceaccount.com"],
            *["--min-servers", "1", "--max-servers", "6", "--queue-time-us", "20000", "--dry-run"],
        ],
    )
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.stdout))
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("ServiceAccount", "tr-triton"),
        ("Deployment", "tr"),
        ("Service", "tr"),
        ("ScaledObject", "tr"),
    ]
    for doc in docs[:3]:  # the ScaledObject is KEDA's CRD: not in the Kubernetes schemas
        kubernetes_validate.validate(doc, "1.33", strict=True)
    assert docs[0]["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": "triton@gw-project.iam.gserviceaccount.com"
    }
    pod = docs[1]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "tr-triton"
    assert docs[2]["spec"]["clusterIP"] == "None"
    trigger = docs[3]["spec"]["triggers"][0]
    assert (trigger["type"], trigger["metadata"]["threshold"]) == ("prometheus", "20000")
    assert "nv_inference_queue_duration_us" in trigger["metadata"]["query"]
    assert (docs[3]["spec"]["minReplicaCount"], docs[3]["spec"]["maxReplicaCount"]) == (1, 6)
    assert "ESTIMATE (not a quote) of Triton deployment tr: about $3.36/hour" in result.stderr  # 6 x L4


def test_swarm_up_run_down(fake_compute: FakeCompute, ssh: dict) -> None:
    fake_compute.host_key = ssh["host_key"]  # swarm run checks it against the guest attributes
    base = ["--compute-endpoint", fake_compute.endpoint, "--anonymous", "swarm"]
    where = ["--name", "w", "--project", "hermes-p1", "--zone", "us-central1-a"]
    up = runner.invoke(
        app, [*base, "up", *where, "--count", "2", "--poll-interval-s", "0.01"], catch_exceptions=False
    )
    assert up.exit_code == 0, up.output
    assert json.loads(up.stdout) == {"w-0": "127.0.0.1", "w-1": "127.0.0.1"}
    ran = runner.invoke(
        app,
        [
            *base,
            "run",
            *where,
            "--ssh-port",
            str(ssh["port"]),
            "--ssh-user",
            "me",
            "--ssh-key",
            str(ssh["client_key"]),
            "echo $((6*7))",
        ],
        catch_exceptions=False,
    )
    assert ran.exit_code == 0, ran.output
    assert [json.loads(line) for line in ran.stdout.splitlines()] == [
        {"vm": "w-0", "exit_status": 0, "stdout": "42\n", "stderr": ""},
        {"vm": "w-1", "exit_status": 0, "stdout": "42\n", "stderr": ""},
    ]
    down = runner.invoke(app, [*base, "down", *where, "--poll-interval-s", "0.01"], catch_exceptions=False)
    assert json.loads(down.stdout) == {"deleted": ["w-0", "w-1"]}
    assert fake_compute.instances == {}


def test_swarm_up_dry_run_prints_one_insert_per_vm(fake_compute: FakeCompute, tmp_path: Path) -> None:
    script = tmp_path / "boot.sh"
    script.write_text("#!/bin/sh\npip install hermes-stillwater\n")
    result = runner.invoke(
        app,
        [
            "--compute-endpoint",
            fake_compute.endpoint,
            "swarm",
            "up",
            "--name",
            "w",
            "--count",
            "3",
            "--project",
            "hermes-p1",
            "--zone",
            "us-central1-a",
            "--gpu-type",
            "nvidia-tesla-t4",
            "--gpus",
            "1",
            "--startup-script",
            str(script),
            "--label",
            "job=o3",
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    requests = json.loads(result.stdout)["requests"]
    assert [r["request"]["instanceResource"]["name"] for r in requests] == ["w-0", "w-1", "w-2"]
    vm = requests[0]["request"]["instanceResource"]
    assert vm["metadata"]["items"] == [
        {"key": "enable-guest-attributes", "value": "TRUE"},  # host keys, checked by `swarm run`
        {"key": "install-nvidia-driver", "value": "True"},  # the default GPU image installs the driver
        {"key": "startup-script", "value": script.read_text()},
    ]
    assert vm["disks"][0]["initializeParams"]["sourceImage"].endswith("common-cu128-ubuntu-2204-nvidia-570")
    assert vm["labels"] == {"job": "o3", "hermes-swarm": "w", "managed-by": "hermes-cloudbreak"}
    assert fake_compute.requests == []


def test_the_hermes_cli_entry_point_names_this_app() -> None:
    (entry,) = [ep for ep in importlib.metadata.entry_points(group="hermes.cli") if ep.name == "cloud"]
    assert entry.value == "hermes.cloudbreak._cli:app"
    assert entry.load() is app


def test_deploy_to_a_gke_cluster_by_name_uses_its_endpoint_and_ca(
    fake_gke: FakeGKE, kube_tls: dict, tls_controller: object, tmp_path: Path
) -> None:
    fake_gke.endpoint = kube_tls["url"].removeprefix("https://")
    fake_gke.ca_certificate = base64.b64encode(kube_tls["ca_pem"]).decode()
    up = gke_cli(
        fake_gke, "--anonymous", "cluster", "up", "--name", "c1", *WHERE, "--poll-interval-s", "0.01"
    )
    assert up.exit_code == 0, up.output
    path = tmp_path / "endpoints.json"
    result = gke_cli(
        fake_gke,
        "--anonymous",
        "deploy",
        "--name",
        "tr",
        "--repository",
        "gs://b/r",
        "--servers",
        "2",
        "--cluster",
        "c1",
        *WHERE,
        "--endpoints-file",
        str(path),
        "--poll-interval-s",
        "0.02",
        "--timeout-s",
        "20",
    )
    assert result.exit_code == 0, result.output
    assert [e["name"] for e in json.loads(result.stdout)["endpoints"]] == ["tr-0", "tr-1"]
    assert json.loads(path.read_text()) == json.loads(result.stdout)
    assert fake_gke.methods()[-1] == "GetCluster"
    (_, request, _) = fake_gke.requests[-1]
    assert request.name == "projects/hermes-p1/locations/us-central1-a/clusters/c1"
    posted = [r for r in list(kube_tls["emu"]) if r.method.value == "POST"]
    assert [r.url.path for r in posted] == [
        "/apis/apps/v1/namespaces/default/deployments",
        "/api/v1/namespaces/default/services",
        "/apis/apps/v1/namespaces/default/deployments",
        "/api/v1/namespaces/default/services",
    ]
    assert {r.headers.get("Authorization") for r in posted} == {None}  # anonymous: no token sent
    assert list(fake_gke.clusters) == ["projects/hermes-p1/locations/us-central1-a/clusters/c1"]


def test_deploy_to_a_missing_gke_cluster_fails_naming_it(fake_gke: FakeGKE) -> None:
    result = gke_cli(
        fake_gke,
        "--anonymous",
        "deploy",
        "--name",
        "tr",
        "--repository",
        "gs://b/r",
        "--cluster",
        "nope",
        *WHERE,
    )
    assert result.exit_code == 1
    assert result.stderr.split("\n")[-2].startswith(
        "error: get cluster nope: Not found: projects/hermes-p1/locations/us-central1-a/clusters/nope"
    )


def test_deploy_cluster_needs_a_location_and_no_kubeconfig(tmp_path: Path) -> None:
    base = ["deploy", "--name", "tr", "--repository", "gs://b/r", "--cluster", "c1"]
    no_location = runner.invoke(app, [*base, "--project", "hermes-p1"])
    assert no_location.exit_code == 1
    assert "error: --cluster c1 needs --project and --location" in no_location.stderr
    both = runner.invoke(app, [*base, *WHERE, "--kubeconfig", str(tmp_path / "kc")])
    assert both.exit_code == 1
    assert "error: --cluster and --kubeconfig/--context each name the cluster" in both.stderr


def test_cluster_down_deletes_and_awaits_load_balancers_before_the_cluster(
    fake_gke: FakeGKE, kube_tls: dict, tls_controller: object
) -> None:
    fake_gke.endpoint = kube_tls["url"].removeprefix("https://")
    fake_gke.ca_certificate = base64.b64encode(kube_tls["ca_pem"]).decode()
    up = gke_cli(
        fake_gke, "--anonymous", "cluster", "up", "--name", "c1", *WHERE, "--poll-interval-s", "0.01"
    )
    assert up.exit_code == 0, up.output
    deployed = gke_cli(
        fake_gke,
        "--anonymous",
        *["deploy", "--name", "tr", "--repository", "gs://b/r", "--cluster", "c1", *WHERE],
        *["--service-type", "LoadBalancer", "--source-range", "203.0.113.0/24"],
        *["--poll-interval-s", "0.02", "--timeout-s", "20"],
    )
    assert deployed.exit_code == 0, deployed.output
    tls_controller.lb_cleanup_polls = 3  # type: ignore[attr-defined]  # GKE takes a while to drop the rule
    down = gke_cli(
        fake_gke, "--anonymous", "cluster", "down", "--name", "c1", *WHERE, "--poll-interval-s", "0.02"
    )
    assert down.exit_code == 0, down.output
    assert "deleted load balancer Service default/tr-0" in down.stderr
    assert down.stdout.strip() == "deleted cluster c1"
    requests = list(kube_tls["emu"])
    deletes = [r for r in requests if r.method.value == "DELETE"]
    assert [r.url.path for r in deletes] == ["/api/v1/namespaces/default/services/tr-0"]
    # the Service was read until it was gone (404) before DeleteCluster went out
    reads = [r for r in requests if r.method.value == "GET" and r.url.path.endswith("/services/tr-0")]
    assert len(reads) >= 2
    assert fake_gke.methods()[-2:] == ["DeleteCluster", "GetOperation"]
