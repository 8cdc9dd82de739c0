"""``hermes profile`` against the real local Triton: a fused streaming model and a streaming ensemble.

The repository holds a small ONNX network, its fused streaming model and the same streaming as
an ensemble; the profiler serves it itself (one server per instance count).
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from hermes.aeriel.exceptions import ProfileError  # noqa: E402
from hermes.aeriel.profile import (  # noqa: E402
    FloorNetwork,
    SweepConfig,
    discover_target,
    floor_rate,
    format_table,
    load_network,
    make_data,
    network_batches,
    sweep,
    write_csv,
)
from hermes.quiver import ModelRepository, Platform  # noqa: E402
from hermes.quiver.streaming import add_fused_streaming_model, sliding_windows  # noqa: E402

K, STRIDE, BATCH, N = 32, 4, 2, 4
HERMES = [sys.executable, "-c", "from hermes.aeriel._cli import main; main()"]


class Net(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x.sum(dim=1))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("profile") / "repo"
    repository = ModelRepository(root)
    net = repository.add("net", platform=Platform.ONNX)
    net.config.add_input("x", [BATCH, 3, K])
    net.config.add_output("y", [BATCH, K])
    net.export_version(Net(), example_inputs=[torch.randn(BATCH, 3, K)])
    add_fused_streaming_model(
        net, stride=STRIDE, batch_size=BATCH, num_updates=N, name="fused", inputs={"u": "x"}
    )
    ensemble = repository.add("ens", platform=Platform.ENSEMBLE)
    ensemble.add_streaming_inputs(net.inputs["x"], stride=STRIDE, batch_size=BATCH, key="u")
    ensemble.add_streaming_output(net.outputs["y"], stride=STRIDE, num_updates=N, key="avg")
    ensemble.export_version()
    return root


def _config(repo: Path, model: str) -> dict:
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2 as pb

    config = text_format.Parse((repo / model / "config.pbtxt").read_text(), pb.ModelConfig())
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def test_targets_are_discovered_from_the_streaming_parameters(repo: Path) -> None:
    fused = discover_target(_config(repo, "fused"))
    assert fused.fused and fused.network == "net" and fused.outputs == ("y",)
    (group,) = fused.groups
    assert (group.input, group.channels, group.update_size, group.kernel_size) == ("u", 3, STRIDE * BATCH, K)
    assert group.tensors == (("x", 3),)
    ens = discover_target(_config(repo, "ens"))
    assert not ens.fused and ens.network == "net" and ens.groups[0].tensors == (("x", 3),)
    assert set(ens.steps) == {"ens", "snapshotter", "net", "aggregator"}
    with pytest.raises(ProfileError, match=r"input 'x' has shape \[2, 3, 32\]"):
        discover_target(_config(repo, "net"))


def test_the_floor_cuts_the_windows_the_snapshotter_cuts(repo: Path) -> None:
    target = discover_target(_config(repo, "fused"))
    (data,) = make_data(target, 1, 5)
    batches = network_batches(target, data)
    assert len(batches) == 5 and batches[0]["x"].shape == (BATCH, 3, K)
    windows = sliding_windows(data["u"], kernel_size=K, stride=STRIDE)
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), windows)
    network = load_network(repo, "net")
    outputs = network.run(batches[1])
    np.testing.assert_allclose(outputs[0], np.tanh(windows[2:4].sum(axis=1)), rtol=1e-5, atol=1e-6)
    first, second = network.instances(2)  # two sessions, as two served instances
    assert first is not second and first is not network.run
    np.testing.assert_allclose(second(batches[1])[0], outputs[0], rtol=1e-6)


def test_the_floor_feeds_the_batches_each_serving_form_runs(repo: Path) -> None:
    target = discover_target(_config(repo, "fused"))
    data = make_data(target, 2, 3)
    per_stream = [network_batches(target, d) for d in data]
    net = load_network(repo, "net")
    assert net.max_batch_size == 0  # a fixed batch: only concurrent calls of B windows
    with pytest.raises(ProfileError, match="takes at most 0 windows per call"):
        floor_rate(net, target, data, form="batched")
    assert floor_rate(net, target, data, form="best", passes=1) > 0
    seen: list[np.ndarray] = []

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:  # the network, with a variable batch axis
        seen.append(feeds["x"])
        return np.tanh(feeds["x"].sum(axis=1))

    recording = FloorNetwork(run, ["x"], max_batch_size=2 * BATCH)
    assert floor_rate(recording, target, data, form="batched", passes=2, warm_up=1) > 0
    # one warm-up call, then 2 passes of 3 updates, each one call of both streams' B windows
    assert [a.shape for a in seen] == [(2 * BATCH, 3, K)] * 7
    for u in range(3):
        expected = np.concatenate([per_stream[0][u]["x"], per_stream[1][u]["x"]])
        np.testing.assert_array_equal(seen[1 + u], expected)
    seen.clear()
    assert floor_rate(recording, target, data, form="concurrent", passes=1, warm_up=2) > 0
    assert len(seen) == 2 * 2 + 2 * 3 and {a.shape for a in seen} == {(BATCH, 3, K)}
    timed = sorted(seen[4:], key=lambda a: a.tobytes())
    fed = sorted([b["x"] for feeds in per_stream for b in feeds], key=lambda a: a.tobytes())
    for got, want in zip(timed, fed, strict=True):
        np.testing.assert_array_equal(got, want)
    # concurrent streams each get their own copy of the network, as instances do
    made: list[int] = []

    def instance(count: int) -> object:
        made.append(count)
        return run

    seen.clear()
    per_instance = FloorNetwork(run, ["x"], max_batch_size=2 * BATCH, instance=instance)
    assert floor_rate(per_instance, target, data, form="concurrent", passes=1, warm_up=1) > 0
    assert made == [2, 2] and len(seen) == 2 * 1 + 2 * 3  # 2 copies, warmed up, then timed
    with pytest.raises(ValueError, match="form must be 'concurrent', 'batched' or 'best', got 'serial'"):
        floor_rate(net, target, data, form="serial")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="passes must be >= 1, got 0"):
        floor_rate(net, target, data, passes=0)


def test_a_sweep_streams_real_sequences_and_reports_every_point(repo: Path, tmp_path: Path) -> None:
    config = SweepConfig(
        model="fused", repository=repo, streams=(1, 2), in_flight=(1, 3), updates=40, floor=True
    )
    results = sweep(config)
    assert [(m.streams, m.in_flight) for m in results] == [(1, 1), (1, 3), (2, 1), (2, 3)]
    for m in results:
        assert m.requests == 40 * m.streams and len(m.latencies_s) == m.requests
        assert m.seconds_of_data == pytest.approx(m.streams * 40 * STRIDE * BATCH / 4096)
        assert m.server_cpu_s is not None and m.server_cpu_s >= 0 and m.client_cpu_s > 0
        assert set(m.server_split_us) == {"fused"} and m.server_split_us["fused"] > 0
        assert m.floor_rate and m.floor_ratio == pytest.approx(m.data_rate / m.floor_rate)
    assert sum(m.server_cpu_s or 0.0 for m in results) > 0  # /proc counts in clock ticks (10 ms)
    table = format_table(results)
    assert table.count("\n") == 5 and "fused=" in table
    write_csv(tmp_path / "p.csv", results)
    rows = list(csv.DictReader((tmp_path / "p.csv").read_text().splitlines()))
    assert [int(r["streams"]) for r in rows] == [1, 1, 2, 2] and float(rows[0]["data_s_per_s"]) > 0


def test_instances_are_swept_on_the_ensemble_with_its_split_per_step(repo: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [*HERMES, "profile", "ens", "-r", str(repo), "--streams", "2", "--instances", "1,2", "--updates", "8",
         "--csv", str(tmp_path / "e.csv"), "--plot", str(tmp_path / "e.png")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "e.csv").read_text().splitlines()))
    assert [r["instances"] for r in rows] == ["1", "2"]
    for row in rows:
        assert all(f"{step}=" in row["server_split_us"] for step in ("snapshotter", "net", "aggregator"))
    assert (tmp_path / "e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (repo / "snapshotter" / "config.pbtxt").read_text().count(
        "count: 1"
    ) == 1  # the original is untouched


def test_bad_sweeps_are_refused_before_anything_starts(repo: Path) -> None:
    with pytest.raises(ProfileError, match=r"--instances changes model configs"):
        SweepConfig(model="fused", url="127.0.0.1:1", instances=(2,))
    with pytest.raises(ProfileError, match=r"in_flight must be positive"):
        SweepConfig(model="fused", repository=repo, in_flight=(0,))
    result = subprocess.run([*HERMES, "profile", "fused", "--streams", "1"], capture_output=True, text=True)
    assert result.returncode == 2 and "--url" in result.stderr and "--repository" in result.stderr
