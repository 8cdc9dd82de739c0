"""aframe's export and inference scripts, ported from ml4gw-hermes (docs/migration.md).

    python examples/migration/aframe.py [REPOSITORY]

aframe's layout with small numbers: 2 interferometers at 128 Hz, 1 s kernels, 4 inferences
per second, 4 kernels per request. Its own ``BackgroundSnapshotter`` keeps
``(2, ifos, state)`` samples per sequence; a TorchScript preprocessor whitens and cuts the
batch of kernels; the network scores each kernel. The client streams two sequences per data
segment (background ``[x, x]`` and injected ``[x, x_inj]``) with request and sequence ids,
and a callback object fills preallocated arrays, as aframe's ``Sequence`` does. The served
scores are checked against the same modules run offline.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import hermes.quiver as qv
from hermes.aeriel import serve
from hermes.aeriel.client import InferenceClient, Result
from hermes.quiver.streaming import SequenceOptions, StateTensor, StreamTensor, export_streaming_model

IFOS, SAMPLE_RATE, KERNEL_LENGTH, INFERENCE_SAMPLING_RATE, BATCH_SIZE = 2, 128, 1.0, 4, 4
KERNEL_SIZE = int(KERNEL_LENGTH * SAMPLE_RATE)
STRIDE = SAMPLE_RATE // INFERENCE_SAMPLING_RATE
UPDATE_SIZE = STRIDE * BATCH_SIZE  # new samples per request
STATE_SIZE = 2 * KERNEL_SIZE  # background kept for whitening
STREAMS_PER_GPU, AFRAME_INSTANCES = 2, 1


class BackgroundSnapshotter(torch.nn.Module):
    """aframe's snapshotter: keep the last STATE_SIZE samples, emit state + update."""

    def forward(self, update: torch.Tensor, snapshot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([snapshot, update], dim=-1)
        return x, x[..., -STATE_SIZE:]


class Preprocessor(torch.nn.Module):
    """Whiten [background, injected] by the background's scale; cut BATCH_SIZE kernels."""

    def forward(self, strain: torch.Tensor) -> torch.Tensor:
        scale = strain[0, :, :STATE_SIZE].std(dim=-1, keepdim=True) + 1e-3
        whitened = strain[1] / scale
        start = STATE_SIZE + UPDATE_SIZE - (KERNEL_SIZE - STRIDE + UPDATE_SIZE)
        kernels = [
            whitened[:, start + j * STRIDE : start + j * STRIDE + KERNEL_SIZE] for j in range(BATCH_SIZE)
        ]
        return torch.stack(kernels)


class Aframe(torch.nn.Module):
    """A stand-in detector: kernels (B, ifos, K) -> score (B, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(IFOS, 4, kernel_size=9, stride=4)
        self.fc = torch.nn.Linear(4, 1)

    def forward(self, whitened: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(whitened)).mean(dim=-1))


# --8<-- [start:export]
def export(aframe_nn: torch.nn.Module, repository_directory: Path, clean: bool = True) -> None:
    repo = qv.ModelRepository(repository_directory, clean=clean)
    aframe = repo.add("aframe", platform=qv.Platform.ONNX)  # TENSORRT on GPU nodes
    aframe.config.ensure_instance_group(count=AFRAME_INSTANCES)  # was: scale_model() try/except
    aframe.config.optimization(graph_level=-1)  # was: aframe.config.optimization.graph.level = -1
    aframe.export_version(
        aframe_nn,
        input_shapes={"whitened": (BATCH_SIZE, IFOS, KERNEL_SIZE)},
        output_names=["discriminator"],
    )
    # was: streaming_utils.add_streaming_model(repo, BackgroundSnapshotter(...), name=..., ...)
    export_streaming_model(
        BackgroundSnapshotter(),
        Path(repo.root) / "snapshotter",
        inputs=[StreamTensor(name="stream", shape=(2, IFOS, UPDATE_SIZE))],
        outputs=[StreamTensor(name="strain", shape=(2, IFOS, STATE_SIZE + UPDATE_SIZE))],
        states=[StateTensor(name="snapshot", shape=(2, IFOS, STATE_SIZE))],
        sequence=SequenceOptions(instances=STREAMS_PER_GPU, idle_timeout_s=60),  # was: 6e10 us by hand
    )
    repo.refresh()
    snapshotter = repo["snapshotter"]
    snapshotter.config.set_parameter("intra_op_thread_count", "2")
    snapshotter.config.write()
    preprocessor = repo.add("preprocessor", platform=qv.Platform.TORCHSCRIPT)
    preprocessor.export_version(
        Preprocessor(),
        input_shapes={"strain": (2, IFOS, STATE_SIZE + UPDATE_SIZE)},
        output_names=["whitened"],
    )
    ensemble = repo.add("aframe-stream", platform=qv.Platform.ENSEMBLE)
    ensemble.add_input(snapshotter.inputs["stream"])
    ensemble.pipe(snapshotter.outputs["strain"], preprocessor.inputs["strain"])
    ensemble.pipe(preprocessor.outputs["whitened"], aframe.inputs["whitened"])
    ensemble.add_output(aframe.outputs["discriminator"])
    ensemble.export_version()


# --8<-- [end:export]


# --8<-- [start:infer]
class Sequence:
    """aframe's callback object: fills preallocated background and foreground arrays."""

    def __init__(self, num_steps: int, sequence_id: int) -> None:
        self.sequence_id = sequence_id
        self.background = np.full(num_steps * BATCH_SIZE, np.nan, dtype=np.float32)
        self.foreground = np.full(num_steps * BATCH_SIZE, np.nan, dtype=np.float32)
        self.errors: list[BaseException] = []

    def __call__(self, result: Result | None, error: BaseException | None) -> None:
        if error is not None:  # was: an exception re-raised by client.get()
            self.errors.append(error)
            return
        assert result is not None
        y = result.outputs["discriminator"][:, 0]
        target = self.background if result.sequence_id == self.sequence_id else self.foreground
        start = result.request_id * BATCH_SIZE
        target[start : start + BATCH_SIZE] = y


def infer(url: str, x: np.ndarray, x_inj: np.ndarray, sequence_id: int) -> Sequence:
    """Stream one segment: background ``[x, x]`` and foreground ``[x, x_inj]`` (each ``(ifos, T)``)."""
    num_steps = x.shape[-1] // UPDATE_SIZE
    sequence = Sequence(num_steps, sequence_id)
    with (
        InferenceClient(url, "aframe-stream", callback=sequence) as client,
        client.sequence(sequence_id) as background,
        client.sequence(sequence_id + 1) as foreground,
    ):
        for i in range(num_steps):
            chunk = slice(i * UPDATE_SIZE, (i + 1) * UPDATE_SIZE)
            last = i == num_steps - 1  # sequence_start is the first send of each sequence
            background.send(np.stack([x[:, chunk], x[:, chunk]]), request_id=i, end=last)
            foreground.send(np.stack([x[:, chunk], x_inj[:, chunk]]), request_id=i, end=last)
        client.wait_all()  # was: spinning on client.get() until the callback had every response
    if sequence.errors:
        raise sequence.errors[0]
    return sequence


# --8<-- [end:infer]


def offline(aframe_nn: torch.nn.Module, x: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The same modules run update by update in this process."""
    snapshotter, preprocessor = BackgroundSnapshotter(), Preprocessor()
    state = torch.zeros(2, IFOS, STATE_SIZE)
    scores = []
    with torch.no_grad():
        for i in range(x.shape[-1] // UPDATE_SIZE):
            chunk = slice(i * UPDATE_SIZE, (i + 1) * UPDATE_SIZE)
            update = torch.from_numpy(np.stack([x[:, chunk], other[:, chunk]]))
            strain, state = snapshotter(update, state)
            scores.append(aframe_nn(preprocessor(strain))[:, 0].numpy())
    return np.concatenate(scores)


def main(root: Path) -> None:
    torch.manual_seed(0)
    aframe_nn = Aframe().eval()
    export(aframe_nn, root)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((IFOS, SAMPLE_RATE * 8)).astype(np.float32)
    x_inj = x + np.sin(np.linspace(0, 60, x.shape[-1], dtype=np.float32))[None]
    with serve(root, models=["aframe-stream"]) as server:
        sequence = infer(server.grpc_url, x, x_inj, sequence_id=2000)
    for name, served, expected in (
        ("background", sequence.background, offline(aframe_nn, x, x)),
        ("foreground", sequence.foreground, offline(aframe_nn, x, x_inj)),
    ):
        error = float(np.abs(served - expected).max())
        print(f"{name}: {served.size} scores, max |served - offline| = {error:.2e}")
        assert not np.isnan(served).any() and error < 1e-4


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="hermes-aframe-")) / "repo")
