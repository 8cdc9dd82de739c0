"""The local runtime against the real tritonserver binary."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient

from hermes.aeriel import (
    ModelLoadError,
    PortInUseError,
    Server,
    ServerExitedError,
    ServerPreflightError,
    serve,
)
from hermes.aeriel.server import free_ports, map_visible_devices
from hermes.aeriel.server.local import check_numpy
from hermes.aeriel.testing import leftover_resources


def _add_sub_inputs(module, a: np.ndarray, b: np.ndarray) -> list:
    inputs = [
        module.InferInput("INPUT0", list(a.shape), "FP32"),
        module.InferInput("INPUT1", list(b.shape), "FP32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


def test_python_model_answers_over_grpc_and_http(triton_repo, start_triton, write_add_sub):
    write_add_sub(triton_repo)
    server = start_triton(triton_repo, models=["add_sub"])
    a = np.arange(16, dtype=np.float32)
    b = np.full(16, 0.5, dtype=np.float32)

    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        result = client.infer("add_sub", _add_sub_inputs(grpcclient, a, b))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)

    # HTTP: the KServe v2 JSON protocol, spoken directly (hermes itself only uses gRPC)
    body = {"inputs": [{"name": n, "shape": [16], "datatype": "FP32", "data": x.tolist()}
                       for n, x in (("INPUT0", a), ("INPUT1", b))]}  # fmt: skip
    request = urllib.request.Request(
        f"{server.http_url}/v2/models/add_sub/infer", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        outputs = {o["name"]: np.array(o["data"], np.float32) for o in json.load(response)["outputs"]}
    np.testing.assert_array_equal(outputs["OUTPUT0"], a + b)
    np.testing.assert_array_equal(outputs["OUTPUT1"], a - b)


def test_start_and_stop_leave_no_process_and_no_shm_region(triton_repo, write_add_sub, tmp_path):
    write_add_sub(triton_repo)
    with serve(triton_repo, models=["add_sub"], log_file=tmp_path / "log", exit_timeout_s=2) as server:
        pid = server.pid
        regions = list(Path("/dev/shm").glob(f"{server.spec.shm_prefix}*"))
        assert regions, "the python backend should have created its shm region under our prefix"
        assert server.is_running()
    assert not server.is_running()
    assert server.returncode is not None
    assert leftover_resources(server) == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _serve_on_ports(repo: Path, log: Path, attempts: int = 5) -> tuple[Server, list[int]]:
    """serve() on ports this test chose; chosen again if another process binds one first."""
    for attempt in range(attempts):
        ports = free_ports(3)
        http, grpc, metrics = ports
        try:
            server = serve(
                repo, models=[], http_port=http, grpc_port=grpc, metrics_port=metrics, log_file=log
            )
        except PortInUseError:
            if attempt + 1 == attempts:
                raise
            continue
        return server, ports
    raise AssertionError("unreachable")


def test_endpoints_bind_loopback_on_the_ports_asked_for(triton_repo, tmp_path):
    server, (http, grpc, metrics) = _serve_on_ports(triton_repo, tmp_path / "log")
    with server:
        assert server.grpc_url == f"127.0.0.1:{grpc}"
        assert server.http_url == f"http://127.0.0.1:{http}"
        assert server.metrics_url == f"http://127.0.0.1:{metrics}/metrics"
        # serve() returned, so every endpoint it reports answers: no retry, no sleep
        with urllib.request.urlopen(server.http_url + "/v2") as resp:
            assert json.loads(resp.read())["version"] == "2.51.0"
        with urllib.request.urlopen(server.metrics_url) as resp:
            assert b"nv_cpu_utilization" in resp.read()
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            assert client.is_server_ready()
        log = server.read_log()
    assert f"Started GRPCInferenceService at 127.0.0.1:{grpc}" in log
    assert f"Started HTTPService at 127.0.0.1:{http}" in log
    assert f"Started Metrics Service at 127.0.0.1:{metrics}" in log


@pytest.mark.parametrize("taken", ["http_port", "grpc_port", "metrics_port"])
def test_a_port_held_by_another_process_raises_port_in_use_naming_it(triton_repo, tmp_path, taken):
    """A given port that another process holds is named before any server starts."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        ports = dict(zip(["http_port", "grpc_port", "metrics_port"], free_ports(3), strict=True))
        ports[taken] = port
        with pytest.raises(PortInUseError, match=f"{taken}={port} is already in use on 127.0.0.1") as info:
            serve(triton_repo, models=[], log_file=tmp_path / "log", exit_timeout_s=2, **ports)
    assert isinstance(info.value, ServerPreflightError)
    assert not (tmp_path / "log").exists() or "Started" not in (tmp_path / "log").read_text()


