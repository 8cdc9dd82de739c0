"""The portable ``onnxruntime`` backend on the real local tritonserver.

Standard ``onnxruntime_onnx`` folders (``<version>/model.onnx``) built with torch's ONNX
exporter, served unchanged; implicit state is emulated by the backend.
"""

from __future__ import annotations

import concurrent.futures
import os
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from hermes.aeriel import ModelLoadError, Server
from hermes.aeriel.testing import SharedTriton


# The session's one server (hermes.aeriel.testing.shared_triton): each test writes and loads its
# models; they are unloaded and removed after it.
@pytest.fixture
def triton_repo(shared_triton: SharedTriton) -> Path:
    return shared_triton.repository


@pytest.fixture
def triton_server(shared_triton: SharedTriton) -> Server:
    return shared_triton.server


STATE = """
  state [ {{
    input_name: "STATE_IN"
    output_name: "STATE_OUT"
    data_type: TYPE_FP32
    dims: [ 1 ]
    initial_state: {{ data_type: TYPE_FP32 dims: [ 1 ] {initial} name: "init" }}
  }} ]"""


class Accumulator(torch.nn.Module):
    """y = x + state; the next state is y (a running sum)."""

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = x + state
        return y, y * 1.0


class Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def export_onnx(
    module: torch.nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in inputs + outputs},
            dynamo=False,
        )


def write_accumulator(
    repo: Path,
    name: str,
    *,
    max_batch_size: int,
    strategy: str = "direct { }",
    idle_us: int = 60_000_000,
    initial: str = "zero_data: true",
    controls: str = "",
    instances: int = 1,
) -> Path:
    """An accumulator; unbatched models hold one sequence per instance (a sequence batcher slot)."""
    folder = repo / name
    export_onnx(
        Accumulator(),
        (torch.ones(1, 1), torch.zeros(1, 1)) if max_batch_size > 0 else (torch.ones(1), torch.zeros(1)),
        folder / "1" / "model.onnx",
        ["x", "STATE_IN"],
        ["y", "STATE_OUT"],
    )
    (folder / "config.pbtxt").write_text(
        textwrap.dedent(
            f"""\
            name: "{name}"
            platform: "onnxruntime_onnx"
            max_batch_size: {max_batch_size}
            input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 1 ] }} ]
            output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 1 ] }} ]
            instance_group [ {{ kind: KIND_CPU count: {instances} }} ]
            parameters {{ key: "intra_op_thread_count" value: {{ string_value: "1" }} }}
            sequence_batching {{
              max_sequence_idle_microseconds: {idle_us}
              {strategy}
              {controls}
            """
        )
        + STATE.format(initial=initial)
        + "\n}\n"
    )
    return folder


def write_mlp(
    repo: Path, name: str = "mlp", *, max_batch_size: int = 8, extra: str = "", filename: str = "",
    instances: int = 1, threads: str = 'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }',
) -> Mlp:  # fmt: skip
    module = Mlp().eval()
    folder = repo / name
    export_onnx(
        module, (torch.ones(2, 16),), folder / "1" / (filename or "model.onnx"), ["INPUT"], ["OUTPUT"]
    )
    default = f'default_model_filename: "{filename}"' if filename else ""
    (folder / "config.pbtxt").write_text(
        textwrap.dedent(
            f"""\
            name: "{name}"
            platform: "onnxruntime_onnx"
            max_batch_size: {max_batch_size}
            {default}
            input [ {{ name: "INPUT" data_type: TYPE_FP32 dims: [ 16 ] }} ]
            output [ {{ name: "OUTPUT" data_type: TYPE_FP32 dims: [ 8 ] }} ]
            instance_group [ {{ kind: KIND_CPU count: {instances} }} ]
            {threads}
            {extra}
            """
        )
    )
    return module


def infer_step(client, model: str, value: float, *, sequence_id: int, start: bool, end: bool, batched: bool):
    x = np.full((1, 1) if batched else (1,), value, dtype=np.float32)
    inp = grpcclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(model, [inp], sequence_id=sequence_id, sequence_start=start, sequence_end=end)
    return float(result.as_numpy("y").reshape(-1)[0])


def wait_for_log(server, text: str, timeout_s: float = 10.0) -> None:
    """The stub's log lines reach the server log asynchronously: wait until ``text`` is there."""
    deadline = time.monotonic() + timeout_s
    while text not in server.read_log() and time.monotonic() < deadline:
        time.sleep(0.05)


