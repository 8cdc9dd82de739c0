"""Stream two sequences through a stateful streaming ensemble; the server keeps the windows.

    python examples/03_stream.py [REPOSITORY]

snapshotter (K = 256 samples, stride 8, 4 windows per update) -> a small 1-D conv network ->
online averager. The client sends only the new samples of each stream (1, 3, 32) and the
outputs equal the network run offline with the same windowing and averaging.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from hermes.aeriel import serve
from hermes.aeriel.client import InferenceClient
from hermes.quiver import ModelRepository, Platform
from hermes.quiver.streaming import offline_stream

CHANNELS, K, STRIDE, BATCH, NUM_UPDATES, UPDATES = 3, 256, 8, 4, 8, 40


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(CHANNELS, 1, kernel_size=5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x))[:, 0]


def main(root: Path) -> None:
    torch.manual_seed(0)
    net = Net().eval()
    repo = ModelRepository(root)
    model = repo.add("net", platform=Platform.ONNX)
    model.config.add_input("x", [BATCH, CHANNELS, K])
    model.config.add_output("y", [BATCH, K])
    model.export_version(net, example_inputs=[torch.randn(BATCH, CHANNELS, K)])
    ensemble = repo.add("stream", platform=Platform.ENSEMBLE)
    group = ensemble.add_streaming_inputs(
        model.inputs["x"], stride=STRIDE, batch_size=BATCH, key="update", instances=2
    )
    output = ensemble.add_streaming_output(
        model.outputs["y"], stride=STRIDE, num_updates=NUM_UPDATES, key="output", instances=2
    )
    ensemble.export_version()
    print(f"update shape {group.update_shape}; output delay {output.delay} samples")

    rng = np.random.default_rng(1)
    size = STRIDE * BATCH
    data = {sid: rng.standard_normal((CHANNELS, size * UPDATES)).astype(np.float32) for sid in (11, 12)}
    with serve(root, models=["stream"]) as server, InferenceClient(server.grpc_url, "stream") as client:
        print("streaming inputs:", client.streams)
        futures: dict[int, list] = {sid: [] for sid in data}
        with client.sequence(11) as first, client.sequence(12) as second:
            for u in range(UPDATES):
                for seq, sid in ((first, 11), (second, 12)):
                    chunk = data[sid][None, :, u * size : (u + 1) * size]
                    futures[sid].append(seq.send(chunk, end=u == UPDATES - 1))
        served = {sid: np.concatenate([f.result(timeout=60).outputs["output"] for f in fs], axis=-1)[0]
                  for sid, fs in futures.items()}  # fmt: skip
        print("latency:", client.latency)
    for sid, x in data.items():
        expected = offline_stream(
            net, x, kernel_size=K, stride=STRIDE, batch_size=BATCH, num_updates=NUM_UPDATES
        )
        error = float(np.abs(served[sid] - expected).max())
        print(f"sequence {sid}: {served[sid].size} samples, max |served - offline| = {error:.2e}")
        assert error < 1e-4


if __name__ == "__main__":
    main(
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="hermes-example-")) / "repo"
    )
