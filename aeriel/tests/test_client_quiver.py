"""End to end: a real quiver streaming ensemble (ONNX snapshotter → network → averager) through the client."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from hermes.aeriel import serve  # noqa: E402
from hermes.aeriel.client import InferenceClient  # noqa: E402
from hermes.aeriel.testing import leftover_resources  # noqa: E402
from hermes.quiver import ModelRepository, Platform  # noqa: E402
from hermes.quiver.streaming import offline_stream  # noqa: E402

K, STRIDE, BATCH, NUM_UPDATES, UPDATES = 16, 2, 4, 3, 6


class Net(torch.nn.Module):
    """Windows ``x (B, 3, K)`` and ``aux (B, K)`` → predictions ``(B, K)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(3, 1, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x)[:, 0]) + 0.5 * aux


@pytest.mark.slow
def test_quiver_streaming_ensemble_with_a_two_tensor_snapshotter_matches_the_offline_reference(
    tmp_path: Path,
):
    model = Net().eval()
    repo = ModelRepository(tmp_path / "repo")
    net = repo.add("net", platform=Platform.ONNX)
    net.config.add_input("x", [BATCH, 3, K])
    net.config.add_input("aux", [BATCH, K])
    net.config.add_output("y", [BATCH, K])
    net.export_version(model, example_inputs=[torch.randn(BATCH, 3, K), torch.randn(BATCH, K)])
    ensemble = repo.add("stream", platform=Platform.ENSEMBLE)
    inputs = ensemble.add_streaming_inputs(
        [net.inputs["x"], net.inputs["aux"]], stride=STRIDE, batch_size=BATCH, name="snapshotter"
    )
    output = ensemble.add_streaming_output(
        net.outputs["y"], stride=STRIDE, num_updates=NUM_UPDATES, name="averager"
    )
    ensemble.export_version()

    size = STRIDE * BATCH
    data = np.random.randn(4, size * UPDATES).astype(np.float32)
    server = serve(tmp_path / "repo", models=["stream"], log_file=tmp_path / "log", exit_timeout_s=10)
    try:
        # Several requests of the sequence in flight: the client keeps their order on its one
        # stream and quiver's streaming output keeps it through the stateless network step.
        with InferenceClient(server.grpc_url, "stream", max_in_flight=8) as client:
            (group,) = client.streams
            assert group.input == inputs.input.name
            assert [t.channels for t in group.targets] == [3, 1]  # one snapshotter feeding two tensors
            assert sorted(c for t in group.targets for c in t.consumers) == ["net/aux", "net/x"]
            with client.sequence(1234) as seq:
                futures = [
                    seq.send(data[None, :, u * size : (u + 1) * size], end=u == UPDATES - 1)
                    for u in range(UPDATES)
                ]
            served = np.concatenate(
                [f.result(timeout=60).outputs[output.output.name] for f in futures], axis=-1
            )
    finally:
        server.close()
    assert leftover_resources(server) == []

    def run(windows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            w = torch.from_numpy(np.ascontiguousarray(windows))
            return model(w[:, :3], w[:, 3]).numpy()

    reference = offline_stream(
        run, data, kernel_size=K, stride=STRIDE, batch_size=BATCH, num_updates=NUM_UPDATES, history=None
    )
    np.testing.assert_allclose(served[0], reference, rtol=1e-5, atol=1e-6)
