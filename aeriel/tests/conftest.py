"""Fixtures for aeriel's tests: small python-backend models written into a repository."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

ADD_SUB_MODEL = textwrap.dedent(
    """\
    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            out = []
            for r in requests:
                a = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
                b = pb_utils.get_input_tensor_by_name(r, "INPUT1").as_numpy()
                out.append(pb_utils.InferenceResponse([
                    pb_utils.Tensor("OUTPUT0", (a + b).astype(np.float32)),
                    pb_utils.Tensor("OUTPUT1", (a - b).astype(np.float32)),
                ]))
            return out
    """
)


def add_sub_config(name: str, dims: int = -1) -> str:
    return textwrap.dedent(
        f"""\
        name: "{name}"
        backend: "python"
        max_batch_size: 0
        input [
          {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ {dims} ] }},
          {{ name: "INPUT1" data_type: TYPE_FP32 dims: [ {dims} ] }}
        ]
        output [
          {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ {dims} ] }},
          {{ name: "OUTPUT1" data_type: TYPE_FP32 dims: [ {dims} ] }}
        ]
        instance_group [ {{ kind: KIND_CPU count: 1 }} ]
        """
    )


@pytest.fixture
def write_add_sub() -> Callable[..., Path]:
    """Write an ``add_sub`` python model (OUTPUT0 = a + b, OUTPUT1 = a - b) into a repository."""

    def write(repo: Path, name: str = "add_sub", config: str | None = None) -> Path:
        folder = repo / name
        (folder / "1").mkdir(parents=True)
        (folder / "config.pbtxt").write_text(config if config is not None else add_sub_config(name))
        (folder / "1" / "model.py").write_text(ADD_SUB_MODEL)
        return folder

    return write


@pytest.fixture(autouse=True)
def _seed() -> None:
    np.random.seed(0)
