"""aeriel's own ``hermes`` commands."""

from __future__ import annotations

import tempfile
import textwrap
from pathlib import Path

import numpy as np
import typer

from hermes.aeriel._cli import register

_ADD_ONE_CONFIG = """\
name: "add_one"
backend: "python"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

_ADD_ONE_MODEL = textwrap.dedent(
    """\
    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            return [
                pb_utils.InferenceResponse(
                    [pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy() + np.float32(1))]
                )
                for r in requests
            ]
    """
)


def demo() -> None:
    """Start the local Triton server on a small example repository, send one inference, stop it."""
    import tritonclient.grpc as grpcclient

    from hermes.aeriel.serve import serve

    with tempfile.TemporaryDirectory(prefix="hermes-demo-") as tmp:
        repo = Path(tmp) / "repo"
        (repo / "add_one" / "1").mkdir(parents=True)
        (repo / "add_one" / "config.pbtxt").write_text(_ADD_ONE_CONFIG)
        (repo / "add_one" / "1" / "model.py").write_text(_ADD_ONE_MODEL)
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        with serve(repo, models=["add_one"]) as server:
            typer.echo(f"tritonserver ready in {server.ready_after_s:.2f} s at grpc {server.grpc_url}")
            with grpcclient.InferenceServerClient(server.grpc_url) as client:
                inp = grpcclient.InferInput("x", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                y = client.infer("add_one", [inp]).as_numpy("y")
        typer.echo(f"input  {x.tolist()}\noutput {y.tolist()}")
        if not np.array_equal(y, x + 1):
            raise typer.Exit(1)


register("demo", demo)