def test_broken_config_raises_quoting_triton_and_naming_the_model(triton_repo, tmp_path, write_add_sub):
    config = 'name: "broken"\nbackend: "python"\nmax_batch_size: -3\n'
    write_add_sub(triton_repo, name="broken", config=config)
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        serve(triton_repo, models=["broken"], log_file=tmp_path / "log", exit_timeout_s=1)
    message = str(info.value)
    assert "broken" in message
    assert "'max_batch_size' must be non-negative value" in message
    assert info.value.model == "broken"
    assert time.monotonic() - started < 60


def test_loading_a_broken_model_later_quotes_triton(triton_server, triton_repo, write_add_sub):
    write_add_sub(triton_repo, name="later", config='name: "later"\nbackend: "python"\nmax_batch_size: -1\n')
    with pytest.raises(ModelLoadError, match=r"later.*must be non-negative"):
        triton_server.load_model("later")
    # the server keeps serving other models
    write_add_sub(triton_repo, name="good")
    triton_server.load_model("good")


def test_missing_repository_is_rejected_before_launch(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ServerPreflightError, match=r"model repository .*nope does not exist"):
        serve(missing)
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(ServerPreflightError, match="is not a directory"):
        serve(a_file)


def test_unknown_model_raises_naming_it(triton_repo, tmp_path):
    with pytest.raises(ModelLoadError) as info:
        serve(triton_repo, models=["ghost"], log_file=tmp_path / "log", exit_timeout_s=1)
    assert "ghost" in str(info.value)


def test_two_servers_run_at_once(triton_repo, start_triton, write_add_sub, tmp_path):
    write_add_sub(triton_repo)
    other = tmp_path / "other"
    other.mkdir()
    write_add_sub(other)
    first = start_triton(triton_repo, models=["add_sub"])
    second = start_triton(other, models=["add_sub"])
    assert len({first.grpc_url, second.grpc_url, first.http_url, second.http_url}) == 4
    a = np.ones(4, np.float32)
    for server, b in ((first, 2.0), (second, 3.0)):
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            out = client.infer("add_sub", _add_sub_inputs(grpcclient, a, np.full(4, b, np.float32)))
            np.testing.assert_array_equal(out.as_numpy("OUTPUT0"), a + b)


def test_server_killed_from_outside_is_reported(triton_repo, tmp_path, write_add_sub):
    write_add_sub(triton_repo)
    started = time.monotonic()
    with (
        pytest.raises(ServerExitedError) as info,
        serve(triton_repo, models=["add_sub"], log_file=tmp_path / "log") as server,
    ):
        os.kill(server.pid, signal.SIGKILL)
        server.process.wait(10)
        with pytest.raises(ServerExitedError, match="killed by signal 9"):
            server.check()
    assert info.value.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 60
    assert leftover_resources(server) == []


# A python model whose initialize() crashes the server (SIGABRT to its parent, tritonserver) while
# it starts: every time, or only the first time (a marker file beside it remembers).
CRASHING_MODEL = """\
import os, signal, time
from pathlib import Path

class TritonPythonModel:
    def initialize(self, args):
        marker = Path(args["model_repository"]) / "crashed-once"
        if {always} or not marker.exists():
            marker.touch()
            os.kill(os.getppid(), signal.SIGABRT)
            time.sleep(60)

    def execute(self, requests):
        return []
"""


def _crashing_model(repo: Path, write_add_sub, *, always: bool) -> Path:
    folder = write_add_sub(repo, "crashing")
    (folder / "1" / "model.py").write_text(CRASHING_MODEL.format(always=always))
    return folder


RETRIED = "tritonserver crashed while starting; starting it once more."


def _own_regions() -> set[str]:
    """This process's servers' python-backend regions in /dev/shm (serve() names them so)."""
    return {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(f"hermes{os.getpid()}x")}


