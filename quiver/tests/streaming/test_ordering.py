"""Many requests per sequence in flight through a network with several instances keep their order.

Triton hands each step's result to the next step as soon as it is ready; with two instances of
the network between the snapshotter and the averager, updates of one sequence overtook each
other and the averaged outputs were wrong (max error ~2, measured). ``add_streaming_output``
sets ``dynamic_batching { preserve_ordering: true }`` on the network to prevent that.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from hermes.aeriel import Server  # noqa: E402
from hermes.quiver import ModelRepository, Platform  # noqa: E402
from hermes.quiver.streaming import offline_stream  # noqa: E402

CHANNELS, K, STRIDE, BATCH, NUM_UPDATES, UPDATES, SEQUENCES = 5, 64, 4, 4, 8, 24, 3


class Mix(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mix = torch.nn.Conv1d(CHANNELS, 1, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(x)[:, 0]


def _build(root: Path, net_module: torch.nn.Module) -> str:
    repo = ModelRepository(root)
    net = repo.add("net", platform=Platform.ONNX)
    net.config.add_input("x", [BATCH, CHANNELS, K])
    net.config.add_output("y", [BATCH, K])
    net.config.add_instance_group(kind="cpu", count=2)
    net.export_version(net_module, example_inputs=[torch.randn(BATCH, CHANNELS, K)])
    ensemble = repo.add("stream", platform=Platform.ENSEMBLE)
    ensemble.add_streaming_inputs(
        net.inputs["x"], stride=STRIDE, batch_size=BATCH, key="w", instances=SEQUENCES
    )
    ensemble.add_streaming_output(
        net.outputs["y"], stride=STRIDE, num_updates=NUM_UPDATES, key="n", instances=SEQUENCES
    )
    ensemble.export_version()
    return (root / "net" / "config.pbtxt").read_text()


def test_streaming_output_makes_the_network_answer_in_request_order(tmp_path: Path) -> None:
    text = _build(tmp_path / "repo", Mix().eval())
    assert "preserve_ordering: true" in text


def test_all_updates_in_flight_through_a_two_instance_network_match_the_reference(
    tmp_path: Path, start_triton: Callable[..., Server]
) -> None:
    module = Mix().eval()
    _build(tmp_path / "repo", module)
    streams = [
        np.random.randn(CHANNELS, STRIDE * BATCH * UPDATES).astype(np.float32) for _ in range(SEQUENCES)
    ]
    size = STRIDE * BATCH
    server = start_triton(tmp_path / "repo", models=["stream"])
    responses: queue.Queue[tuple[object, object]] = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        client.start_stream(callback=lambda result, error: responses.put((result, error)))
        for u in range(UPDATES):  # every update of every sequence sent before any answer is read
            for k, stream in enumerate(streams):
                tensor = grpcclient.InferInput("w", [1, CHANNELS, size], "FP32")
                tensor.set_data_from_numpy(np.ascontiguousarray(stream[None, :, u * size : (u + 1) * size]))
                client.async_stream_infer(
                    "stream", [tensor], request_id=f"{k}:{u}", sequence_id=100 + k,
                    sequence_start=u == 0, sequence_end=u == UPDATES - 1,
                )  # fmt: skip
        outputs = {}
        for _ in range(UPDATES * SEQUENCES):
            result, error = responses.get(timeout=60)
            assert error is None, error
            outputs[result.get_response().id] = result.as_numpy("n")  # type: ignore[attr-defined]
        client.stop_stream()
    finally:
        client.close()
    for k, stream in enumerate(streams):
        served = np.concatenate([outputs[f"{k}:{u}"] for u in range(UPDATES)], axis=-1)[0]
        expected = offline_stream(
            module, stream, kernel_size=K, stride=STRIDE, batch_size=BATCH, num_updates=NUM_UPDATES
        )
        np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)
