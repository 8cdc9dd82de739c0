"""Serve a model repository on the local Triton runtime and send requests with the hermes client.

    python examples/02_serve.py [REPOSITORY]

Exports the example MLP (as examples/01_export.py does), starts tritonserver, sends a batch,
and compares the answer with torch run in-process.
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


def main(root: Path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    model = ModelRepository(root).add("mlp", platform=Platform.ONNX)
    model.config.max_batch_size = 8
    model.export_version(net, input_shapes={"x": (None, 16)}, output_names=["y"])

    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    with serve(root, models=["mlp"]) as server, InferenceClient(server.grpc_url, "mlp") as client:
        print(f"serving at grpc {server.grpc_url}, http {server.http_url}")
        print("inputs:", client.inputs, "outputs:", client.outputs)
        y = client.infer(x).result(timeout=30).outputs["y"]
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    print("served y[0]:", np.round(y[0], 4))
    print("max |served - torch|:", float(np.abs(y - expected).max()))
    assert np.allclose(y, expected, atol=1e-5)


if __name__ == "__main__":
    main(
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="hermes-example-")) / "repo"
    )
