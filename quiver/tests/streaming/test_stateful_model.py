"""Exported streaming models (ONNX graphs, TorchScript) compute what the torch modules compute,
and their configs carry Triton implicit state as asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import model_config_pb2 as pb

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from hermes.quiver.streaming import (  # noqa: E402
    OnlineAverager,
    OnlineAveragerSpec,
    SequenceOptions,
    Snapshotter,
    SnapshotterSpec,
    StreamingConfigError,
    StreamingTensor,
    write_online_averager,
    write_snapshotter,
)


def run_artifact(model_dir: Path, platform: str, feeds: list[np.ndarray]) -> list[np.ndarray]:
    """Run version 1 of ``model_dir`` on ``feeds`` (inputs then states, in order)."""
    if platform == "onnx":
        session = ort.InferenceSession(
            str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        names = [i.name for i in session.get_inputs()]
        return session.run(None, dict(zip(names, feeds, strict=True)))
    module = torch.jit.load(str(model_dir / "1" / "model.pt"))
    with torch.no_grad():
        return [o.numpy() for o in module(*(torch.from_numpy(f) for f in feeds))]


def read_config(model_dir: Path) -> pb.ModelConfig:
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), pb.ModelConfig())


@settings(max_examples=15, deadline=None)
@given(
    kernel=st.integers(4, 24),
    data=st.data(),
    platform=st.sampled_from(["onnx", "torchscript"]),
    batched=st.booleans(),
)
def test_exported_snapshotter_equals_torch_module(
    tmp_path_factory: pytest.TempPathFactory, kernel: int, data: st.DataObject, platform: str, batched: bool
) -> None:
    stride = data.draw(st.integers(1, kernel - 1))
    batch = data.draw(st.integers(1, 4))
    channels = data.draw(st.lists(st.one_of(st.none(), st.integers(1, 3)), min_size=1, max_size=3))
    spec = SnapshotterSpec(
        tensors=tuple(StreamingTensor(name=f"t{i}", channels=c) for i, c in enumerate(channels)),
        kernel_size=kernel, stride=stride, batch_size=batch,
    )  # fmt: skip
    sequence = SequenceOptions(sequences_per_instance=4 if batched else 1)
    model_dir = tmp_path_factory.mktemp("m") / "snapshotter"
    write_snapshotter(model_dir, spec, platform=platform, sequence=sequence)
    n = 3 if batched else 1
    feeds = [np.random.randn(n, spec.num_channels, spec.update_size).astype(np.float32),
             np.random.randn(n, *spec.state_shape).astype(np.float32)]  # fmt: skip
    with torch.no_grad():
        expected = [
            t.numpy() for t in Snapshotter(spec, batched=batched)(*(torch.from_numpy(f) for f in feeds))
        ]
    got = run_artifact(model_dir, platform, feeds)
    assert [g.shape for g in got] == [e.shape for e in expected]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)


@settings(max_examples=15, deadline=None)
@given(
    kernel=st.integers(2, 24),
    data=st.data(),
    platform=st.sampled_from(["onnx", "torchscript"]),
    batched=st.booleans(),
)
def test_exported_online_averager_equals_torch_module(
    tmp_path_factory: pytest.TempPathFactory, kernel: int, data: st.DataObject, platform: str, batched: bool
) -> None:
    stride = data.draw(st.integers(1, kernel))
    spec = OnlineAveragerSpec(
        kernel_size=kernel, stride=stride, batch_size=data.draw(st.integers(1, 4)),
        num_updates=data.draw(st.integers(1, kernel // stride)), channels=data.draw(st.one_of(st.none(), st.integers(1, 3))),
    )  # fmt: skip
    sequence = SequenceOptions(sequences_per_instance=4 if batched else 1)
    model_dir = tmp_path_factory.mktemp("m") / "averager"
    write_online_averager(model_dir, spec, platform=platform, sequence=sequence)
    lead = (3,) if batched else ()
    feeds = [np.random.randn(*lead, *spec.input_shape).astype(np.float32),
             np.random.randn(*(lead or (1,)), *spec.state_shape).astype(np.float32)]  # fmt: skip
    with torch.no_grad():
        expected = [
            t.numpy() for t in OnlineAverager(spec, batched=batched)(*(torch.from_numpy(f) for f in feeds))
        ]
    got = run_artifact(model_dir, platform, feeds)
    assert [g.shape for g in got] == [e.shape for e in expected]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6)


def test_snapshotter_config_keeps_zero_state_with_the_users_idle_timeout(tmp_path: Path) -> None:
    spec = SnapshotterSpec(
        tensors=(StreamingTensor(name="strain", channels=2), StreamingTensor(name="aux")),
        kernel_size=64, stride=4, batch_size=8, update_name="stream",
    )  # fmt: skip
    built = write_snapshotter(
        tmp_path / "snap", spec, sequence=SequenceOptions(idle_timeout_s=3600, instances=3)
    )
    config = read_config(tmp_path / "snap")
    assert (config.name, config.platform, config.backend, config.max_batch_size) == (
        "snap", "onnxruntime_onnx", "onnxruntime", 0)  # fmt: skip
    assert [(t.name, list(t.dims)) for t in config.input] == [("stream", [1, 3, 32])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("strain", [8, 2, 64]), ("aux", [8, 64])]
    batching = config.sequence_batching
    assert batching.max_sequence_idle_microseconds == 3_600_000_000
    assert batching.WhichOneof("strategy_choice") == "direct"
    (state,) = batching.state
    assert (state.input_name, state.output_name, list(state.dims)) == (
        "stream_snapshot__in",
        "stream_snapshot__out",
        [1, 3, 64],
    )
    assert state.initial_state[0].zero_data and list(state.initial_state[0].dims) == [1, 3, 64]
    assert config.instance_group[0].count == 3
    assert (built.zero_state_windows, built.zero_state_updates) == (15, 2)


def test_batched_torchscript_snapshotter_uses_oldest_strategy_and_indexed_names(tmp_path: Path) -> None:
    spec = SnapshotterSpec(
        tensors=(StreamingTensor(name="x", channels=2),), kernel_size=16, stride=2, batch_size=4
    )
    sequence = SequenceOptions(sequences_per_instance=8, max_queue_delay_us=500)
    built = write_snapshotter(tmp_path / "snap", spec, platform="torchscript", sequence=sequence)
    config = read_config(tmp_path / "snap")
    assert (config.platform, config.max_batch_size) == ("pytorch_libtorch", 8)
    assert [(t.name, list(t.dims)) for t in config.input] == [("INPUT__0", [2, 8])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("OUTPUT__0", [4, 2, 16])]
    oldest = config.sequence_batching.oldest
    assert (oldest.max_candidate_sequences, oldest.max_queue_delay_microseconds) == (8, 500)
    state = config.sequence_batching.state[0]
    assert (state.input_name, state.output_name, list(state.dims)) == ("INPUT__1", "OUTPUT__1", [2, 16])
    assert (built.update_input, built.outputs) == ("INPUT__0", {"x": "OUTPUT__0"})


def test_initial_history_is_written_as_state_data_file(tmp_path: Path) -> None:
    spec = SnapshotterSpec(
        tensors=(StreamingTensor(name="x", channels=2),), kernel_size=8, stride=2, batch_size=2
    )
    history = np.arange(16, dtype=np.float32).reshape(2, 8)
    built = write_snapshotter(tmp_path / "snap", spec, initial_state=history)
    initial = read_config(tmp_path / "snap").sequence_batching.state[0].initial_state[0]
    assert (initial.zero_data, initial.data_file) == (False, "update_snapshot.bin")
    raw = np.frombuffer((tmp_path / "snap" / "initial_state" / "update_snapshot.bin").read_bytes(), "<f4")
    np.testing.assert_array_equal(raw, history.ravel())
    assert built.zero_state_updates == 0


def test_initial_history_of_the_wrong_shape_is_rejected(tmp_path: Path) -> None:
    spec = SnapshotterSpec(
        tensors=(StreamingTensor(name="x", channels=2),), kernel_size=8, stride=2, batch_size=2
    )
    with pytest.raises(
        StreamingConfigError, match=r"initial state of 'update' has shape \[8\], expected \[2, 8\]"
    ):
        write_snapshotter(tmp_path / "snap", spec, initial_state=np.zeros(8))
    assert not (tmp_path / "snap").exists()


def test_online_averager_config_exposes_delay_and_state_length(tmp_path: Path) -> None:
    spec = OnlineAveragerSpec(
        kernel_size=32, stride=4, batch_size=2, num_updates=5, channels=3, input_name="pred"
    )
    built = write_online_averager(tmp_path / "avg", spec, sequence=SequenceOptions(idle_timeout_s=0.5))
    config = read_config(tmp_path / "avg")
    assert [(t.name, list(t.dims)) for t in config.input] == [("pred", [2, 3, 32])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("output_stream", [1, 3, 8])]
    state = config.sequence_batching.state[0]
    assert list(state.dims) == [1, 3, 16]
    assert config.sequence_batching.max_sequence_idle_microseconds == 500_000
    assert (built.delay, built.zero_state_updates) == (16, 2)


class RunningSum(torch.nn.Module):
    """A user's own stateful module: emits x + state and keeps the sum."""

    def forward(self, x: torch.Tensor, total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        new_total = total + x
        return new_total * 2.0, new_total


@pytest.mark.parametrize("platform", ["onnx", "torchscript"])
def test_export_streaming_model_exports_a_users_stateful_module(tmp_path: Path, platform: str) -> None:
    from hermes.quiver.streaming import StateTensor, StreamTensor, export_streaming_model

    config = export_streaming_model(
        RunningSum(), tmp_path / "running_sum", platform=platform,
        inputs=[StreamTensor(name="x", shape=(1, 4))], outputs=[StreamTensor(name="doubled", shape=(1, 4))],
        states=[StateTensor(name="total", shape=(1, 4))], sequence=SequenceOptions(idle_timeout_s=5),
    )  # fmt: skip
    state = config.sequence_batching.state[0]
    expected_names = ("total__in", "total__out") if platform == "onnx" else ("INPUT__1", "OUTPUT__1")
    assert (state.input_name, state.output_name) == expected_names
    x, total = np.ones((1, 4), np.float32), np.arange(4, dtype=np.float32)[None]
    doubled, new_total = run_artifact(tmp_path / "running_sum", platform, [x, total])
    np.testing.assert_array_equal(doubled, [[2.0, 4.0, 6.0, 8.0]])
    np.testing.assert_array_equal(new_total, [[1.0, 2.0, 3.0, 4.0]])
