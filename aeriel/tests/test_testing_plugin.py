"""The pytest plugin of hermes-aeriel (``hermes.aeriel.testing``) as another project's suite sees it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SUITE = """
import os
import signal

def test_the_server_dies(triton_server):
    os.kill(triton_server.pid, signal.SIGKILL)
    triton_server.process.wait()
    assert False, "the client saw the connection reset"

def test_the_server_lives(triton_server):
    assert False, "a client-side error"

def test_passes(triton_server):
    assert triton_server.is_running()
"""


def test_a_failed_test_reports_each_server_state_and_log_tail(tmp_path: Path) -> None:
    (tmp_path / "test_suite.py").write_text(SUITE)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 1 and "2 failed, 1 passed" in out, out[-3000:]
    died, lived = out.split("_ test_the_server_dies _")[1].split("_ test_the_server_lives _")
    assert "- tritonserver 0 -" in died and "was killed by signal 9 when the test failed" in died
    assert "was running when the test failed" in lived
    for section in (died, lived):  # the log's last lines: the server had started its endpoints
        assert "Started GRPCInferenceService at 127.0.0.1:" in section
    assert out.count("when the test failed") == 2  # not for the test that passed
