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
from hermes.aeriel.server import ServerSpec
from hermes.aeriel.server.apptainer import ApptainerRuntime, find_container_executable, resolve_image
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


# ---------------------------------------------------------------------------- HPC behaviour
# `nvidia-smi -L` output format: one "GPU <i>: <name> (UUID: GPU-...)" line per device (NVIDIA's nvidia-smi).
NVIDIA_SMI_L = (
    "GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-5a4b7c1e-0f2d-4c33-9e0e-3d9b6f3b2a11)\n"
    "GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-8e0c2f7a-71b1-4d8c-a0a5-52f0d9c4e6b2)\n"
)


@pytest.fixture
def gpu_host(tmp_path, monkeypatch, fake_apptainer) -> None:
    """A fake ``nvidia-smi`` first on PATH that lists two GPUs, as on a GPU node."""
    smi = tmp_path / "fakebin" / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n[ \"$1\" = -L ] && printf '%s' '{NVIDIA_SMI_L}' && exit 0\nexit 9\n")
    smi.chmod(0o755)


@pytest.fixture(autouse=True)
def _private_image_dirs(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HERMES_CVMFS_IMAGE_DIR", str(tmp_path / "no-cvmfs"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("HERMES_APPTAINER_PASS_ENV", raising=False)


def child_environ(log: Path) -> dict[str, str]:
    return [c for c in calls(log) if "child_env" in c][-1]["child_env"]


def test_gpus_by_default_on_a_gpu_host_pass_nv_and_the_jobs_devices(
    triton_repo, write_add_sub, fake_apptainer, gpu_host, image, tmp_path, monkeypatch
):
    write_add_sub(triton_repo)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    with serve(triton_repo, runtime="apptainer", image=str(image), models=["add_sub"],
               log_file=tmp_path / "server.log", exit_timeout_s=2) as server:  # fmt: skip
        out0, _ = add_sub(server, np.ones(2, np.float32), np.ones(2, np.float32))
        np.testing.assert_array_equal(out0, [2.0, 2.0])
        environ = child_environ(fake_apptainer)
    argv = calls(fake_apptainer)[0]["argv"]
    assert argv[:3] == ["exec", "--cleanenv", "--nv"]
    assert "--allow-gpu-metrics=false" not in argv and "--pinned-memory-pool-byte-size=0" not in argv
    assert not any(a.startswith("CUDA_VISIBLE_DEVICES") for a in argv)  # inherited, not pinned
    assert calls(fake_apptainer)[0]["env"]["APPTAINERENV_CUDA_VISIBLE_DEVICES"] == "2,3"
    assert environ["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert "WARNING: Could not find any nv files on this host!" in (tmp_path / "server.log").read_text()


def test_gpus_narrow_pins_devices_and_none_runs_on_the_cpu(tmp_path, image, gpu_host, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    spec = {"repository": str(tmp_path), "http_port": 8000, "grpc_port": 8001, "metrics_port": 8002,
            "log_file": tmp_path / "server.log", "shm_prefix": "t_"}  # fmt: skip
    runtime = ApptainerRuntime(image=str(image))
    narrow, narrow_env = runtime.command(ServerSpec(**spec, gpus=(1,)))
    assert "--nv" in narrow
    assert narrow[narrow.index("CUDA_VISIBLE_DEVICES=3") - 1] == "--env"
    assert "APPTAINERENV_CUDA_VISIBLE_DEVICES" not in narrow_env
    cpu, cpu_env = runtime.command(ServerSpec(**spec, gpus=()))
    assert "--nv" not in cpu
    assert "--allow-gpu-metrics=false" in cpu and "--pinned-memory-pool-byte-size=0" in cpu
    assert not any("CUDA_VISIBLE_DEVICES" in a for a in cpu)
    assert "APPTAINERENV_CUDA_VISIBLE_DEVICES" not in cpu_env


def test_serve_takes_gpus_none_and_rejects_other_words(
    triton_repo, image, fake_apptainer, gpu_host, tmp_path
):
    with pytest.raises(
        TypeError, match=r"gpus must be a list of int values .* 'none' or 'all'; got the string 'cpu'"
    ):
        serve(triton_repo, runtime="apptainer", image=str(image), gpus="cpu")
    with serve(triton_repo, runtime="apptainer", image=str(image), models=[], gpus="none",
               log_file=tmp_path / "s.log", exit_timeout_s=2) as server:  # fmt: skip
        assert server.spec.gpus == ()
    assert "--nv" not in calls(fake_apptainer)[0]["argv"]


def test_cleanenv_passes_only_the_allow_list_and_keeps_credentials_off_the_command_line(
    triton_repo, write_add_sub, fake_apptainer, image, tmp_path, monkeypatch
):
    write_add_sub(triton_repo)
    key = tmp_path / "sa.json"
    key.write_text('{"type": "service_account"}')
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("MY_SITE_TOKEN_DIR", "/tokens")
    monkeypatch.setenv("UNRELATED_SETTING", "leaks")
    monkeypatch.setenv("HERMES_APPTAINER_PASS_ENV", "MY_SITE_*")
    with serve(triton_repo, runtime="apptainer", image=str(image), models=["add_sub"],
               log_file=tmp_path / "server.log", exit_timeout_s=2):  # fmt: skip
        environ = child_environ(fake_apptainer)
    first = calls(fake_apptainer)[0]
    assert environ["GOOGLE_APPLICATION_CREDENTIALS"] == str(key)
    assert environ["AWS_SECRET_ACCESS_KEY"] == "s3cr3t-value"
    assert environ["https_proxy"] == "http://proxy.example:3128"
    assert environ["MY_SITE_TOKEN_DIR"] == "/tokens"
    assert "UNRELATED_SETTING" not in environ
    assert not any("s3cr3t-value" in a for a in first["argv"])
    assert f"{key.resolve()}:{key}:ro" in first["argv"]
    assert "s3cr3t-value" not in (tmp_path / "server.log").read_text()


def test_pass_env_replaces_the_default_allow_list(tmp_path, image, fake_apptainer, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("ONLY_THIS", "y")
    spec = ServerSpec(repository=str(tmp_path), http_port=8000, grpc_port=8001, metrics_port=8002,
                      log_file=tmp_path / "s.log", shm_prefix="t_", gpus=())  # fmt: skip
    _, env = ApptainerRuntime(image=str(image), pass_env=["ONLY_THIS"]).command(spec)
    assert env["APPTAINERENV_ONLY_THIS"] == "y"
    assert "APPTAINERENV_AWS_SECRET_ACCESS_KEY" not in env
    with pytest.raises(ValueError, match="pass_env must be a list of variable names"):
        ApptainerRuntime(image=str(image), pass_env="ONLY_THIS")


def test_docker_image_is_pulled_once_into_the_image_dir_before_the_server_starts(
    triton_repo, write_add_sub, fake_apptainer, tmp_path, monkeypatch
):
    write_add_sub(triton_repo)
    images = tmp_path / "images"
    images.mkdir()
    monkeypatch.setenv("HERMES_IMAGE_DIR", str(images))
    monkeypatch.setenv("FAKE_APPTAINER_PULL_SECONDS", "1.5")
    uri = "docker://nvcr.io/nvidia/tritonserver:24.10-py3"
    for _ in range(2):
        with serve(triton_repo, runtime="apptainer", image=uri, models=["add_sub"], timeout_s=60,
                   log_file=tmp_path / "server.log", exit_timeout_s=2) as server:  # fmt: skip
            out0, _ = add_sub(server, np.ones(1, np.float32), np.ones(1, np.float32))
            assert out0.tolist() == [2.0]
    pulls = [c["argv"] for c in calls(fake_apptainer) if c.get("argv", [""])[0] == "pull"]
    execs = [c["argv"] for c in calls(fake_apptainer) if c.get("argv", [""])[0] == "exec"]
    assert len(pulls) == 1 and len(execs) == 2
    assert pulls[0][2] == uri and Path(pulls[0][1]).parent == images
    sif = images / "nvcr.io_nvidia_tritonserver_24.10-py3.sif"
    assert sif.read_bytes() == f"SIF fake image of {uri}".encode()
    assert all(str(sif) in argv for argv in execs)
    assert sorted(p.name for p in images.iterdir()) == [sif.name]


def test_a_pull_that_fails_or_times_out_keeps_nothing_and_quotes_apptainer(
    tmp_path, fake_apptainer, monkeypatch
):
    from hermes.aeriel import ImagePullError, pull_image

    images = tmp_path / "images"
    images.mkdir()
    with pytest.raises(ImagePullError, match="manifest unknown") as info:
        pull_image("docker://nvcr.io/nvidia/doesnotexist:1", image_dir=images)
    assert "FATAL:   While making image from oci registry" in str(info.value)
    monkeypatch.setenv("FAKE_APPTAINER_PULL_SECONDS", "30")
    with pytest.raises(ImagePullError, match=r"did not finish in 1 s; nothing was kept.*hermes image pull"):
        pull_image("oras://ghcr.io/ml4gw/triton:1", image_dir=images, timeout_s=1)
    assert list(images.iterdir()) == []
    with pytest.raises(ValueError, match="pull_image takes a docker:// or oras:// URI"):
        pull_image("library://x/y/z:1")


def test_cvmfs_images_are_found_by_name_and_by_their_docker_uri(tmp_path, monkeypatch):
    cvmfs = tmp_path / "cvmfs"
    sandbox = cvmfs / "ml4gw" / "hermes" / "tritonserver:22.12"
    (sandbox / "opt").mkdir(parents=True)
    monkeypatch.setenv("HERMES_CVMFS_IMAGE_DIR", str(cvmfs))
    monkeypatch.delenv("HERMES_IMAGE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_image("ml4gw/hermes/tritonserver:22.12") == str(sandbox)
    assert resolve_image("docker://ml4gw/hermes/tritonserver:22.12") == str(sandbox)
    assert (
        resolve_image("docker://ml4gw/hermes/tritonserver:23.01")
        == "docker://ml4gw/hermes/tritonserver:23.01"
    )


def test_hermes_image_pull_prints_the_cached_path(tmp_path, fake_apptainer, monkeypatch):
    import subprocess

    images = tmp_path / "images"
    images.mkdir()
    hermes = Path(sys.executable).parent / "hermes"
    uri = "oras://ghcr.io/ml4gw/tritonserver:24.10"
    run = [str(hermes), "image", "pull", uri, "--image-dir", str(images)]
    first = subprocess.run(run, capture_output=True, text=True, timeout=120, check=True)
    second = subprocess.run(run, capture_output=True, text=True, timeout=120, check=True)
    assert first.stdout.strip() == str(images / "oras_ghcr.io_ml4gw_tritonserver_24.10.sif")
    assert second.stdout.strip() == first.stdout.strip()
    assert len([c for c in calls(fake_apptainer) if c.get("argv", [""])[0] == "pull"]) == 1
    bad = subprocess.run([str(hermes), "image", "pull", "docker://nvcr.io/nvidia/doesnotexist:1",
                          "--image-dir", str(images)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 1
    assert "hermes image pull: error:" in bad.stderr and "manifest unknown" in bad.stderr


def test_pull_logs_progress_while_it_runs(tmp_path, fake_apptainer, monkeypatch, caplog):
    import logging

    from hermes.aeriel import pull_image

    monkeypatch.setenv("FAKE_APPTAINER_PULL_SECONDS", "1.2")
    with caplog.at_level(logging.INFO, logger="hermes.aeriel.server.images"):
        path = pull_image("docker://nvcr.io/nvidia/tritonserver:24.10-py3", image_dir=tmp_path,
                          progress_every_s=0.3)  # fmt: skip
    progress = [r.getMessage() for r in caplog.records if "MiB written so far" in r.getMessage()]
    assert len(progress) >= 2
    assert progress[0].startswith("pulling docker://nvcr.io/nvidia/tritonserver:24.10-py3: ")
    assert any(
        r.getMessage().startswith("pulled docker://nvcr.io/nvidia/tritonserver:24.10-py3 in ")
        for r in caplog.records
    )
    assert path == tmp_path / "nvcr.io_nvidia_tritonserver_24.10-py3.sif"
