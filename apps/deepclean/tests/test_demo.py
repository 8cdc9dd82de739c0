"""``hermes demo`` in a short configuration: the whole product end to end, checked numerically.

The demo is an application (apps/deepclean); ``hermes demo`` reaches it through the ``hermes.cli``
entry-point group, so these tests run the real ``hermes`` command line.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERMES = [sys.executable, "-c", "from hermes.aeriel._cli import main; main()"]
# the same command line in an interpreter where `import torch` fails (as on a machine without it)
HERMES_WITHOUT_TORCH = [
    sys.executable, "-c", "import sys; sys.modules['torch'] = None; from hermes.aeriel._cli import main; main()",
]  # fmt: skip


def _shm() -> set[str]:
    return {p.name for p in Path("/dev/shm").iterdir()}


def _held(name: str) -> bool:
    """Whether a live process maps /dev/shm/``name`` (then it is in use, not leaked)."""
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            if f"/dev/shm/{name}" in maps.read_text():
                return True
        except OSError:
            continue
    return False


def _leaked(new: set[str]) -> list[str]:
    """The new entries the finished demo left: other processes on a shared machine make some too.

    hermes names its entries after their creator (``hermes<pid>x...`` for a server's regions,
    ``hermes-sw-<pid>-...`` for stillwater); the demo and its children have exited, so an entry
    whose creator is alive is someone else's, and an entry some live process maps is in use.
    """
    leaked = []
    for name in sorted(new):
        match = re.match(r"hermes(\d+)x|hermes-sw-(\d+)-", name)
        creator = int(match.group(1) or match.group(2)) if match else None
        if creator is not None and Path(f"/proc/{creator}").exists():
            continue
        if creator is None and _held(name):
            continue
        leaked.append(name)
    return leaked


@pytest.mark.slow
def test_demo_streams_checks_every_sample_and_writes_its_records(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    before = _shm()
    out = tmp_path / "demo"
    proc = subprocess.run(
        [*HERMES, "demo", "--seconds", "1.5", "--streams", "2", "--train-steps", "20",
         "--output", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "-> PASS" in proc.stdout
    assert "s of data per second" in proc.stdout and "p99" in proc.stdout

    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] is True
    assert summary["max_abs_error"] < 1e-4
    assert summary["config"]["streams"] == 2
    updates_per_stream = (6144 - 6144 % 128) // 128  # 1.5 s at 4096 Hz in updates of stride 16 x B 8
    assert summary["requests"] == 2 * updates_per_stream
    assert summary["latency_p50_ms"] > 0 and summary["latency_p99_ms"] >= summary["latency_p50_ms"]
    assert summary["seconds_of_data"] == pytest.approx(2 * updates_per_stream * 128 / 4096)

    with open(out / "requests.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == summary["requests"]
    assert {r["stream"] for r in rows} == {"0", "1"}

    arrays = np.load(out / "outputs.npz")
    for stream in (0, 1):
        served, offline = arrays[f"served_{stream}"], arrays[f"offline_{stream}"]
        assert served.shape == offline.shape == (updates_per_stream * 128,)
        np.testing.assert_allclose(served, offline, rtol=1e-4, atol=1e-4)
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = (out / "model-repository" / "deepclean-stream" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and "sequence_batching" in config  # fused by default
    assert summary["form"] == "fused" and "fused model: snapshotter" in proc.stdout
    assert summary["floor_data_seconds_per_second"] > 0
    assert summary["ratio_to_floor"] == pytest.approx(
        summary["data_seconds_per_second"] / summary["floor_data_seconds_per_second"]
    )
    assert f"served / floor = {summary['ratio_to_floor']:.2f}" in proc.stdout

    assert _leaked(_shm() - before) == []
    leftover = subprocess.run(
        ["pgrep", "-f", str(out / "model-repository")], capture_output=True, check=False
    )
    assert leftover.stdout == b""


@pytest.mark.slow
def test_demo_in_ensemble_form_streams_through_three_models_and_checks_every_sample(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "demo"
    proc = subprocess.run(
        [*HERMES, "demo", "--form", "ensemble", "--seconds", "1", "--streams", "1", "--train-steps", "0",
         "--output", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ensemble: snapshotter" in proc.stdout and "-> PASS" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["form"] == "ensemble" and summary["passed"] is True
    assert summary["requests"] == 4096 // 128
    config = (out / "model-repository" / "deepclean-stream" / "config.pbtxt").read_text()
    assert 'platform: "ensemble"' in config
    arrays = np.load(out / "outputs.npz")
    np.testing.assert_allclose(arrays["served_0"], arrays["offline_0"], rtol=1e-4, atol=1e-4)


def test_demo_rejects_a_stride_below_eight(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*HERMES, "demo", "--stride", "4", "--output", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "stride and batch_size must be >= 8, got 4 and 8" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_hermes_lists_the_demo_registered_from_outside_aeriel() -> None:
    proc = subprocess.run([*HERMES, "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"demo\s+Stream a DeepClean-shaped noise regression", proc.stdout)


def test_demo_without_torch_says_how_to_install_it(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*HERMES_WITHOUT_TORCH, "demo", "--output", str(tmp_path / "x"), "--no-progress"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "hermes demo: the demo needs torch, which is not installed" in proc.stderr
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()