def _hermes_servers_of(repo: Path) -> list[int]:
    """tritonserver processes serving ``repo`` that are still alive."""
    return [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if f"--model-repository={repo}" in (p.info["cmdline"] or [])
    ]


def test_a_server_that_crashes_while_starting_is_started_once_more(
    triton_repo, tmp_path, write_add_sub, caplog
):
    folder = _crashing_model(triton_repo, write_add_sub, always=False)
    shm_before = _own_regions()
    with serve(triton_repo, models=["crashing"], log_file=tmp_path / "log") as server:
        assert server.control.is_model_ready("crashing")
        assert (folder / "crashed-once").exists()
        retried = [r.getMessage() for r in caplog.records if r.getMessage().startswith(RETRIED)]
        assert len(retried) == 1 and "exited (killed by signal 6)" in retried[0], retried
        log = server.read_log()
        assert log.count("Started GRPCInferenceService") == 1  # the first never got that far
        assert log.count("TRITONBACKEND_ModelInstanceInitialize: crashing_0_0") == 2  # one log, both runs
        assert len(_hermes_servers_of(triton_repo)) == 1  # the crashed one is gone
    assert leftover_resources(server) == [] and _hermes_servers_of(triton_repo) == []
    assert _own_regions() <= shm_before


def test_a_server_that_crashes_on_every_start_raises_after_the_second(
    triton_repo, tmp_path, write_add_sub, caplog
):
    _crashing_model(triton_repo, write_add_sub, always=True)
    shm_before = _own_regions()
    with pytest.raises(ServerExitedError, match=r"exited \(killed by signal 6\)") as info:
        serve(triton_repo, models=["crashing"], log_file=tmp_path / "log")
    assert info.value.returncode == -signal.SIGABRT
    retried = [r for r in caplog.records if r.getMessage().startswith(RETRIED)]
    assert len(retried) == 1  # two starts in all
    assert (tmp_path / "log").read_text().count("TRITONBACKEND_ModelInstanceInitialize: crashing_0_0") == 2
    assert _hermes_servers_of(triton_repo) == [] and _own_regions() <= shm_before


def test_a_server_killed_while_starting_is_not_started_again(triton_repo, tmp_path, write_add_sub, caplog):
    folder = _crashing_model(triton_repo, write_add_sub, always=True)
    model = folder / "1" / "model.py"
    model.write_text(model.read_text().replace("signal.SIGABRT", "signal.SIGKILL"))  # the OOM killer's
    with pytest.raises(ServerExitedError, match=r"killed by signal 9") as info:
        serve(triton_repo, models=["crashing"], log_file=tmp_path / "log")
    assert info.value.returncode == -signal.SIGKILL
    assert not [r for r in caplog.records if r.getMessage().startswith(RETRIED)]
    assert _hermes_servers_of(triton_repo) == []


def test_error_in_the_body_keeps_its_type_and_notes_a_dead_server(triton_repo, tmp_path):
    with (
        pytest.raises(KeyError) as info,
        serve(triton_repo, models=[], log_file=tmp_path / "log") as server,
    ):
        os.kill(server.pid, signal.SIGKILL)
        server.process.wait(10)
        raise KeyError("user error")
    assert any("Triton server had exited" in note for note in info.value.__notes__)


def test_numpy_2_is_refused_with_the_fix():
    check_numpy("1.26.4")
    with pytest.raises(ServerPreflightError, match=r'numpy 2\.1\.0 .*empty.*pip install "numpy<2"'):
        check_numpy("2.1.0")


def test_gpu_indices_map_through_the_hosts_visible_devices():
    assert map_visible_devices((0, 1), None) == "0,1"
    assert map_visible_devices((0, 2), "4,5,6") == "4,6"
    assert map_visible_devices((1,), "GPU-aaaa,GPU-bbbb") == "GPU-bbbb"
    with pytest.raises(ValueError, match=r"GPU index 3 is outside .*indices 0\.\.2"):
        map_visible_devices((3,), "4,5,6")


def test_free_ports_are_distinct():
    ports = free_ports(3)
    assert len(set(ports)) == 3
    assert all(0 < p < 65536 for p in ports)
