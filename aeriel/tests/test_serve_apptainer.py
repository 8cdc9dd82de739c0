"""The Apptainer/Singularity runtime, through a fake ``apptainer`` first on PATH.

The fake (tests/fakes/fake_apptainer.py) records its arguments and environment, then runs
the real bundled tritonserver, so everything but the container is real: argv building,
image lookup, readiness, inference, log capture and the clean stop.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from hermes.aeriel import ServerPreflightError, serve
from hermes.aeriel.serve import ServerSpec
from hermes.aeriel.serve.apptainer import ApptainerRuntime, find_container_executable, resolve_image
from hermes.aeriel.testing import leftover_resources

FAKE = Path(__file__).parent / "fakes" / "fake_apptainer.py"


def make_fake_bin(directory: Path, names: tuple[str, ...] = ("apptainer", "singularity")) -> Path:
    """Executables ``names`` that run the fake with this interpreter (which sees hermes)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        script = directory / name
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" {name} "$@"\n')
        script.chmod(0o755)
    return directory


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def fake_apptainer(tmp_path, monkeypatch) -> Path:
    """Put the fake first on PATH; returns the file it records its calls in."""
    bindir = make_fake_bin(tmp_path / "fakebin")
    log = tmp_path / "apptainer-calls.jsonl"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_APPTAINER_LOG", str(log))
    return log


@pytest.fixture
def image(tmp_path) -> Path:
    sif = tmp_path / "images" / "tritonserver_24.10-py3.sif"
    sif.parent.mkdir()
    sif.write_bytes(b"SIF fake image")
    return sif


def add_sub(server, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        inputs = [
            grpcclient.InferInput("INPUT0", list(a.shape), "FP32"),
            grpcclient.InferInput("INPUT1", list(b.shape), "FP32"),
        ]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        result = client.infer("add_sub", inputs)
    return result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1")


def test_apptainer_serves_the_repository_read_only_and_stops_cleanly(
    triton_repo, write_add_sub, fake_apptainer, image, tmp_path
):
    write_add_sub(triton_repo)
    log_file = tmp_path / "logs" / "server.log"
    with serve(
        triton_repo,
        runtime="apptainer",
        image=str(image),
        models=["add_sub"],
        log_file=log_file,
        exit_timeout_s=2,
        server_args=["--log-verbose=1"],
    ) as server:
        a = np.arange(8, dtype=np.float32)
        b = np.full(8, 2.0, dtype=np.float32)
        out0, out1 = add_sub(server, a, b)
        np.testing.assert_array_equal(out0, a + b)
        np.testing.assert_array_equal(out1, a - b)
        child_pid = calls(fake_apptainer)[-1]["child_pid"]
        spec = server.spec
    assert leftover_resources(server) == []
    assert (
        not Path(f"/proc/{child_pid}").exists()
        or Path(f"/proc/{child_pid}/stat").read_text().split()[2] == "Z"
    )
    first = calls(fake_apptainer)[0]
    argv = first["argv"]
    assert first["name"] == "apptainer"
    assert argv[:2] == ["exec", "--cleanenv"]
    assert "--nv" not in argv
    assert argv[argv.index(f"{triton_repo.resolve()}:/models:ro") - 1] == "--bind"
    assert f"{log_file.parent.resolve()}:{log_file.parent.resolve()}" in argv
    image_at = argv.index(str(image.resolve()))
    assert argv[image_at + 1] == "tritonserver"
    server_argv = argv[image_at + 2 :]
    assert "--model-repository=/models" in server_argv
    assert f"--grpc-port={spec.grpc_port}" in server_argv
    assert f"--http-port={spec.http_port}" in server_argv
    assert f"--metrics-port={spec.metrics_port}" in server_argv
    assert "--load-model=add_sub" in server_argv
    assert "--log-verbose=1" in server_argv
    assert "successfully loaded 'add_sub'" in log_file.read_text()


def test_gpu_request_adds_nv_and_pins_mapped_devices_inside_the_server(
    triton_repo, write_add_sub, fake_apptainer, image, tmp_path, monkeypatch
):
    write_add_sub(triton_repo)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7")
    with serve(
        triton_repo,
        runtime="apptainer",
        image=str(image),
        models=["add_sub"],
        gpus=[1],
        env={"OMP_NUM_THREADS": "1"},
        log_file=tmp_path / "server.log",
        exit_timeout_s=2,
    ) as server:
        child_pid = calls(fake_apptainer)[-1]["child_pid"]
        environ = Path(f"/proc/{child_pid}/environ").read_bytes().split(b"\0")
        out0, _ = add_sub(server, np.ones(2, np.float32), np.ones(2, np.float32))
        np.testing.assert_array_equal(out0, [2.0, 2.0])
    argv = calls(fake_apptainer)[0]["argv"]
    assert "--nv" in argv
    assert argv[argv.index("CUDA_VISIBLE_DEVICES=7") - 1] == "--env"
    assert argv[argv.index("OMP_NUM_THREADS=1") - 1] == "--env"
    assert b"CUDA_VISIBLE_DEVICES=7" in environ
    assert b"OMP_NUM_THREADS=1" in environ
    assert leftover_resources(server) == []


def test_singularity_is_the_fallback_when_apptainer_is_missing(tmp_path, monkeypatch, image):
    bindir = make_fake_bin(tmp_path / "only-singularity", names=("singularity",))
    monkeypatch.setenv("PATH", str(bindir))
    assert find_container_executable("apptainer") == str(bindir / "singularity")
    assert find_container_executable("singularity") == str(bindir / "singularity")


def test_apptainer_is_preferred_when_both_exist(tmp_path, monkeypatch):
    bindir = make_fake_bin(tmp_path / "both")
    monkeypatch.setenv("PATH", str(bindir))
    assert find_container_executable("apptainer") == str(bindir / "apptainer")
    assert find_container_executable("singularity") == str(bindir / "singularity")


def test_missing_container_command_is_a_preflight_error(tmp_path, monkeypatch, image, triton_repo):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ServerPreflightError, match="neither apptainer nor singularity is on PATH"):
        serve(triton_repo, runtime="apptainer", image=str(image), models=[])


