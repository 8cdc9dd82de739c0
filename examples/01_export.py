"""Export a torch model to a Triton model repository, verified against eager torch.

    python examples/01_export.py [REPOSITORY]

Writes an ONNX and a TorchScript version of the same small network and prints each
verification report (max absolute/relative difference of every output, batch 1 and max batch).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from hermes.quiver import ModelRepository, Platform


def build_network() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()


def main(root: Path) -> None:
    net = build_network()
    repo = ModelRepository(root)
    for name, platform in (("mlp_onnx", Platform.ONNX), ("mlp_torchscript", Platform.TORCHSCRIPT)):
        model = repo.add(name, platform=platform)
        model.config.max_batch_size = 8
        result = model.export_version(
            net,
            input_shapes={"x": (None, 16)} if platform is Platform.ONNX else {"INPUT__0": (None, 16)},
            output_names=["y"] if platform is Platform.ONNX else ["OUTPUT__0"],
        )
        print(f"{name} version {result.version} -> {result.path}")
        print(result.report)
    print("models:", sorted(repo.models))


if __name__ == "__main__":
    main(
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="hermes-example-")) / "repo"
    )
