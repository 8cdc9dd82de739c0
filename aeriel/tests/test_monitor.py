"""The monitor against real local Triton servers: its CSV holds exactly what the test sent."""

from __future__ import annotations

import collections
import contextlib
import csv
import json
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from typer.testing import CliRunner

from hermes.aeriel._cli import _load_plugins, app
from hermes.aeriel.monitor import CSV_COLUMNS, SERVER_ROW, Monitor
from hermes.aeriel.routing import Endpoint
from hermes.aeriel.server import Server, serve
from hermes.aeriel.testing import (
    leftover_resources,
    refusing_port,
    retry_while_port_in_use,
    serve_on_free_ports,
    wait_until_released,
)

BATCHED_CONFIG = textwrap.dedent(
    """\
    name: "plus_one"
    backend: "python"
    max_batch_size: 8
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]
    output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
    instance_group [ { kind: KIND_CPU count: 1 } ]
    """
)
BATCHED_MODEL = textwrap.dedent(
    """\
    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            return [
                pb_utils.InferenceResponse(
                    [pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy() + np.float32(1))]
                )
                for r in requests
            ]
    """
)


def write_plus_one(repo: Path) -> None:
    (repo / "plus_one" / "1").mkdir(parents=True)
    (repo / "plus_one" / "config.pbtxt").write_text(BATCHED_CONFIG)
    (repo / "plus_one" / "1" / "model.py").write_text(BATCHED_MODEL)


SENT: collections.Counter[int] = collections.Counter()


def send(server, count: int, batch: int) -> None:
    """``count`` requests of ``batch`` rows each to plus_one, checking every answer.

    Triton counts a request in its statistics just after it answers; wait (by deadline)
    until the server has counted all of them, so a reading right after sees them.
    """
    x = np.arange(batch * 3, dtype=np.float32).reshape(batch, 3)
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        for _ in range(count):
            inp = grpcclient.InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            np.testing.assert_array_equal(client.infer("plus_one", [inp]).as_numpy("y"), x + 1)
        SENT[server.pid] += count
        deadline = time.monotonic() + 30
        while True:
            stats = client.get_inference_statistics("plus_one", as_json=True)["model_stats"][0]
            if int(stats["inference_stats"]["success"].get("count", 0)) >= SENT[server.pid]:
                return
            assert time.monotonic() < deadline, "the server never counted the requests"
            threading.Event().wait(0.005)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory):
    """Two servers shared by the tests of this module (every test measures deltas)."""
    root = tmp_path_factory.mktemp("monitor")
    servers = []
    try:
        for name in ("a", "b"):
            repo = root / f"repo-{name}"
            repo.mkdir()
            write_plus_one(repo)
            servers.append(serve(repo, models=["plus_one"], log_file=root / f"{name}.log", exit_timeout_s=1))
        yield servers
    finally:
        stoppers = [threading.Thread(target=s.close) for s in servers]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
        left = [item for s in servers for item in leftover_resources(s)]
        assert left == []


@pytest.mark.parametrize("source", ["metrics", "statistics"])
def test_monitor_csv_counts_match_the_requests_sent_to_two_servers(two_servers, tmp_path, source):
    a, b = two_servers
    path = tmp_path / "monitor.csv"
    endpoints = [Endpoint.from_server(a, name="a"), Endpoint.from_server(b, name="b")]
    with Monitor(endpoints, csv_path=path, source=source) as monitor:
        baseline = monitor.poll()
        assert [(r.endpoint, r.model, r.requests) for r in baseline] == [
            ("a", SERVER_ROW, 0),
            ("b", SERVER_ROW, 0),
        ]
        send(a, count=5, batch=4)
        send(b, count=3, batch=2)
        monitor.poll()
        send(a, count=2, batch=1)
        monitor.poll()

    rows = read_csv(path)
    assert list(rows[0]) == CSV_COLUMNS
    models = [r for r in rows if r["model"] == "plus_one"]
    got = [
        (
            r["endpoint"],
            r["version"],
            r["status"],
            r["requests"],
            r["inferences"],
            r["executions"],
            r["failures"],
        )
        for r in models
    ]
    assert got == [
        ("a", "1", "ok", "5", "20", "5", "0"),
        ("b", "1", "ok", "3", "6", "3", "0"),
        ("a", "1", "ok", "2", "2", "2", "0"),
    ]
    assert [float(r["avg_batch_size"]) for r in models] == [4.0, 2.0, 1.0]
    for r in models:
        times = [
            float(r[c]) for c in ("queue_us", "compute_input_us", "compute_infer_us", "compute_output_us")
        ]
        assert all(t >= 0 for t in times)
        # the server-side request time covers queue and compute
        assert float(r["request_us"]) >= times[0] + times[2] > 0
        assert float(r["interval_s"]) > 0
        assert r["gpu_utilization"] == ""  # no GPU here: empty, not zero
    totals = [(r["endpoint"], r["requests"]) for r in rows if r["model"] == SERVER_ROW]
    assert totals == [("a", "0"), ("b", "0"), ("a", "5"), ("b", "3"), ("a", "2"), ("b", "0")]


