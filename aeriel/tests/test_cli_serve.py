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
    assert "demo" in out


def test_serve_help_describes_every_option():
    out = run_help("serve")
    for option, words in {
        "--runtime": "local (the bundled binary), apptainer or singularity",
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
        (["--gpus", "zero"], "expected comma-separated GPU indices such as 0,1; got 'zero'"),
        (["--runtime", "docker"], "unknown runtime 'docker'"),
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
