"""serve(..., instance_kind="cpu"): a GPU repository (the predecessor's layout) served on the CPU."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hermes.aeriel import serve
from hermes.aeriel.client import InferenceClient
from hermes.aeriel.exceptions import ModelLoadError, ServerPreflightError
from hermes.aeriel.server import CpuOverlay
from hermes.aeriel.server.cpu_overlay import cpu_hint
from hermes.quiver.streaming import offline_stream

from ._predecessor_repo import (
    BATCH,
    CHANNELS,
    KERNEL,
    NUM_UPDATES,
    STRIDE,
    net_numpy,
    write_predecessor_repository,
)

pytestmark = pytest.mark.skipif(
    shutil.which("nvidia-smi") is not None,
    reason="KIND_GPU loads on a GPU machine; this is about CPU machines",
)


def digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (not following links) with its content hash."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def gpu_repo(tmp_path: Path) -> Path:
    return write_predecessor_repository(tmp_path / "repo")


def test_overlay_rewrites_gpu_groups_links_the_rest_and_leaves_the_repository_alone(gpu_repo: Path) -> None:
    before = digest(gpu_repo)
    with CpuOverlay(gpu_repo) as overlay:
        assert overlay.changes == [
            "aggregator instance group #0: KIND_GPU -> KIND_CPU (count 2)",
            "net instance group #0: KIND_GPU -> KIND_CPU (count 1)",
            "snapshotter instance group #0: KIND_GPU -> KIND_CPU (count 2)",
        ]
        served = overlay.path / "snapshotter"
        assert "kind: KIND_CPU" in (served / "config.pbtxt").read_text()
        assert "KIND_GPU" not in (served / "config.pbtxt").read_text()
        assert (served / "1").is_symlink() and (served / "1").resolve() == gpu_repo / "snapshotter" / "1"
        assert (overlay.path / "stream").is_symlink()  # nothing to change: the whole folder is linked
        # a model added later is linked in by refresh (serve does it before load_model)
        shutil.copytree(gpu_repo / "net", gpu_repo / "net2")
        (gpu_repo / "net2" / "config.pbtxt").write_text(
            (gpu_repo / "net" / "config.pbtxt").read_text().replace('"net"', '"net2"')
        )
        assert overlay.refresh() == ["net2 instance group #0: KIND_GPU -> KIND_CPU (count 1)"]
        path = overlay.path
    assert not path.exists()
    shutil.rmtree(gpu_repo / "net2")
    assert digest(gpu_repo) == before


def test_overlay_refuses_remote_and_missing_repositories(tmp_path: Path) -> None:
    with pytest.raises(ServerPreflightError, match=r"needs a local repository, got gs://b/repo.*Copy it"):
        CpuOverlay("gs://b/repo")
    with pytest.raises(ServerPreflightError, match="does not exist or is not a directory"):
        CpuOverlay(tmp_path / "missing")
    with pytest.raises(ValueError, match="instance_kind must be None"):
        serve(tmp_path, instance_kind="gpu")


def test_cpu_hint_is_added_only_to_the_kind_gpu_error() -> None:
    reason = "instance group snapshotter_0 of model snapshotter has kind KIND_GPU but no GPUs are available"
    assert 'serve(..., instance_kind="cpu")' in cpu_hint(reason) and "hermes serve --cpu" in cpu_hint(reason)
    assert cpu_hint("some other failure") == "some other failure"


def test_gpu_repository_fails_to_load_with_a_message_naming_the_cpu_option(gpu_repo: Path) -> None:
    with pytest.raises(ModelLoadError) as caught:
        serve(gpu_repo, models=["snapshotter"], timeout_s=120)
    message = str(caught.value)
    assert "has kind KIND_GPU but no GPUs are available" in message
    assert 'instance_kind="cpu"' in message and "hermes serve --cpu" in message


def test_predecessor_repository_serves_on_the_cpu_and_streams_the_offline_reference(gpu_repo: Path) -> None:
    before = digest(gpu_repo)
    size = STRIDE * BATCH
    updates = 10
    rng = np.random.default_rng(3)
    data = {sid: rng.standard_normal((CHANNELS, size * updates)).astype(np.float32) for sid in (1001, 1002)}
    with serve(gpu_repo, models=["stream"], instance_kind="cpu") as server:
        overlay = server.overlay
        assert overlay is not None and overlay.path.is_dir() and len(overlay.changes) == 3
        with InferenceClient(server.grpc_url, "stream") as client:
            futures: dict[int, list] = {sid: [] for sid in data}
            with client.sequence(1001) as first, client.sequence(1002) as second:
                for u in range(updates):
                    for seq, sid in ((first, 1001), (second, 1002)):
                        chunk = data[sid][None, :, u * size : (u + 1) * size]
                        futures[sid].append(seq.send(chunk, end=u == updates - 1))
            served = {
                sid: np.concatenate([f.result(timeout=60).outputs["output_stream"] for f in fs], axis=-1)[0]
                for sid, fs in futures.items()
            }
    assert not overlay.path.exists()
    assert digest(gpu_repo) == before  # the user's files were never changed
    for sid, x in data.items():
        expected = offline_stream(
            net_numpy, x, kernel_size=KERNEL, stride=STRIDE, batch_size=BATCH, num_updates=NUM_UPDATES
        )
        assert served[sid].shape == (size * updates,)
        np.testing.assert_allclose(served[sid], expected, atol=2e-6, rtol=0)


def test_hermes_serve_cpu_serves_the_gpu_repository_and_lists_the_moved_groups(gpu_repo: Path) -> None:
    hermes = str(Path(sys.executable).parent / "hermes")
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [hermes, "serve", str(gpu_repo), "--cpu", "--model", "snapshotter"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Press Ctrl-C"):
                break
        ready = [ln for ln in lines if "tritonserver ready" in ln]
        assert ready, (lines, proc.stderr.read() if proc.stderr else "")
        cpu = [ln.split(None, 1)[1] for ln in lines if ln.strip().startswith("cpu ")]
        assert "snapshotter instance group #0: KIND_GPU -> KIND_CPU (count 2)" in cpu
        overlay = Path(next(ln.split()[1] for ln in lines if ln.strip().startswith("overlay ")))
        assert (overlay / "snapshotter" / "config.pbtxt").is_file()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not overlay.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "KIND_GPU" in (gpu_repo / "snapshotter" / "config.pbtxt").read_text()


def test_apptainer_binds_the_repository_at_its_own_path_so_the_overlay_links_resolve(
    gpu_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .test_server_apptainer import calls, make_fake_bin

    bindir = make_fake_bin(tmp_path / "fakebin")
    log = tmp_path / "apptainer-calls.jsonl"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_APPTAINER_LOG", str(log))
    image = tmp_path / "tritonserver.sif"
    image.write_bytes(b"SIF fake image")
    with serve(
        gpu_repo, runtime="apptainer", image=str(image), models=["snapshotter"], instance_kind="cpu"
    ) as server:
        assert server.overlay is not None
        overlay = server.overlay.path
    argv = calls(log)[0]["argv"]
    repo = str(gpu_repo.resolve())
    assert argv[argv.index(f"{overlay}:/models:ro") - 1] == "--bind"
    assert argv[argv.index(f"{repo}:{repo}:ro") - 1] == "--bind"
    assert not overlay.exists()


def test_explicit_loads_name_the_option_and_see_models_added_after_start(gpu_repo: Path) -> None:
    hint = r'(?s)KIND_GPU but no GPUs are available.*instance_kind="cpu"'
    with serve(gpu_repo, models=[]) as server, pytest.raises(ModelLoadError, match=hint):
        server.load_model("net")
    with serve(gpu_repo, models=[], instance_kind="cpu") as server:
        shutil.copytree(gpu_repo / "net", gpu_repo / "late")
        (gpu_repo / "late" / "config.pbtxt").write_text(
            (gpu_repo / "late" / "config.pbtxt").read_text().replace('name: "net"', 'name: "late"')
        )
        server.load_model("late")  # linked into the overlay, moved to the CPU, then loaded
        assert server.overlay is not None
        assert server.overlay.changes[-1] == "late instance group #0: KIND_GPU -> KIND_CPU (count 1)"
    assert "KIND_GPU" in (gpu_repo / "late" / "config.pbtxt").read_text()