def test_image_is_found_by_absolute_path_relative_path_and_image_directory(tmp_path, monkeypatch, image):
    monkeypatch.chdir(image.parent.parent)
    monkeypatch.delenv("HERMES_IMAGE_DIR", raising=False)
    assert resolve_image(str(image)) == str(image.resolve())
    assert resolve_image(f"images/{image.name}") == str(image.resolve())
    assert resolve_image("tritonserver_24.10-py3", image_dir=image.parent) == str(image.resolve())
    monkeypatch.setenv("HERMES_IMAGE_DIR", str(image.parent))
    assert resolve_image("tritonserver_24.10-py3.sif") == str(image.resolve())
    assert resolve_image("docker://nvcr.io/nvidia/tritonserver:24.10-py3") == (
        "docker://nvcr.io/nvidia/tritonserver:24.10-py3"
    )


def test_missing_image_error_names_every_place_looked_at(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HERMES_IMAGE_DIR", str(tmp_path / "registry"))
    with pytest.raises(ServerPreflightError) as info:
        resolve_image("triton")
    message = str(info.value)
    assert "container image 'triton' not found" in message
    assert str(tmp_path / "triton") in message
    assert str(tmp_path / "registry" / "triton.sif") in message


def test_url_repository_is_passed_through_without_a_bind(tmp_path, image, fake_apptainer):
    spec = ServerSpec(
        repository="gs://bucket/models",
        http_port=8000,
        grpc_port=8001,
        metrics_port=8002,
        log_file=tmp_path / "log" / "server.log",
        shm_prefix="t_",
        models=("m",),
    )
    argv, env = ApptainerRuntime(image=str(image), executable="singularity").command(spec)
    assert "--model-repository=gs://bucket/models" in argv
    assert not any(a.endswith(":/models:ro") for a in argv)
    assert argv[1:3] == ["exec", "--cleanenv"]
    assert env["PATH"] == os.environ["PATH"]


def test_unknown_executable_name_is_rejected(image):
    with pytest.raises(ValueError, match="executable must be 'apptainer' or 'singularity', got 'docker'"):
        ApptainerRuntime(image=str(image), executable="docker")
