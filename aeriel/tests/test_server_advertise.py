"""Reachable servers: advertised hosts, the endpoints file, and log excerpts that keep the cause."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from hermes.aeriel import load_endpoints, serve
from hermes.aeriel.server._advertise import advertised_host, node_address
from hermes.aeriel.server._logs import log_excerpt
from hermes.aeriel.testing import leftover_resources

HERMES = str(Path(sys.executable).parent / "hermes")


def test_a_wildcard_bind_advertises_this_nodes_address_and_writes_the_endpoints_file(
    triton_repo, write_add_sub, tmp_path
):
    write_add_sub(triton_repo)
    endpoints = tmp_path / "shared" / "endpoints" / "server-1.json"
    with serve(triton_repo, models=["add_sub"], address="0.0.0.0", endpoints_file=endpoints,
               name="slurm-1", log_file=tmp_path / "s.log", exit_timeout_s=2) as server:  # fmt: skip
        node = node_address()
        assert server.grpc_url == f"{node}:{server.spec.grpc_port}"
        assert "0.0.0.0" not in json.dumps(server.endpoint_entry())
        [endpoint] = load_endpoints(endpoints)
        assert endpoint.name == "slurm-1"
        assert endpoint.grpc == server.grpc_url
        assert endpoint.http == f"{node}:{server.spec.http_port}"
        assert endpoint.metrics == f"{node}:{server.spec.metrics_port}"
        with grpcclient.InferenceServerClient(endpoint.grpc) as client:
            assert client.is_model_ready("add_sub")
        assert [p.name for p in endpoints.parent.iterdir()] == ["server-1.json"]  # no temp file left
    assert not endpoints.exists()
    assert leftover_resources(server) == []


def test_an_endpoints_file_another_server_rewrote_is_left_alone(triton_repo, tmp_path):
    endpoints = tmp_path / "endpoints.json"
    with serve(triton_repo, models=[], endpoints_file=endpoints, log_file=tmp_path / "s.log",
               exit_timeout_s=2) as server:  # fmt: skip
        assert load_endpoints(endpoints)[0].grpc == server.grpc_url == f"127.0.0.1:{server.spec.grpc_port}"
        endpoints.write_text('{"endpoints": [{"name": "other", "grpc": "10.0.0.9:8001"}]}')
    assert load_endpoints(endpoints)[0].name == "other"


def test_advertise_is_never_a_wildcard_nor_remote_for_a_loopback_bind(triton_repo, tmp_path):
    with pytest.raises(
        ValueError, match=r"advertise='0\.0\.0\.0' is a wildcard no other node can connect to"
    ):
        serve(triton_repo, models=[], advertise="0.0.0.0")
    with pytest.raises(ValueError, match=r"binds 127.0.0.1 \(this node only\); also pass address='0.0.0.0'"):
        serve(triton_repo, models=[], advertise="node17.cluster")
    assert advertised_host("0.0.0.0", "node17.cluster") == "node17.cluster"
    assert advertised_host("127.0.0.1", None) == "127.0.0.1"
    assert advertised_host("0.0.0.0", "auto") == node_address()
    assert not node_address().startswith("127.")


def test_hermes_serve_advertise_writes_the_endpoints_file_and_removes_it_on_sigterm(
    triton_repo, write_add_sub, tmp_path
):
    write_add_sub(triton_repo)
    endpoints = tmp_path / "endpoints.json"
    host = socket.gethostname()
    proc = subprocess.Popen(
        [HERMES, "serve", str(triton_repo), "--address", "0.0.0.0", "--advertise", host, "--name", "job-7",
         "--endpoints-file", str(endpoints), "--log-file", str(tmp_path / "s.log")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not endpoints.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        [endpoint] = load_endpoints(endpoints)
        assert endpoint.name == "job-7" and endpoint.grpc.startswith(f"{host}:")
        with grpcclient.InferenceServerClient(endpoint.grpc) as client:
            assert client.is_model_ready("add_sub")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"endpoints file {endpoints}" in out
    assert not endpoints.exists()


# Real lines of a Triton start (shared/research/triton-cpu.md §2.1) and of a GPU node whose
# driver is older than the image's CUDA (the reason an HPC start fails).
CPU_NOISE = [
    "W1203 10:00:00.000 1 pinned_memory_manager.cc:273] Unable to allocate pinned system memory, pinned "
    "memory pool will not be available: CUDA driver version is insufficient for CUDA runtime version",
    "E1203 10:00:00.001 1 server.cc:243] CudaDriverHelper has not been initialized.",
    "Error: Failed to initialize NVML",
    "W1203 10:00:00.002 1 metrics.cc:811] DCGM unable to start: DCGM initialization error",
]
CAUSE = (
    "E1203 10:00:01.000 1 model_lifecycle.cc:641] failed to load 'aframe' version 1: Internal: unable to "
    "create TensorRT engine: CUDA driver version is insufficient for CUDA runtime version"
)


def test_log_excerpt_keeps_cuda_errors_that_are_the_cause_and_drops_only_known_noise():
    text = "\n".join([*CPU_NOISE, "I1203 10:00:00.5 1 server.cc:1] loading", CAUSE,
                      "E1203 10:00:02 1 cuda_memory_manager.cc:9] CUDA out of memory"])  # fmt: skip
    excerpt = log_excerpt(text, models=["aframe"]).splitlines()
    assert excerpt == [CAUSE, "E1203 10:00:02 1 cuda_memory_manager.cc:9] CUDA out of memory"]
