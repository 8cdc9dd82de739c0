"""A tiny python-backend model repository for the HPC tests (y = x + 1)."""

from __future__ import annotations

import compileall
import textwrap
from pathlib import Path

CONFIG = textwrap.dedent(
    """\
    name: "add_one"
    backend: "python"
    max_batch_size: 8
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
    output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
    instance_group [ { kind: KIND_CPU count: 1 } ]
    """
)
MODEL = textwrap.dedent(
    """\
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            return [
                pb_utils.InferenceResponse(
                    [pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy() + 1)]
                )
                for r in requests
            ]
    """
)


def write_add_one(repo: Path) -> Path:
    (repo / "add_one" / "1").mkdir(parents=True)
    (repo / "add_one" / "config.pbtxt").write_text(CONFIG)
    (repo / "add_one" / "1" / "model.py").write_text(MODEL)
    compileall.compile_dir(str(repo), quiet=1)
    return repo
