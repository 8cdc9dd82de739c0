"""DeepClean's export and inference scripts, ported from ml4gw-hermes (docs/migration.md).

    python examples/migration/deepclean.py [REPOSITORY]

The shapes are DeepClean's with small numbers so the script runs in seconds on a CPU:
4 witness channels instead of 21, 256 Hz instead of 4096 Hz, windows of 0.5 s, a stride of
8 samples (``stream_size=8``), 4 windows per request instead of 64, and one streaming
ensemble per latency ``deepclean-stream-{latency}`` whose aggregator averages
``latency * 32`` predictions. The served noise is checked against the network run offline.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import hermes.quiver as qv
from hermes.aeriel import serve
from hermes.aeriel.client import InferenceClient
from hermes.quiver.streaming import offline_stream
from hermes.stillwater import Throttle

NUM_WITNESSES, SAMPLE_RATE, KERNEL_LENGTH, STRIDE, BATCH_SIZE = 4, 256, 0.5, 8, 4
KERNEL_SIZE = int(KERNEL_LENGTH * SAMPLE_RATE)
INFERENCE_RATE = SAMPLE_RATE // STRIDE  # windows per second of data
MAX_LATENCIES = [0.25, 0.5]
INSTANCES, STREAMS_PER_GPU = 2, 2


class DeepClean(torch.nn.Module):
    """A stand-in for DeepClean: witnesses (B, C, K) -> noise (B, K)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(NUM_WITNESSES, 8, kernel_size=7, padding=3)
        self.out = torch.nn.Conv1d(8, 1, kernel_size=1)

    def forward(self, witness: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.conv(witness)))[:, 0]


# --8<-- [start:export]
def export(nn: torch.nn.Module, repository_directory: Path, clean: bool = True) -> None:
    repo = qv.ModelRepository(repository_directory, clean=clean)
    deepclean = repo.add("deepclean", platform=qv.Platform.ONNX)
    deepclean.config.ensure_instance_group(count=INSTANCES)  # scale the group, or add one
    deepclean.export_version(
        nn,
        input_shapes={"witness": (BATCH_SIZE, NUM_WITNESSES, KERNEL_SIZE)},
        output_names=["noise"],
    )
    for latency in MAX_LATENCIES:
        ensemble = repo.add(f"deepclean-stream-{latency}", platform=qv.Platform.ENSEMBLE)
        ensemble.add_streaming_inputs(
            deepclean.inputs["witness"],
            stride=STRIDE,
            batch_size=BATCH_SIZE,
            name=f"snapshotter-{latency}",
            key="snapshot_update",
            instances=STREAMS_PER_GPU,
            idle_timeout_s=60,  # was: snapshotter.config.sequence_batching.max_sequence_idle_microseconds = 6e7
        )
        ensemble.add_streaming_output(
            deepclean.outputs["noise"],
            stride=STRIDE,
            num_updates=int(latency * INFERENCE_RATE),
            batch_size=BATCH_SIZE,
            name=f"aggregator-{latency}",
            key="output_stream",
            instances=STREAMS_PER_GPU,
            idle_timeout_s=60,
        )
        ensemble.export_version()


# --8<-- [end:export]


# --8<-- [start:infer]
def infer(repository_directory: Path, model_name: str, X: np.ndarray) -> np.ndarray:
    """Stream the witnesses ``X (C, T)`` through ``model_name``; returns the noise ``(T,)``."""
    update_size = STRIDE * BATCH_SIZE
    num_steps = X.shape[-1] // update_size
    throttle = Throttle(rate_hz=4 * INFERENCE_RATE / BATCH_SIZE)  # 4x faster than real time
    with (
        serve(repository_directory, models=[model_name]) as server,
        InferenceClient(server.grpc_url, model_name) as client,
        client.sequence(1001) as sequence,  # START goes with the first update
    ):
        futures = []
        for i in throttle.iterate(range(num_steps)):
            update = X[None, :, i * update_size : (i + 1) * update_size]
            futures.append(sequence.send(update, request_id=i, end=i == num_steps - 1))
        noise = [future.result().outputs["output_stream"] for future in futures]  # in order
    return np.concatenate(noise, axis=-1)[0]


# --8<-- [end:infer]


def main(root: Path) -> None:
    torch.manual_seed(0)
    nn = DeepClean().eval()
    export(nn, root)
    X = np.random.default_rng(0).standard_normal((NUM_WITNESSES, SAMPLE_RATE * 4)).astype(np.float32)
    for latency in MAX_LATENCIES:
        noise = infer(root, f"deepclean-stream-{latency}", X)
        expected = offline_stream(
            nn, X, kernel_size=KERNEL_SIZE, stride=STRIDE, batch_size=BATCH_SIZE,
            num_updates=int(latency * INFERENCE_RATE),
        )  # fmt: skip
        error = float(np.abs(noise - expected).max())
        print(f"deepclean-stream-{latency}: {noise.size} samples, max |served - offline| = {error:.2e}")
        assert noise.shape == expected.shape and error < 1e-4


if __name__ == "__main__":
    main(
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(tempfile.mkdtemp(prefix="hermes-deepclean-")) / "repo"
    )
