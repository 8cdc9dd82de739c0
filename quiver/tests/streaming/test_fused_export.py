"""Fused streaming export: what it refuses (before writing anything) and what it writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from hermes.quiver import ModelRepository, Platform  # noqa: E402
from hermes.quiver.streaming import (  # noqa: E402
    FusedInput,
    StreamingConfigError,
    add_fused_streaming_model,
    offline_stream,
)

K, STRIDE, BATCH = 12, 3, 2


class Conv(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(2, 1, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)[:, 0]


@pytest.fixture
def repo(tmp_path: Path) -> ModelRepository:
    return ModelRepository(tmp_path / "repo")


def _network(repo: ModelRepository, *, batch_axis: bool, platform: Platform = Platform.ONNX) -> Conv:
    net = Conv().eval()
    model = repo.add("net", platform=platform)
    if batch_axis:
        model.config.max_batch_size = 16
        model.config.add_input("x", [2, K])
        model.config.add_output("y", [K])
    else:
        model.config.add_input("x", [BATCH, 2, K])
        model.config.add_output("y", [BATCH, K])
    model.export_version(net, example_inputs=[torch.randn(BATCH, 2, K)])
    return net


def test_defaults_stream_every_input_and_output_and_match_the_reference(repo: ModelRepository) -> None:
    net = _network(repo, batch_axis=False)
    fused = add_fused_streaming_model(repo.models["net"], stride=STRIDE, batch_size=BATCH, num_updates=2)
    assert fused.name == "net-stream" and fused.inputs == {"update": "update"} and fused.outputs == {"y": "y"}
    assert fused.update_shape("update") == (1, 2, STRIDE * BATCH)
    session = ort.InferenceSession(str(Path(repo.root) / "net-stream" / "1" / "model.onnx"))
    x = np.random.randn(2, STRIDE * BATCH * 6).astype(np.float32)
    state = {
        "update_snapshot__in": np.zeros((1, 2, K), np.float32),
        "y_average__in": np.zeros((1, STRIDE), np.float32),
    }
    served = []
    for u in range(6):
        update = x[None, :, u * STRIDE * BATCH : (u + 1) * STRIDE * BATCH]
        y, snap, avg = session.run(
            ["y", "update_snapshot__out", "y_average__out"], {"update": update, **state}
        )
        state = {"update_snapshot__in": snap, "y_average__in": avg}
        served.append(y[0])
    expected = offline_stream(net, x, kernel_size=K, stride=STRIDE, batch_size=BATCH, num_updates=2)
    np.testing.assert_allclose(np.concatenate(served, axis=-1), expected, rtol=1e-5, atol=1e-6)


def test_batched_state_needs_a_variable_batch_axis(repo: ModelRepository) -> None:
    _network(repo, batch_axis=False)
    with pytest.raises(StreamingConfigError, match=r"fixed batch axis 2.*variable batch axis"):
        add_fused_streaming_model(
            repo.models["net"], stride=STRIDE, batch_size=BATCH, num_updates=2, sequences_per_instance=4
        )
    assert "net-stream" not in repo and not (Path(repo.root) / "net-stream").exists()


def test_a_batch_size_that_disagrees_with_the_network_is_refused(repo: ModelRepository) -> None:
    _network(repo, batch_axis=False)
    with pytest.raises(StreamingConfigError, match=r"batch axis 2 but each update carries batch_size=4"):
        add_fused_streaming_model(repo.models["net"], stride=STRIDE, batch_size=4, num_updates=2)


def test_unknown_and_unfed_tensors_and_colliding_names_are_refused(repo: ModelRepository) -> None:
    _network(repo, batch_axis=True)
    net = repo.models["net"]
    with pytest.raises(StreamingConfigError, match=r"has no input 'w'"):
        add_fused_streaming_model(net, stride=STRIDE, batch_size=BATCH, num_updates=2, inputs={"u": "w"})
    with pytest.raises(StreamingConfigError, match=r"has no output 'nope'"):
        add_fused_streaming_model(net, stride=STRIDE, batch_size=BATCH, num_updates=2, outputs={"o": "nope"})
    with pytest.raises(StreamingConfigError, match=r"'y' is used twice"):
        add_fused_streaming_model(
            net, stride=STRIDE, batch_size=BATCH, num_updates=2, inputs=[FusedInput(key="y", tensors=("x",))]
        )
    with pytest.raises(StreamingConfigError, match=r"num_updates 5 \* stride 3 = 15 exceeds"):
        add_fused_streaming_model(net, stride=STRIDE, batch_size=BATCH, num_updates=5)
    assert sorted(repo.models) == ["net"]


def test_a_network_that_cannot_be_fused_points_to_the_ensemble(repo: ModelRepository) -> None:
    model = repo.add("python_net", platform=Platform.PYTHON)
    model.config.add_input("x", [BATCH, 2, K])
    model.config.add_output("y", [BATCH, K])
    with pytest.raises(
        StreamingConfigError, match=r"cannot be fused.*add_streaming_inputs/add_streaming_output"
    ):
        add_fused_streaming_model(model, stride=STRIDE, batch_size=BATCH, num_updates=2)


def test_a_network_without_a_version_is_refused(repo: ModelRepository) -> None:
    model = repo.add("net", platform=Platform.ONNX)
    model.config.add_input("x", [BATCH, 2, K])
    model.config.add_output("y", [BATCH, K])
    with pytest.raises(StreamingConfigError, match=r"no exported version"):
        add_fused_streaming_model(model, stride=STRIDE, batch_size=BATCH, num_updates=2)
