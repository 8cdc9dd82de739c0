"""The portable ``pytorch`` backend on the real local tritonserver.

Standard ``pytorch_libtorch`` folders (``<version>/model.pt``, TorchScript) served unchanged,
names mapped as Triton's PyTorch backend maps them; implicit state emulated.
"""

from __future__ import annotations

import concurrent.futures
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient

from hermes.aeriel import ModelLoadError, Server, serve
from hermes.aeriel.testing import SharedTriton, wait_until_released


@pytest.fixture
def shared(shared_triton: SharedTriton) -> tuple[Path, Server]:
    """The session's one server (each test writes and loads its own models, removed after it)."""
    return shared_triton.repository, shared_triton.server


def stop_and_check(server: Server) -> None:
    """Close ``server`` and assert it left nothing behind.

    Torch stubs can outlive the server's exit timeout; the session SIGKILL that ends them
    takes a moment to land, so the check waits (up to 10 s) for them to vanish.
    """
    server.close()
    assert wait_until_released(server) == []


class IndexedAccumulator(torch.nn.Module):
    """INPUT__0 + state (INPUT__1) -> OUTPUT__0, next state OUTPUT__1."""

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = x + state
        return y, y


class NamedAccumulator(torch.nn.Module):
    """Arguments named like the config (state first, to prove names beat config order)."""

    def forward(self, memory: torch.Tensor, signal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = memory + signal
        return total * 10.0, total


class Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Dtypes(torch.nn.Module):
    """One output per numeric dtype: each input plus one (bool: negated)."""

    def forward(
        self,
        b: torch.Tensor,
        u8: torch.Tensor,
        i16: torch.Tensor,
        i32: torch.Tensor,
        i64: torch.Tensor,
        f16: torch.Tensor,
        f64: torch.Tensor,
    ) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
    ]:
        return ~b, u8 + 1, i16 + 1, i32 + 1, i64 + 1, f16 + 1, f64 + 1


def save_script(module: torch.nn.Module, path: Path) -> torch.jit.ScriptModule:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(module.eval())
        torch.jit.save(scripted, str(path))
    return scripted


def write_config(folder: Path, body: str) -> None:
    (folder / "config.pbtxt").write_text(textwrap.dedent(body))


