"""``hermes models list|load|unload|swap``, run as real subprocesses against two real local servers."""

from __future__ import annotations

import compileall
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException
from typer.testing import CliRunner

from hermes.aeriel.control._cli import models_app, zero_inputs
from hermes.aeriel.testing import refusing_port

HERMES = str(Path(sys.executable).parent / "hermes")
ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}

# y = VERSION * x + SERVER / 10: the answer tells which version of which server ran it.
SCALE_CONFIG = textwrap.dedent(
    """\
    name: "scale"
    backend: "python"
    max_batch_size: 4
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] } ]
    output [ { name: "y" data_type: TYPE_FP32 dims: [ 2 ] } ]
    instance_group [ { kind: KIND_CPU count: 1 } ]
    version_policy { specific { versions: [ 1 ] } }
    """
)
SCALE_MODEL = textwrap.dedent(
    """\
    import numpy as np
    import triton_python_backend_utils as pb_utils

    VERSION = {version}
    SERVER = {server}


    class TritonPythonModel:
        def initialize(self, args):
            if {broken}:
                raise RuntimeError("version {version} has corrupt weights on server {server}")

        def execute(self, requests):
            out = []
            for r in requests:
                x = pb_utils.get_input_tensor_by_name(r, "x").as_numpy()
                y = (VERSION * x + SERVER / 10).astype(np.float32)
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", y)]))
            return out
    """
)


def write_repo(root: Path, server: int, broken: tuple[int, ...] = ()) -> Path:
    """``scale`` with versions 1-3 (those in ``broken`` fail to load) and an unloaded copy ``spare``."""
    repo = root / f"repo-{server}"
    for name in ("scale", "spare"):
        (repo / name).mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(SCALE_CONFIG.replace('"scale"', f'"{name}"'))
        for v in (1, 2, 3):
            (repo / name / str(v)).mkdir()
            (repo / name / str(v) / "model.py").write_text(
                SCALE_MODEL.format(version=v, server=server, broken=v in broken)
            )
    compileall.compile_dir(str(repo), quiet=1)  # so a reload does not see changed version folders
    return repo


@pytest.fixture
def pair(tmp_path, start_triton):
    """Two servers with ``scale`` version 1 loaded; version 3 cannot load on the second."""
    return [
        start_triton(write_repo(tmp_path, i, broken=(3,) if i == 1 else ()), models=["scale"])
        for i in range(2)
    ]


# `hermes models ...` without loading the other subpackages' commands (cloudbreak's take seconds)
MODELS_ONLY = [
    sys.executable,
    "-c",
    "from hermes.aeriel._cli import app; import hermes.aeriel.control._cli; app(prog_name='hermes')",
]


