"""The two-input, two-output network of the fused and sequence-axis tests, exported with a batch axis."""

from __future__ import annotations

import torch

from hermes.quiver import ModelRepository, Platform

K, BATCH = 16, 4


class Net(torch.nn.Module):
    """Windows ``x (N, 3, K)`` and ``aux (N, K)`` → ``(N, K)`` and ``(N, 2, K)``, each window on its own."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(3, 2, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, aux: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.tanh(self.conv(x))
        return y[:, 0] + 0.5 * aux, y * aux[:, None]


def add_network(
    repo: ModelRepository,
    name: str,
    platform: Platform,
    net: Net,
    *,
    max_batch_size: int = 64,
    instances: int = 1,
) -> tuple[list[str], list[str]]:
    """A network model with a variable batch axis; returns its input and output names."""
    onnx = platform is Platform.ONNX
    ins, outs = (["x", "aux"], ["y", "z"]) if onnx else (["INPUT__0", "INPUT__1"], ["OUTPUT__0", "OUTPUT__1"])
    model = repo.add(name, platform=platform)
    model.config.max_batch_size = max_batch_size
    model.config.add_input(ins[0], [3, K])
    model.config.add_input(ins[1], [K])
    model.config.add_output(outs[0], [K])
    model.config.add_output(outs[1], [2, K])
    model.config.add_instance_group(kind="cpu", count=instances)
    model.export_version(net, example_inputs=[torch.randn(BATCH, 3, K), torch.randn(BATCH, K)])
    return ins, outs