def step(client, model: str, name: str, value: float, out: str, *, sid: int, start: bool, end: bool) -> float:
    x = np.full((1, 1), value, dtype=np.float32)
    inp = grpcclient.InferInput(name, [1, 1], "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(model, [inp], sequence_id=sid, sequence_start=start, sequence_end=end)
    return float(result.as_numpy(out).reshape(-1)[0])


def test_torchscript_accumulator_keeps_implicit_state_per_interleaved_sequence(shared):
    repo, server = shared
    folder = repo / "torch_acc"
    save_script(IndexedAccumulator(), folder / "1" / "model.pt")
    write_config(
        folder,
        """\
        name: "torch_acc"
        platform: "pytorch_libtorch"
        max_batch_size: 4
        input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 1 ] } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 1 ] } ]
        instance_group [ { kind: KIND_CPU count: 1 } ]
        parameters { key: "INTRA_OP_THREAD_COUNT" value: { string_value: "1" } }
        sequence_batching {
          max_sequence_idle_microseconds: 60000000
          direct { }
          state [ {
            input_name: "INPUT__1"
            output_name: "OUTPUT__1"
            data_type: TYPE_FP32
            dims: [ 1 ]
            initial_state: { data_type: TYPE_FP32 dims: [ 1 ] zero_data: true name: "zeros" }
          } ]
        }
        """,
    )
    server.load_model("torch_acc")
    sums: dict[int, list[float]] = {5: [], 6: []}
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        for i, value in enumerate([1.0, 2.0, 3.0, 4.0]):
            for sid in sums:
                sums[sid].append(
                    step(
                        client, "torch_acc", "INPUT__0", value, "OUTPUT__0", sid=sid, start=i == 0, end=i == 3
                    )
                )
    assert sums == {5: [1.0, 3.0, 6.0, 10.0], 6: [1.0, 3.0, 6.0, 10.0]}


def test_torchscript_inputs_map_by_forward_argument_names(shared):
    repo, server = shared
    folder = repo / "torch_named"
    save_script(NamedAccumulator(), folder / "1" / "model.pt")
    write_config(
        folder,
        """\
        name: "torch_named"
        platform: "pytorch_libtorch"
        max_batch_size: 2
        input [ { name: "signal" data_type: TYPE_FP32 dims: [ 1 ] } ]
        output [ { name: "scaled" data_type: TYPE_FP32 dims: [ 1 ] } ]
        instance_group [ { kind: KIND_CPU count: 1 } ]
        sequence_batching {
          oldest { max_candidate_sequences: 2 }
          state [ {
            input_name: "memory"
            output_name: "next_memory"
            data_type: TYPE_FP32
            dims: [ 1 ]
            initial_state: { data_type: TYPE_FP32 dims: [ 1 ] zero_data: true name: "zeros" }
          } ]
        }
        """,
    )
    server.load_model("torch_named")
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        values = [
            step(client, "torch_named", "signal", v, "scaled", sid=3, start=i == 0, end=i == 3)
            for i, v in enumerate([1.0, 2.0, 3.0, 4.0])
        ]
    assert values == [10.0, 30.0, 60.0, 100.0]


def test_torchscript_outputs_equal_torch_in_process_under_dynamic_batching(shared):
    repo, server = shared
    folder = repo / "torch_mlp"
    scripted = save_script(Mlp(), folder / "1" / "model.pt")
    write_config(
        folder,
        """\
        name: "torch_mlp"
        platform: "pytorch_libtorch"
        max_batch_size: 32
        input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 16 ] } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 8 ] } ]
        instance_group [ { kind: KIND_CPU count: 1 } ]
        dynamic_batching { max_queue_delay_microseconds: 20000 }
        """,
    )
    server.load_model("torch_mlp")
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((1 + i % 3, 16)).astype(np.float32) for i in range(16)]

    def one(x: np.ndarray) -> np.ndarray:
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            inp = grpcclient.InferInput("INPUT__0", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            return client.infer("torch_mlp", [inp]).as_numpy("OUTPUT__0")

    with concurrent.futures.ThreadPoolExecutor(len(inputs)) as pool:
        outputs = list(pool.map(one, inputs))
    worst = 0.0
    for x, y in zip(inputs, outputs, strict=True):
        with torch.inference_mode():
            expected = scripted(torch.from_numpy(x)).numpy()
        assert y.shape == expected.shape
        worst = max(worst, float(np.max(np.abs(y - expected))))
    assert worst < 1e-6
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        stats = client.get_inference_statistics("torch_mlp", as_json=True)["model_stats"][0]
    assert int(stats["inference_count"]) == sum(len(x) for x in inputs)
    assert int(stats["execution_count"]) < len(inputs)


def test_every_numeric_dtype_round_trips(shared):
    repo, server = shared
    folder = repo / "torch_dtypes"
    save_script(Dtypes(), folder / "1" / "model.pt")
    kinds = [
        ("b", "BOOL", np.bool_),
        ("u8", "UINT8", np.uint8),
        ("i16", "INT16", np.int16),
        ("i32", "INT32", np.int32),
        ("i64", "INT64", np.int64),
        ("f16", "FP16", np.float16),
        ("f64", "FP64", np.float64),
    ]
    inputs = ", ".join(f'{{ name: "{n}" data_type: TYPE_{t} dims: [ 3 ] }}' for n, t, _ in kinds)
    outputs = ", ".join(
        f'{{ name: "OUTPUT__{i}" data_type: TYPE_{t} dims: [ 3 ] }}' for i, (_, t, _) in enumerate(kinds)
    )
    write_config(
        folder,
        f"""\
        name: "torch_dtypes"
        platform: "pytorch_libtorch"
        max_batch_size: 0
        input [ {inputs} ]
        output [ {outputs} ]
        instance_group [ {{ kind: KIND_CPU count: 1 }} ]
        """,
    )
    server.load_model("torch_dtypes")
    arrays = {n: np.array([0, 1, 2]).astype(d) for n, _, d in kinds}
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        infer_inputs = []
        for n, t, _ in kinds:
            inp = grpcclient.InferInput(n, [3], t)
            inp.set_data_from_numpy(arrays[n])
            infer_inputs.append(inp)
        result = client.infer("torch_dtypes", infer_inputs)
    for i, (n, _, d) in enumerate(kinds):
        got = result.as_numpy(f"OUTPUT__{i}")
        expected = ~arrays[n] if d is np.bool_ else arrays[n] + d(1)
        assert got.dtype == np.dtype(d)
        np.testing.assert_array_equal(got, expected)


def test_broken_torchscript_file_fails_to_load_naming_the_model(tmp_path, start_triton):
    repo = tmp_path / "repo"
    folder = repo / "torch_broken"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.pt").write_bytes(b"not a torchscript archive")
    write_config(
        folder,
        """\
        name: "torch_broken"
        platform: "pytorch_libtorch"
        max_batch_size: 0
        input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 1 ] } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 1 ] } ]
        """,
    )
    server = start_triton(repo, models=[])
    with pytest.raises(ModelLoadError) as info:
        server.load_model("torch_broken")
    assert "model 'torch_broken': cannot load pytorch model file" in str(info.value)
    assert str(folder / "1" / "model.pt") in str(info.value)
    server.check()


def test_repository_with_onnx_torchscript_and_stateful_onnx_serves_at_start(tmp_path):
    repo = tmp_path / "repo"
    scripted = save_script(Mlp(), repo / "ts_mlp" / "1" / "model.pt")
    write_config(
        repo / "ts_mlp",
        """\
        name: "ts_mlp"
        platform: "pytorch_libtorch"
        max_batch_size: 4
        input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 16 ] } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 8 ] } ]
        """,
    )
    onnx_mlp = Mlp().eval()
    (repo / "onnx_mlp" / "1").mkdir(parents=True)
    (repo / "onnx_acc" / "1").mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            onnx_mlp,
            (torch.ones(1, 16),),
            str(repo / "onnx_mlp" / "1" / "model.onnx"),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "b"}, "y": {0: "b"}},
            dynamo=False,
        )
        torch.onnx.export(
            IndexedAccumulator(),
            (torch.ones(1, 1), torch.zeros(1, 1)),
            str(repo / "onnx_acc" / "1" / "model.onnx"),
            input_names=["x", "s_in"],
            output_names=["y", "s_out"],
            dynamic_axes={n: {0: "b"} for n in ("x", "s_in", "y", "s_out")},
            dynamo=False,
        )
    write_config(
        repo / "onnx_mlp",
        """\
        name: "onnx_mlp"
        platform: "onnxruntime_onnx"
        max_batch_size: 4
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 16 ] } ]
        output [ { name: "y" data_type: TYPE_FP32 dims: [ 8 ] } ]
        """,
    )
    write_config(
        repo / "onnx_acc",
        """\
        name: "onnx_acc"
        platform: "onnxruntime_onnx"
        max_batch_size: 2
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] } ]
        output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]
        sequence_batching {
          state [ { input_name: "s_in" output_name: "s_out" data_type: TYPE_FP32 dims: [ 1 ]
                    initial_state: { data_type: TYPE_FP32 dims: [ 1 ] zero_data: true name: "z" } } ]
        }
        """,
    )
    x = np.random.default_rng(2).standard_normal((3, 16)).astype(np.float32)
    server = serve(
        repo, models=["ts_mlp", "onnx_mlp", "onnx_acc"], log_file=tmp_path / "log", exit_timeout_s=2
    )
    try:
        outputs, sums = infer_mixed(server, x)
    finally:
        stop_and_check(server)
    with torch.inference_mode():
        assert float(np.max(np.abs(outputs["ts_mlp"] - scripted(torch.from_numpy(x)).numpy()))) < 1e-6
        assert float(np.max(np.abs(outputs["onnx_mlp"] - onnx_mlp(torch.from_numpy(x)).numpy()))) < 1e-5
    assert sums == [1.0, 3.0, 6.0, 10.0]


def infer_mixed(server: Server, x: np.ndarray) -> tuple[dict[str, np.ndarray], list[float]]:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        outputs = {}
        for model, name, out in (("ts_mlp", "INPUT__0", "OUTPUT__0"), ("onnx_mlp", "x", "y")):
            inp = grpcclient.InferInput(name, [3, 16], "FP32")
            inp.set_data_from_numpy(x)
            outputs[model] = client.infer(model, [inp]).as_numpy(out)
        sums = [
            step(client, "onnx_acc", "x", v, "y", sid=9, start=i == 0, end=i == 3)
            for i, v in enumerate([1, 2, 3, 4])
        ]
    return outputs, sums
