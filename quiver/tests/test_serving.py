"""Exported models load on the real local Triton server and answer like eager torch."""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from tritonclient.utils import np_to_triton_dtype

from hermes.quiver import ModelRepository, Platform

torch = pytest.importorskip("torch")
grpcclient = pytest.importorskip("tritonclient.grpc")

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def server(triton_repo: Path, start_triton):
    """A server with time to unload torch-heavy python models before it exits (no stub outlives it)."""
    return start_triton(triton_repo, models=[], exit_timeout_s=15)


@contextlib.contextmanager
def client(server) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        yield c
    finally:
        c.close()


def infer(server, model: str, inputs: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
    with client(server) as c:
        return _infer(c, model, inputs, outputs)


def _infer(c, model: str, inputs: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
    request = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        request.append(tensor)
    result = c.infer(model, request, outputs=[grpcclient.InferRequestedOutput(n) for n in outputs])
    return {n: result.as_numpy(n) for n in outputs}


def eager(module, *arrays: np.ndarray) -> list[np.ndarray]:
    with torch.inference_mode():
        out = module(*[torch.from_numpy(a) for a in arrays])
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def test_python_backend_export_serves_and_batches_concurrent_requests(
    triton_repo: Path, server, nets: ModuleType
) -> None:
    repo = ModelRepository(triton_repo)
    model = repo.add("affine_py", platform=Platform.PYTHON)
    model.config.max_batch_size = 8
    model.config.dynamic_batching(max_queue_delay_us=200_000)
    model.config.add_instance_group(kind="cpu", count=1)
    net = nets.Affine(features=4, outputs=3)
    model.export_version(
        net,
        example_inputs=torch.randn(2, 4),
        module_kwargs={"features": 4, "outputs": 3},
        code_paths=[nets.__file__],
    )
    # warm-up samples generated from the config, one from a data file: Triton runs them at load
    model.write_warmup_file("x.bin", np.ones(4, dtype=np.float32))  # one sample
    model.config.add_warmup("zeros", batch_size=2)
    model.config.add_warmup("file", batch_size=2, data={"x": "x.bin"})
    model.config.write()
    server.load_model("affine_py")
    assert "model_warmup" in (triton_repo / "affine_py" / "config.pbtxt").read_text()
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    got = infer(server, "affine_py", {"x": x}, ["output_0"])["output_0"]
    np.testing.assert_allclose(got, eager(net, x)[0], rtol=1e-5, atol=1e-6)
    # several requests in flight at once: Triton hands them to one execute(), which runs them as one call

    rows = [np.random.default_rng(i).standard_normal((1 + i % 2, 4)).astype(np.float32) for i in range(4)]
    answers: queue.Queue = queue.Queue()
    with client(server) as c:
        before = c.get_inference_statistics("affine_py").model_stats[0]
        for i, row in enumerate(rows):
            tensor = grpcclient.InferInput("x", list(row.shape), np_to_triton_dtype(row.dtype))
            tensor.set_data_from_numpy(row)
            c.async_infer(
                "affine_py", [tensor], callback=lambda result, error, i=i: answers.put((i, result, error))
            )
        results = {i: (r, e) for i, r, e in (answers.get(timeout=60) for _ in rows)}
        after = c.get_inference_statistics("affine_py").model_stats[0]
    # 6 samples in 4 requests; fewer executions than requests means requests shared one torch call
    assert after.inference_count - before.inference_count == 6
    assert after.execution_count - before.execution_count < 4
    assert sorted(results) == [0, 1, 2, 3]
    for i, row in enumerate(rows):
        result, error = results[i]
        assert error is None
        np.testing.assert_allclose(result.as_numpy("output_0"), eager(net, row)[0], rtol=1e-5, atol=1e-6)


def test_onnx_export_serves_like_eager_torch(triton_repo: Path, server, nets: ModuleType) -> None:
    repo = ModelRepository(triton_repo)
    model = repo.add("heads_onnx", platform=Platform.ONNX)
    model.config.max_batch_size = 4
    model.config.add_instance_group(kind="cpu", count=1)
    net = nets.TwoHeads()
    model.export_version(net, example_inputs=[torch.randn(2, 4), torch.rand(2, 1)], output_names=["a", "b"])
    server.load_model("heads_onnx")
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    s = np.random.default_rng(2).random((3, 1)).astype(np.float32)
    got = infer(server, "heads_onnx", {"x": x, "scale": s}, ["a", "b"])
    want = eager(net, x, s)
    np.testing.assert_allclose(got["a"], want[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["b"], want[1], rtol=1e-4, atol=1e-5)


def test_torchscript_export_serves_like_eager_torch(triton_repo: Path, server, nets: ModuleType) -> None:
    repo = ModelRepository(triton_repo)
    model = repo.add("affine_ts", platform=Platform.TORCHSCRIPT)
    model.config.max_batch_size = 4
    model.config.add_instance_group(kind="cpu", count=1)
    net = nets.Affine()
    model.export_version(net, example_inputs=torch.randn(2, 4))
    server.load_model("affine_ts")
    x = np.random.default_rng(3).standard_normal((4, 4)).astype(np.float32)
    got = infer(server, "affine_ts", {"x": x}, ["OUTPUT__0"])["OUTPUT__0"]
    np.testing.assert_allclose(got, eager(net, x)[0], rtol=1e-5, atol=1e-6)


def test_ensemble_of_two_models_chained_by_pipe_serves_end_to_end(
    triton_repo: Path, server, nets: ModuleType
) -> None:
    repo = ModelRepository(triton_repo)
    first = repo.add("first", platform=Platform.PYTHON)
    second = repo.add("second", platform=Platform.PYTHON)
    for model in (first, second):
        model.config.max_batch_size = 4
        model.config.add_instance_group(kind="cpu", count=1)
    net1 = nets.Affine(features=4, outputs=6)
    net2 = nets.Affine(features=6, outputs=2)
    first.export_version(
        net1,
        example_inputs=torch.randn(2, 4),
        module_kwargs={"features": 4, "outputs": 6},
        code_paths=[nets.__file__],
    )
    second.export_version(
        net2,
        example_inputs=torch.randn(2, 6),
        module_kwargs={"features": 6, "outputs": 2},
        code_paths=[nets.__file__],
    )
    ensemble = repo.add("chain", platform=Platform.ENSEMBLE)
    ensemble.config.max_batch_size = 4
    ensemble.add_input(first.inputs["x"], key="data")
    ensemble.pipe(first.outputs["output_0"], second.inputs["x"])
    ensemble.add_output(second.outputs["output_0"], key="prediction")
    ensemble.export_version()
    server.load_model("chain")
    x = np.random.default_rng(4).standard_normal((3, 4)).astype(np.float32)
    got = infer(server, "chain", {"data": x}, ["prediction"])["prediction"]
    np.testing.assert_allclose(got, eager(net2, eager(net1, x)[0])[0], rtol=1e-5, atol=1e-6)