def interleaved_running_sums(client, model: str, *, batched: bool, ids: tuple[int, int] = (11, 22)) -> dict:
    sums: dict[int, list[float]] = {sid: [] for sid in ids}
    for step, value in enumerate([1.0, 2.0, 3.0, 4.0]):
        for sid in ids:
            sums[sid].append(
                infer_step(
                    client, model, value, sequence_id=sid, start=step == 0, end=step == 3, batched=batched
                )
            )
    return sums


@pytest.mark.parametrize(
    ("max_batch_size", "strategy"),
    [
        (0, "direct { }"),
        (4, "direct { }"),
        (
            4,
            "oldest { max_candidate_sequences: 4 preferred_batch_size: [ 2 ] max_queue_delay_microseconds: 1000 }",
        ),
    ],
    ids=["unbatched-direct", "batched-direct", "batched-oldest"],
)
def test_onnx_accumulator_keeps_implicit_state_per_interleaved_sequence(
    triton_repo, triton_server, max_batch_size, strategy
):
    # Unbatched: one sequence slot per instance, so two instances for two live sequences.
    instances = 2 if max_batch_size == 0 else 1
    write_accumulator(
        triton_repo, "acc", max_batch_size=max_batch_size, strategy=strategy, instances=instances
    )
    triton_server.load_model("acc")
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        sums = interleaved_running_sums(client, "acc", batched=max_batch_size > 0)
    assert sums == {11: [1.0, 3.0, 6.0, 10.0], 22: [1.0, 3.0, 6.0, 10.0]}


def test_onnx_accumulator_over_one_grpc_stream_with_concurrent_sequences(triton_repo, triton_server):
    write_accumulator(
        triton_repo,
        "acc",
        max_batch_size=4,
        strategy="oldest { max_candidate_sequences: 8 max_queue_delay_microseconds: 2000 }",
    )
    triton_server.load_model("acc")
    results: dict[str, float] = {}
    errors: list[str] = []

    def callback(result, error):
        if error is not None:
            errors.append(str(error))
        else:
            results[result.get_response().id] = float(result.as_numpy("y").reshape(-1)[0])

    ids = [101, 102, 103]
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        client.start_stream(callback=callback)
        for step in range(5):
            for sid in ids:
                x = np.full((1, 1), float(sid % 100 + step), dtype=np.float32)
                inp = grpcclient.InferInput("x", [1, 1], "FP32")
                inp.set_data_from_numpy(x)
                client.async_stream_infer(
                    "acc",
                    [inp],
                    request_id=f"{sid}:{step}",
                    sequence_id=sid,
                    sequence_start=step == 0,
                    sequence_end=step == 4,
                )
        client.stop_stream()
    assert errors == []
    for sid in ids:
        values = [results[f"{sid}:{step}"] for step in range(5)]
        expected = np.cumsum([sid % 100 + step for step in range(5)]).tolist()
        assert values == expected


def test_initial_state_is_read_from_data_file(triton_repo, triton_server):
    folder = write_accumulator(triton_repo, "acc", max_batch_size=4, initial='data_file: "start.bin"')
    (folder / "initial_state").mkdir()
    np.array([100.0], dtype="<f4").tofile(folder / "initial_state" / "start.bin")
    triton_server.load_model("acc")
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        sums = interleaved_running_sums(client, "acc", batched=True)
    assert sums[11] == [101.0, 103.0, 106.0, 110.0]


def test_control_inputs_from_config_drive_start_and_end(triton_repo, triton_server):
    controls = """control_input [
      { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
      { name: "END" control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] } ] },
      { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] }
    ]"""
    write_accumulator(triton_repo, "acc", max_batch_size=4, controls=controls)
    triton_server.load_model("acc")
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        sums = interleaved_running_sums(client, "acc", batched=True)
        restarted = infer_step(client, "acc", 5.0, sequence_id=11, start=True, end=True, batched=True)
    assert sums == {11: [1.0, 3.0, 6.0, 10.0], 22: [1.0, 3.0, 6.0, 10.0]}
    assert restarted == 5.0


