"""A stillwater pipeline: source -> aeriel inference stage -> sink, each in its own process.

    python examples/04_pipeline.py [REPOSITORY]

Serves a python-backend "running sum" model that keeps per-sequence state and streams one
sequence of chunks through it; the parent iterates over the results as they arrive.
"""

from __future__ import annotations

import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hermes.aeriel import serve
from hermes.stillwater import InferenceStage, Map, Source

CONFIG = """\
name: "running_sum"
backend: "python"
max_batch_size: 0
input [ { name: "x" data_type: TYPE_FP32 dims: [ 1, 64 ] } ]
output [ { name: "total" data_type: TYPE_FP32 dims: [ 1 ] } ]
sequence_batching { max_sequence_idle_microseconds: 60000000 direct { } }
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

MODEL = textwrap.dedent(
    """\
    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def initialize(self, args):
            self.totals = {}

        def execute(self, requests):
            responses = []
            for request in requests:
                key = request.correlation_id()
                x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
                total = self.totals.get(key, 0.0) + float(x.sum())
                self.totals[key] = total
                if request.flags() & 2:  # END
                    del self.totals[key]
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("total", np.array([total], np.float32))]))
            return responses
    """
)


def chunks(n: int) -> Iterator[np.ndarray]:
    for i in range(n):
        yield np.full((1, 64), i, dtype=np.float32)


def total_of(result: object) -> float:
    return float(result.outputs["total"][0])  # type: ignore[attr-defined]


def main(root: Path) -> None:
    (root / "running_sum" / "1").mkdir(parents=True, exist_ok=True)
    (root / "running_sum" / "config.pbtxt").write_text(CONFIG)
    (root / "running_sum" / "1" / "model.py").write_text(MODEL)
    n = 20
    with serve(root, models=["running_sum"]) as server:
        pipeline = (
            Source(chunks, args=(n,))
            >> InferenceStage(server.grpc_url, "running_sum", sequence_id=7)
            >> Map(total_of)
        )
        with pipeline:
            totals = list(pipeline)
    expected = np.cumsum([64.0 * i for i in range(n)])
    print("running totals:", totals[:5], "...", totals[-1])
    assert np.allclose(totals, expected)


if __name__ == "__main__":
    main(
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="hermes-example-")) / "repo"
    )