def test_monitor_reports_a_stopped_server_as_down_and_keeps_reading_the_other(
    two_servers, tmp_path, start_triton
):
    a, _ = two_servers
    repo = tmp_path / "repo"
    repo.mkdir()
    write_plus_one(repo)
    b = start_triton(repo, models=["plus_one"])
    with Monitor([Endpoint.from_server(a, "a"), Endpoint.from_server(b, "b")], timeout_s=1.0) as monitor:
        monitor.poll()
        b.close()
        send(a, count=3, batch=1)
        rows = monitor.poll()
    by = {(r.endpoint, r.model): r for r in rows}
    assert by[("b", SERVER_ROW)].status.startswith("down: ")
    assert by[("b", SERVER_ROW)].requests == 0
    assert by[("a", "plus_one")].requests == 3
    assert by[("a", SERVER_ROW)].status == "ok"


def test_monitor_counts_from_zero_after_a_server_restarts_on_the_same_ports(tmp_path, start_triton):
    repo = tmp_path / "repo"
    repo.mkdir()
    write_plus_one(repo)
    first = serve_on_free_ports(repo, models=["plus_one"], log_file=tmp_path / "first.log", exit_timeout_s=2)
    ports = {"http_port": first.spec.http_port, "grpc_port": first.spec.grpc_port}
    ports["metrics_port"] = first.spec.metrics_port
    endpoint = Endpoint.from_server(first, "node")
    with first, Monitor(endpoint, csv_path=tmp_path / "m.csv") as monitor:
        monitor.poll()
        send(first, count=6, batch=1)
        assert [r.requests for r in monitor.poll() if r.model == "plus_one"] == [6]
        first.close()
        assert wait_until_released(first) == []
        down = monitor.poll()
        assert down[0].status.startswith("down")
        second = retry_while_port_in_use(lambda: start_triton(repo, models=["plus_one"], **ports))
        send(second, count=2, batch=3)
        rows = monitor.poll()
    model_rows = [r for r in rows if r.model == "plus_one"]
    assert [(r.status, r.requests, r.inferences) for r in model_rows] == [("restarted", 2, 6)]
    statuses = [r["status"].split(":")[0] for r in read_csv(tmp_path / "m.csv") if r["model"] == SERVER_ROW]
    assert statuses == ["ok", "ok", "down", "restarted"]


def test_monitor_background_thread_writes_rows_until_closed(two_servers, tmp_path):
    a, _ = two_servers
    path = tmp_path / "bg.csv"
    monitor = Monitor([Endpoint.from_server(a, "a")], csv_path=path, interval_s=0.05).start()
    send(a, count=4, batch=2)
    monitor.stop()
    monitor.poll()  # the rest of the interval the thread did not reach
    monitor.close()
    monitor.close()  # idempotent
    rows = read_csv(path)
    assert sum(int(r["requests"]) for r in rows if r["model"] == "plus_one") == 4
    assert sum(int(r["inferences"]) for r in rows if r["model"] == "plus_one") == 8
    with pytest.raises(RuntimeError, match="closed"):
        monitor.poll()


def test_monitor_command_writes_csv_and_names_a_down_server(two_servers, tmp_path):
    a, _ = two_servers
    with contextlib.ExitStack() as ports:  # held, not listening: nothing can answer on them
        dead_http, dead_grpc, dead_metrics = (ports.enter_context(refusing_port()) for _ in range(3))
        _run_monitor_command(a, tmp_path, dead_http, dead_grpc, dead_metrics)


def _run_monitor_command(
    a: Server, tmp_path: Path, dead_http: int, dead_grpc: int, dead_metrics: int
) -> None:
    endpoints_file = tmp_path / "endpoints.json"
    dead = {"name": "dead", "grpc": f"127.0.0.1:{dead_grpc}", "http": f"127.0.0.1:{dead_http}"}
    dead["metrics"] = f"127.0.0.1:{dead_metrics}"
    endpoints_file.write_text(json.dumps({"endpoints": [dead]}))
    _load_plugins()
    path = tmp_path / "cli.csv"
    result = CliRunner().invoke(
        app,
        [
            "monitor",
            "--host",
            "127.0.0.1",
            "--grpc-port",
            str(a.spec.grpc_port),
            "--http-port",
            str(a.spec.http_port),
            "--metrics-port",
            str(a.spec.metrics_port),
            "--endpoints",
            str(endpoints_file),
            "--csv",
            str(path),
            "--interval",
            "0.1",
            "--duration",
            "0.35",
            "--no-live",
            "--timeout",
            "0.5",
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    rows = read_csv(path)
    live = f"127.0.0.1:{a.spec.grpc_port}"
    assert {r["endpoint"] for r in rows} == {"dead", live}
    assert all(r["status"].startswith("down") for r in rows if r["endpoint"] == "dead")
    assert all(r["status"] == "ok" for r in rows if r["endpoint"] == live)
    assert "hermes monitor" in result.output and "down" in result.output


def test_monitor_command_rejects_a_malformed_endpoint_file(tmp_path):
    bad = tmp_path / "endpoints.json"
    bad.write_text('{"servers": []}')
    _load_plugins()
    result = CliRunner().invoke(app, ["monitor", "--endpoints", str(bad), "--duration", "0", "--no-live"])
    assert result.exit_code == 2
    assert "'endpoints' list" in result.output