def hermes(*args: str, console_script: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``hermes models *args`` in a subprocess: the console script, or just the models group."""
    argv = [HERMES] if console_script else MODELS_ONLY
    return subprocess.run(
        [*argv, "models", *args], capture_output=True, text=True, env=ENV, timeout=120, check=False
    )


def urls(servers) -> list[str]:
    return [arg for s in servers for arg in ("--url", s.grpc_url)]


def endpoints_file(tmp_path: Path, servers) -> Path:
    path = tmp_path / "endpoints.json"
    entries = [
        {
            "name": f"server-{i}",
            "grpc": s.grpc_url,
            "http": s.http_url.removeprefix("http://"),
            "metrics": s.metrics_url.removeprefix("http://").removesuffix("/metrics"),
        }
        for i, s in enumerate(servers)
    ]
    path.write_text(json.dumps({"endpoints": entries}))
    return path


def infer(server, version: int | None = None) -> np.ndarray:
    x = np.array([[1.0, 2.0]], np.float32)
    inp = grpcclient.InferInput("x", [1, 2], "FP32")
    inp.set_data_from_numpy(x)
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        result = client.infer("scale", [inp], model_version="" if version is None else str(version))
    return result.as_numpy("y")


def inference_count(server, version: int) -> int:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        stats = client.get_inference_statistics("scale", str(version), as_json=True)
    return int(stats["model_stats"][0].get("inference_count", 0))


def test_models_list_prints_each_servers_models_versions_and_state(pair, tmp_path):
    proc = hermes("list", "--endpoints", str(endpoints_file(tmp_path, pair)), console_script=True)
    assert proc.returncode == 0, proc.stderr
    lines = [line.split() for line in proc.stdout.splitlines()]
    assert lines[0] == ["SERVER", "MODEL", "VERSIONS", "STATE", "REASON"]
    assert lines[1:] == [
        ["server-0", "scale", "1", "READY"],
        ["server-0", "spare", "-", "UNLOADED"],
        ["server-1", "scale", "1", "READY"],
        ["server-1", "spare", "-", "UNLOADED"],
    ]

    # a server that is down: exit 1 naming it, the others still listed
    with refusing_port() as port:
        down = f"127.0.0.1:{port}"
        proc = hermes("list", *urls(pair), "--url", down, "--model", "scale", "--json")
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"hermes models list: error: server {down} is unreachable")
    assert "Connection refused" in proc.stderr
    assert json.loads(proc.stdout) == [
        {"server": s.grpc_url, "model": "scale", "versions": "1", "state": "READY", "reason": ""}
        for s in pair
    ]


def test_models_load_serves_exactly_the_given_versions_and_unload_removes_them(pair):
    proc = hermes("load", "scale", "--version", "1", "--version", "2", *urls(pair))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("loaded scale versions 1, 2 on 2 server(s) in ")
    for i, s in enumerate(pair):
        assert f"  {s.grpc_url}: scale ready versions 1, 2" in proc.stdout
        np.testing.assert_allclose(infer(s, 1), [[1 + i / 10, 2 + i / 10]], rtol=1e-6)
        np.testing.assert_allclose(infer(s, 2), [[2 + i / 10, 4 + i / 10]], rtol=1e-6)

    proc = hermes("unload", "scale", *urls(pair))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("unloaded scale on 2 server(s) in ")
    for s in pair:
        with pytest.raises(InferenceServerException, match=r"unknown model|not found|unavailable"):
            infer(s, 1)
    listed = hermes("list", *urls(pair), "--model", "scale", "--json")
    assert {(row["state"], row["reason"]) for row in json.loads(listed.stdout)} == {
        ("UNAVAILABLE", "unloaded")
    }


def test_models_swap_keeps_the_old_version_when_the_new_fails_and_moves_every_server_when_it_loads(
    pair, tmp_path
):
    # version 3 fails on server-1: exit 1 naming the server and Triton's reason, nothing switched
    proc = hermes("swap", "scale", "3", *urls(pair))
    assert proc.returncode == 1
    assert (
        f"hermes models swap: error: loading 'scale' versions [1, 3] on {pair[1].grpc_url}: " in proc.stderr
    )
    assert "version 3 has corrupt weights on server 1" in proc.stderr
    assert proc.stdout == ""
    # server-0 had loaded version 3 beside 1: it is rolled back, so both serve exactly version 1
    assert f"hermes models swap: rolled {pair[0].grpc_url} back to version(s) 1" in proc.stderr
    listed = hermes("list", *urls(pair), "--model", "scale", "--json")
    assert [
        (row["versions"], row["state"]) for row in json.loads(listed.stdout) if row["state"] == "READY"
    ] == [
        ("1", "READY"),
        ("1", "READY"),
    ]
    assert [infer(s, 1)[0, 0] for s in pair] == pytest.approx([1.0, 1.1])

    # a client keeps sending to version 1 of server-0 until it is retired: the drain times out
    stop = threading.Event()
    answered: list[float] = []

    def keep_sending() -> None:
        while not stop.is_set():
            try:
                answered.append(float(infer(pair[0], 1)[0, 0]))
            except InferenceServerException:
                return

    sender = threading.Thread(target=keep_sending)
    sender.start()
    try:
        proc = hermes(
            "swap", "scale", "2", "--warmup", "3", "--drain-timeout", "1", "--drain-idle", "0.3",
            "--endpoints", str(endpoints_file(tmp_path, pair)),
        )  # fmt: skip
    finally:
        stop.set()
        sender.join(60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == (
        "hermes models swap: warning: server-0 still received requests for the old version(s) 1 "
        "when the 1 s drain ended\n"
    )
    assert answered and set(answered) == {1.0}
    assert proc.stdout.startswith("swapped scale 1 -> 2 on 2 server(s) in ")
    assert "  server-0: scale ready versions 2" in proc.stdout
    assert "  server-1: scale ready versions 2" in proc.stdout
    # three zero-filled warm-up requests reached version 2 on each server
    assert [inference_count(s, 2) for s in pair] == [3, 3]
    assert [infer(s)[0, 0] for s in pair] == pytest.approx([2.0, 2.1])
    for s in pair:
        with pytest.raises(InferenceServerException, match=r"unavailable|not found|unknown"):
            infer(s, 1)

    # a server that is down: exit 1 naming it before anything changes
    with refusing_port() as port:
        proc = hermes("load", "scale", "--version", "1", *urls(pair), "--url", f"127.0.0.1:{port}")
    assert proc.returncode == 1
    assert (
        f"hermes models load: error: server 127.0.0.1:{port} is unreachable (liveness check)" in proc.stderr
    )
    assert [infer(s)[0, 0] for s in pair] == pytest.approx([2.0, 2.1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list"], "error: name the servers with --endpoints FILE or --url host:port"),
        (["unload", "m", "--url", "nohost:99999"], "grpc must be 'host:port' with a port in 1..65535"),
        (["load", "m", "--endpoints", "/nonexistent.json"], "endpoint file /nonexistent.json does not exist"),
        (["swap", "m", "2", "--url", "h:1", "--warmup", "-1"], "--warmup, --drain-timeout and --drain-idle"),
    ],
)
def test_models_commands_reject_bad_arguments_with_exit_2(args, message):
    result = CliRunner().invoke(models_app, args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_zero_inputs_follow_the_config_shapes_and_types():
    config = {
        "max_batch_size": 4,
        "input": [
            {"name": "x", "data_type": "TYPE_FP32", "dims": ["-1", "3"]},
            {"name": "n", "data_type": "TYPE_INT64", "dims": ["2"]},
            {"name": "s", "data_type": "TYPE_STRING", "dims": ["1"]},
        ],
    }
    inputs = zero_inputs(json_format.ParseDict(config, model_config_pb2.ModelConfig()))
    assert {k: (v.shape, v.dtype) for k, v in inputs.items()} == {
        "x": ((1, 1, 3), np.dtype(np.float32)),
        "n": ((1, 2), np.dtype(np.int64)),
        "s": ((1, 1), np.dtype(object)),
    }
    fp64 = {"max_batch_size": 0, "input": [{"name": "x", "data_type": "TYPE_FP64", "dims": [5]}]}
    assert zero_inputs(json_format.ParseDict(fp64, model_config_pb2.ModelConfig()))["x"].shape == (5,)
    bf16 = {"input": [{"name": "b", "data_type": "TYPE_BF16", "dims": [1]}]}
    with pytest.raises(ValueError, match="input 'b' has data type 'TYPE_BF16'"):
        zero_inputs(json_format.ParseDict(bf16, model_config_pb2.ModelConfig()))
