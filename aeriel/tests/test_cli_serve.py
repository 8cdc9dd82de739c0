"""``hermes serve`` and the CLI help, run as real subprocesses."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

HERMES = str(Path(sys.executable).parent / "hermes")
ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}


def run_help(*args: str) -> str:
    proc = subprocess.run(
        [HERMES, *args, "--help"], capture_output=True, text=True, env=ENV, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


class Served:
    """``hermes serve`` in a subprocess; collects its stdout lines on a thread."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [HERMES, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pattern: str, timeout_s: float = 120.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while True:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                stderr = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"hermes serve ended before {pattern!r}: {self.seen}\n{stderr}")
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def stop(self, sig: int) -> tuple[int, str]:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        self._reader.join(10)
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.seen.append(line)
        return code, "\n".join(self.seen)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def test_hermes_help_lists_the_serve_command():
    out = run_help()
    assert re.search(r"serve\s+Start Triton on REPOSITORY", out)


def test_serve_help_describes_every_option():
    out = run_help("serve")
    for option, words in {
        "--runtime": "local (the bundled binary), apptainer, singularity, or native",
        "--image": "Container image",
        "--gpus": "GPU indices",
        "--http-port": "HTTP/REST port",
        "--grpc-port": "gRPC port",
        "--metrics-port": "Prometheus metrics port",
        "--model": "Model to load at start",
        "--log-file": "server log",
        "--address": "Address every endpoint binds",
        "--timeout": "Seconds to wait",
        "--server-arg": "Extra tritonserver argument",
        "--advertise": "Host other nodes use to reach the server",
        "--endpoints-file": "Write the endpoints JSON",
        "--pass-env": "passed through apptainer --cleanenv",
        "--pull-timeout": "image pull may take",
    }.items():
        assert re.search(rf"{option}\b.*{re.escape(words)}", out), f"{option} undocumented:\n{out}"


def test_serve_prints_endpoints_answers_and_stops_cleanly_on_sigterm(triton_repo, write_add_sub, tmp_path):
    write_add_sub(triton_repo)
    log_file = tmp_path / "server.log"
    served = Served(str(triton_repo), "--model", "add_sub", "--log-file", str(log_file))
    try:
        pid = int(served.wait_for(r"tritonserver ready \(local, pid (\d+)\)").group(1))
        grpc_url = served.wait_for(r"^\s+grpc\s+(\S+)$").group(1)
        assert served.wait_for(r"^\s+log\s+(\S+)$").group(1) == str(log_file)
        a = np.arange(4, dtype=np.float32)
        with grpcclient.InferenceServerClient(grpc_url) as client:
            inputs = [
                grpcclient.InferInput("INPUT0", [4], "FP32"),
                grpcclient.InferInput("INPUT1", [4], "FP32"),
            ]
            inputs[0].set_data_from_numpy(a)
            inputs[1].set_data_from_numpy(a)
            result = client.infer("add_sub", inputs)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), 2 * a)
        code, out = served.stop(signal.SIGTERM)
    finally:
        served.kill()
    assert code == 0
    assert "received SIGTERM; stopping tritonserver" in out
    assert process_gone(pid)
    assert "successfully loaded 'add_sub'" in log_file.read_text()


def test_serve_stops_cleanly_on_ctrl_c(triton_repo):
    served = Served(str(triton_repo))
    try:
        pid = int(served.wait_for(r"tritonserver ready \(local, pid (\d+)\)").group(1))
        code, out = served.stop(signal.SIGINT)
    finally:
        served.kill()
    assert code == 0
    assert "received SIGINT" in out
    assert process_gone(pid)


def test_serve_reports_a_missing_repository_and_exits_1(tmp_path):
    proc = subprocess.run(
        [HERMES, "serve", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    assert f"hermes serve: error: model repository {tmp_path / 'nowhere'} does not exist" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpus", "zero"], "expected comma-separated GPU indices such as 0,1, 'none' or 'all'; got 'zero'"),
        (["--runtime", "docker"], "unknown runtime 'docker'"),
        (["--address", "203.0.113.7"], "address '203.0.113.7' cannot be bound on this machine"),
        (["--timeout", "-5"], "timeout_s must be a finite number of seconds > 0, got -5.0"),
    ],
)
def test_serve_rejects_bad_options_with_a_clear_message(triton_repo, args, message):
    proc = subprocess.run(
        [HERMES, "serve", str(triton_repo), *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


SLOW_CONFIG = """\
name: "slow"
backend: "python"
max_batch_size: 0
input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""
# initialize() reports its stub's pid through a FIFO, then takes ten minutes
SLOW_MODEL = """\
import os
import time


class TritonPythonModel:
    def initialize(self, args):
        with open({fifo!r}, "w") as fifo:
            fifo.write(str(os.getpid()))
        time.sleep(600)

    def execute(self, requests):
        raise NotImplementedError
"""


def read_fifo(path: Path, timeout_s: float) -> str:
    """What the first writer of the FIFO at ``path`` writes (waits for it up to ``timeout_s``)."""
    got: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: got.put(path.read_text()), daemon=True)
    reader.start()
    try:
        return got.get(timeout=timeout_s)
    finally:
        if reader.is_alive():  # no writer came: be the writer, so the reader thread ends
            with open(path, "w"):
                pass
        reader.join(10)


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_promptly_on_a_signal_while_a_model_is_still_loading(triton_repo, tmp_path, sig):
    fifo = tmp_path / "loading.fifo"
    os.mkfifo(fifo)
    (triton_repo / "slow" / "1").mkdir(parents=True)
    (triton_repo / "slow" / "config.pbtxt").write_text(SLOW_CONFIG)
    (triton_repo / "slow" / "1" / "model.py").write_text(SLOW_MODEL.format(fifo=str(fifo)))
    served = Served(str(triton_repo), "--log-file", str(tmp_path / "server.log"))
    try:
        stub = int(read_fifo(fifo, timeout_s=120))  # the model is inside initialize() now
        triton = parent_of(stub)
        code, out = served.stop(sig)  # waits at most 60 s: far less than the 600 s load
        assert served.proc.stderr is not None
        stderr = served.proc.stderr.read()
    finally:
        served.kill()
    assert code == 0, stderr
    assert f"received {sig.name} before tritonserver was ready; stopping tritonserver" in out
    assert re.search(r"^stopped \(exit status -?\d+\)$", out, re.M), out
    assert "tritonserver ready" not in out
    assert process_gone(triton)
    assert process_gone(stub)
    assert stderr == ""
