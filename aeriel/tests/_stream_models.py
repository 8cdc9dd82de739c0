"""A small streaming ensemble (two streaming groups, two averaged outputs) for the failover tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hermes.quiver import ModelRepository, Platform
from hermes.quiver.streaming import offline_stream

K, STRIDE, BATCH, NUM_UPDATES = 16, 2, 2, 3
UPDATE = STRIDE * BATCH
SEQUENCES = 12  # batched state: one instance of each stateful member serves them all


class Net(torch.nn.Module):
    """Windows ``strain (S, B, 3, K)``, ``aux (S, B, K)`` → ``clean (S, B, K)``, ``parts (S, B, 2, K)`` (S: sequences)."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.mix = torch.nn.Linear(3, 2)

    def forward(self, strain: torch.Tensor, aux: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mixed = self.mix(strain.transpose(-1, -2)).transpose(-1, -2)
        # the window mean makes every output sample depend on the whole window (as a convolution would)
        parts = torch.tanh(mixed + mixed.mean(dim=-1, keepdim=True)) * self.scale
        return parts[..., 0, :] + 0.5 * aux, parts


def build(root: Path, versions: int = 1) -> list[Net]:
    """Write ``stream`` (ensemble) over ``net`` (TorchScript, ``versions`` versions) into ``root``."""
    torch.manual_seed(0)
    nets = [Net(scale=1.0 + v).eval() for v in range(versions)]
    repo = ModelRepository(root)
    net = repo.add("net", platform=Platform.TORCHSCRIPT)
    net.config.max_batch_size = SEQUENCES
    net.config.add_input("INPUT__0", [BATCH, 3, K])
    net.config.add_input("INPUT__1", [BATCH, K])
    net.config.add_output("OUTPUT__0", [BATCH, K])
    net.config.add_output("OUTPUT__1", [BATCH, 2, K])
    net.config.add_instance_group(kind="cpu", count=1)
    for model in nets:
        net.export_version(model, example_inputs=[torch.randn(2, BATCH, 3, K), torch.randn(2, BATCH, K)])
    net.config.proto.version_policy.specific.versions[:] = [1]  # serve version 1; swaps load the others
    net.config.write()
    stream = repo.add("stream", platform=Platform.ENSEMBLE)
    options = {"sequences_per_instance": SEQUENCES, "max_queue_delay_us": 500, "idle_timeout_s": 60}
    stream.add_streaming_inputs(
        net.inputs["INPUT__0"],
        stride=STRIDE,
        batch_size=BATCH,
        name="strain_snapshotter",
        key="strain",
        **options,
    )
    stream.add_streaming_inputs(
        net.inputs["INPUT__1"], stride=STRIDE, batch_size=BATCH, name="aux_snapshotter", key="aux", **options
    )
    stream.add_streaming_output(
        net.outputs["OUTPUT__0"],
        stride=STRIDE,
        num_updates=NUM_UPDATES,
        name="clean_avg",
        key="clean",
        **options,
    )
    stream.add_streaming_output(
        net.outputs["OUTPUT__1"],
        stride=STRIDE,
        num_updates=NUM_UPDATES,
        name="parts_avg",
        key="parts",
        **options,
    )
    stream.export_version()
    return nets


def reference(net: Net, data: np.ndarray) -> dict[str, np.ndarray]:
    """The offline ``clean (T,)`` and ``parts (2, T)`` of a whole ``(4, T)`` stream."""

    def run(windows: np.ndarray, index: int) -> np.ndarray:
        with torch.no_grad():
            w = torch.from_numpy(np.ascontiguousarray(windows))[None]  # one sequence: (1, B, C, K)
            return net(w[:, :, :3], w[:, :, 3])[index][0].numpy()

    common = {"kernel_size": K, "stride": STRIDE, "batch_size": BATCH, "num_updates": NUM_UPDATES}
    return {
        "clean": offline_stream(lambda w: run(w, 0), data, **common),
        "parts": offline_stream(lambda w: run(w, 1), data, **common),
    }


def updates(data: np.ndarray) -> list[dict[str, np.ndarray]]:
    """A ``(4, T)`` stream as ensemble requests ``{"strain": (1, 3, s·B), "aux": (1, 1, s·B)}``."""
    n = data.shape[-1] // UPDATE
    return [
        {
            "strain": data[None, :3, u * UPDATE : (u + 1) * UPDATE],
            "aux": data[None, 3:, u * UPDATE : (u + 1) * UPDATE],
        }
        for u in range(n)
    ]
