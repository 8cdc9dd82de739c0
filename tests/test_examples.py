"""The numbered scripts in examples/ run as a user would run them, and check their own results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("[0-9][0-9]_*.py"))


def test_there_are_examples_for_export_serve_stream_pipeline_and_failover() -> None:
    names = [p.stem for p in EXAMPLES]
    assert names == ["01_export", "02_serve", "03_stream", "04_pipeline", "05_failover"]


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_and_checks_its_result(script: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "repo")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    expected = {
        "01_export": "max abs",
        "02_serve": "max |served - torch|",
        "03_stream": "max |served - offline|",
        "04_pipeline": "running totals:",
        "05_failover": "max |served - offline|",
    }[script.stem]
    assert expected in proc.stdout


MIGRATION = sorted((Path(__file__).resolve().parents[1] / "examples" / "migration").glob("*.py"))


def test_the_migration_guide_ports_deepclean_and_aframe() -> None:
    assert [p.stem for p in MIGRATION] == ["aframe", "deepclean"]


@pytest.mark.parametrize("script", MIGRATION, ids=lambda p: p.stem)
def test_ported_predecessor_script_runs_and_matches_the_offline_reference(
    script: Path, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning:__main__", str(script), str(tmp_path / "repo")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    lines = [line for line in proc.stdout.splitlines() if "max |served - offline|" in line]
    names = {
        "aframe": ["background", "foreground"],
        "deepclean": ["deepclean-stream-0.25", "deepclean-stream-0.5"],
    }
    assert [line.split(":")[0] for line in lines] == names[script.stem]
    for line in lines:
        assert float(line.rsplit("=", 1)[1]) < 1e-4
