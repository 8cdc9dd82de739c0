"""``hermes repo show`` and ``hermes export``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from hermes.quiver import ModelRepository, Platform
from hermes.quiver._cli import export_command, repo_app


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(repo_app, name="repo")
    app.command("export")(export_command)
    return app


def test_repo_show_prints_models_versions_platforms_and_tensors(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    net = repo.add("net", platform=Platform.ONNX)
    net.config.max_batch_size = 8
    net.config.add_input("x", [3], "FP32")
    net.config.add_output("y", [2], "INT64")
    net.config.write()
    (tmp_path / "repo" / "net" / "1").mkdir()
    (tmp_path / "repo" / "net" / "2").mkdir()
    repo.add("py", platform=Platform.PYTHON)
    hermes = Path(sys.executable).parent / "hermes"
    env = os.environ | {"COLUMNS": "160"}
    out = subprocess.run(
        [str(hermes), "repo", "show", str(tmp_path / "repo")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    net_row = next(line for line in lines if "│ net" in line)
    assert "1, 2" in net_row and "onnxruntime_onnx" in net_row and "x [-1, 3] FP32" in net_row
    assert "y [-1, 2] INT64" in net_row and "│ 8 " in net_row
    py_row = next(line for line in lines if "│ py" in line)
    assert "python" in py_row and "│ -  " in py_row
    assert "(2 models)" in " ".join(out.stdout.split())  # the title wraps when the path is long


def test_repo_show_reports_a_broken_repository(app: typer.Typer, tmp_path: Path) -> None:
    (tmp_path / "repo" / "broken").mkdir(parents=True)
    result = CliRunner().invoke(app, ["repo", "show", str(tmp_path / "repo")])
    assert result.exit_code == 1
    assert "broken/config.pbtxt: missing" in result.output


def test_export_writes_a_verified_version_and_prints_the_report(
    app: typer.Typer, tmp_path: Path, nets: ModuleType
) -> None:
    import torch

    weights = tmp_path / "weights.pt"
    trained = nets.Affine(features=4, outputs=3)
    torch.save(trained.state_dict(), weights)
    example = tmp_path / "example.npz"
    np.savez(example, x=np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32))
    args = [
        "export",
        "quiver_test_nets:Affine",
        "--repo",
        str(tmp_path / "repo"),
        "--name",
        "affine",
        "--platform",
        "torchscript",
        "--weights",
        str(weights),
        "--kwargs",
        '{"features": 4, "outputs": 3}',
        "--max-batch-size",
        "4",
        "--example",
        str(example),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "exported affine version 1" in result.output
    assert "PASSED" in result.output and "OUTPUT__0" in result.output
    model = ModelRepository(tmp_path / "repo").models["affine"]
    assert model.versions == [1] and model.config.max_batch_size == 4
    loaded = torch.jit.load(str(tmp_path / "repo" / "affine" / "1" / "model.pt"))
    x = torch.ones(1, 4)
    torch.testing.assert_close(loaded(x), trained(x))


@pytest.mark.filterwarnings("ignore:.*accepted tracer warnings")
def test_export_failing_verification_prints_the_report_and_writes_nothing(
    app: typer.Typer, tmp_path: Path, nets: ModuleType
) -> None:
    example = tmp_path / "example.npz"
    np.savez(example, x=np.array([[-1.0, -1.0], [5.0, 5.0]], dtype=np.float32))
    args = [
        "export",
        "quiver_test_nets:SignBranch",
        "--repo",
        str(tmp_path / "repo"),
        "--name",
        "branchy",
        "--platform",
        "torchscript",
        "--max-batch-size",
        "2",
        "--example",
        str(example),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1  # tracing warned about the data-dependent branch
    assert "tracing warned" in result.output and "if x.sum() > 0:" in result.output
    assert list(ModelRepository(tmp_path / "repo").models) == []
    result = CliRunner().invoke(app, [*args, "--accept-tracer-warnings"])
    assert result.exit_code == 2
    assert "FAILED" in result.output and "failed verification; nothing was written" in result.output
    assert list(ModelRepository(tmp_path / "repo").models) == []


def test_export_rejects_a_bad_factory_path(app: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", "no_colon", "--repo", str(tmp_path), "--name", "m"])
    assert result.exit_code == 2
    assert "expected package.module:factory" in result.output


@pytest.mark.parametrize(
    ("value", "words"), [("{oops", "--kwargs: not JSON"), ("[1, 2]", "expected a JSON object")]
)
def test_export_rejects_kwargs_that_are_not_a_json_object(
    app: typer.Typer, tmp_path: Path, value: str, words: str
) -> None:
    pytest.importorskip("torch")
    result = CliRunner().invoke(
        app,
        ["export", "torch.nn:Identity", "--repo", str(tmp_path / "repo"), "--name", "m", "--kwargs", value],
    )
    assert result.exit_code == 2
    assert words in result.output
    assert not (tmp_path / "repo" / "m").exists()


def test_export_rejects_a_bad_input_shape_before_touching_the_repository(
    app: typer.Typer, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    repo = tmp_path / "repo"
    args = ["export", "torch.nn:Identity", "--repo", str(repo), "--name", "m", "--input-shape", "x=4,oops"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "--input-shape 'x=4,oops': expected NAME=D0,D1,..." in result.output
    assert not (repo / "m").exists()