def test_outputs_equal_onnxruntime_in_process(triton_repo, triton_server):
    write_mlp(triton_repo, "mlp")
    triton_server.load_model("mlp")
    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    session = ort.InferenceSession(
        str(triton_repo / "mlp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (expected,) = session.run(["OUTPUT"], {"INPUT": x})
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        inp = grpcclient.InferInput("INPUT", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        served = client.infer("mlp", [inp]).as_numpy("OUTPUT")
    assert served.shape == (5, 8)
    assert float(np.max(np.abs(served - expected))) < 1e-6


def test_instances_without_a_thread_count_share_the_cpus(triton_repo, triton_server):
    write_mlp(triton_repo, "shared", instances=2, threads="")
    triton_server.load_model("shared")
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    expected = f"model 'shared': onnxruntime backend loaded {triton_repo / 'shared' / '1' / 'model.onnx'}"
    wait_for_log(triton_server, f"{share} thread(s) per call")
    lines = [line for line in triton_server.read_log().splitlines() if expected in line]
    assert len(lines) == 2  # one per instance
    assert all(f"{share} thread(s) per call" in line for line in lines)


def test_default_model_filename_is_honoured(triton_repo, triton_server):
    module = write_mlp(triton_repo, "renamed", filename="network.onnx")
    triton_server.load_model("renamed")
    x = np.ones((1, 16), dtype=np.float32)
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        inp = grpcclient.InferInput("INPUT", [1, 16], "FP32")
        inp.set_data_from_numpy(x)
        served = client.infer("renamed", [inp]).as_numpy("OUTPUT")
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    assert float(np.max(np.abs(served - expected))) < 1e-5


def test_dynamic_batching_merges_concurrent_requests_and_answers_each(triton_repo, triton_server):
    write_mlp(
        triton_repo,
        "mlp",
        max_batch_size=32,
        extra="dynamic_batching { max_queue_delay_microseconds: 20000 }",
    )
    triton_server.load_model("mlp")
    session = ort.InferenceSession(
        str(triton_repo / "mlp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    inputs = [np.full((1, 16), i / 10, dtype=np.float32) for i in range(24)]

    def one(x: np.ndarray) -> np.ndarray:
        with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
            inp = grpcclient.InferInput("INPUT", [1, 16], "FP32")
            inp.set_data_from_numpy(x)
            return client.infer("mlp", [inp]).as_numpy("OUTPUT")

    with concurrent.futures.ThreadPoolExecutor(len(inputs)) as pool:
        outputs = list(pool.map(one, inputs))
    for x, y in zip(inputs, outputs, strict=True):
        (expected,) = session.run(["OUTPUT"], {"INPUT": x})
        assert float(np.max(np.abs(y - expected))) < 1e-6
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        stats = client.get_inference_statistics("mlp", as_json=True)["model_stats"][0]
    assert int(stats["inference_count"]) == 24
    assert int(stats["execution_count"]) < 24


def test_idle_sequence_is_dropped_after_its_timeout(triton_repo, triton_server):
    # 2 s idle: far longer than two back-to-back requests take on a loaded machine, so only the
    # deliberate pause below (which can only run longer under load, never shorter) expires it
    write_accumulator(triton_repo, "acc", max_batch_size=0, idle_us=2_000_000)
    triton_server.load_model("acc")
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        assert infer_step(client, "acc", 1.0, sequence_id=7, start=True, end=False, batched=False) == 1.0
        assert infer_step(client, "acc", 2.0, sequence_id=7, start=False, end=False, batched=False) == 3.0
        time.sleep(2.5)  # idle past max_sequence_idle_microseconds (2 s)
        # Expiry runs whenever the backend executes: another sequence wakes it.
        assert infer_step(client, "acc", 0.0, sequence_id=8, start=True, end=True, batched=False) == 0.0
        wait_for_log(triton_server, "dropped sequence 7")
        assert "dropped sequence 7: idle longer than 2.000000 s" in triton_server.read_log()
        with pytest.raises(InferenceServerException, match="7"):
            infer_step(client, "acc", 3.0, sequence_id=7, start=False, end=False, batched=False)
        assert infer_step(client, "acc", 3.0, sequence_id=7, start=True, end=True, batched=False) == 3.0


def test_request_for_unknown_sequence_without_start_fails_and_server_keeps_serving(
    triton_repo, triton_server
):
    write_accumulator(triton_repo, "acc", max_batch_size=4)
    triton_server.load_model("acc")
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        with pytest.raises(InferenceServerException) as info:
            infer_step(client, "acc", 1.0, sequence_id=999, start=False, end=False, batched=True)
        assert "999" in str(info.value)
        assert "START" in str(info.value)
        sums = interleaved_running_sums(client, "acc", batched=True)
    assert sums[11] == [1.0, 3.0, 6.0, 10.0]
    triton_server.check()


def test_broken_model_file_fails_to_load_naming_the_model(tmp_path, start_triton):
    repo = tmp_path / "repo"
    write_mlp(repo, "broken")
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"this is not an onnx file")
    server = start_triton(repo, models=[])
    with pytest.raises(ModelLoadError) as info:
        server.load_model("broken")
    message = str(info.value)
    assert "model 'broken': cannot load onnxruntime model file" in message
    assert str(repo / "broken" / "1" / "model.onnx") in message
    server.check()  # the server itself keeps running
