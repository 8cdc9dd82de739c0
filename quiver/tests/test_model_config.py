"""The typed config builder: values, validation errors naming the field, exact text round trips."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as pb

from hermes.quiver import (
    Accelerator,
    ControlInput,
    DataType,
    ModelConfig,
    ModelConfigError,
    Platform,
    SequenceState,
)

GOLDEN = Path(__file__).parent / "golden"


def build_streaming_config() -> ModelConfig:
    config = ModelConfig(name="snapshotter", platform=Platform.ONNX)
    config.add_input("snapshot_update", [1, 2, 8], "FP32")
    config.add_output("snapshot", [4, 2, 16], "FP32")
    config.add_instance_group(kind="cpu", count=3)
    config.sequence_batching(
        strategy="direct",
        max_sequence_idle_us=60_000_000,
        control_inputs=[
            ControlInput(name="START", kind="start"),
            ControlInput(name="CORRID", kind="corrid", dtype="UINT64"),
        ],
        states=[SequenceState(input_name="input_snapshot", output_name="output_snapshot", dims=(1, 2, 16))],
    )
    config.set_parameter("states", "net/x")
    return config


def build_batched_config() -> ModelConfig:
    config = ModelConfig(name="net", platform=Platform.TORCHSCRIPT)
    config.max_batch_size = 16
    config.add_input("x", [3, -1], np.float32)
    config.add_input("mask", [None], "bool")
    config.add_output("OUTPUT__0", [5], "FP16")
    config.add_instance_group(kind="gpu", count=2, gpus=2, name="main")
    config.dynamic_batching(preferred_batch_sizes=[8, 16], max_queue_delay_us=500)
    config.version_policy(latest=2)
    config.add_warmup("zeros", batch_size=4, shapes={"x": [3, 7], "mask": [7]})
    config.optimization(
        graph_level=1,
        gpu_accelerators=[Accelerator(name="tensorrt", parameters={"precision_mode": "FP16"})],
        cuda_graphs=True,
        input_pinned_memory=False,
    )
    config.response_cache()
    return config


@pytest.mark.parametrize(
    ("golden", "build"),
    [("streaming.pbtxt", build_streaming_config), ("batched.pbtxt", build_batched_config)],
)
def test_builder_writes_golden_pbtxt(golden: str, build) -> None:
    assert build().to_text() == (GOLDEN / golden).read_text()


@pytest.mark.parametrize("golden", ["streaming.pbtxt", "batched.pbtxt", "handwritten.pbtxt"])
def test_config_text_round_trips_byte_for_byte(golden: str) -> None:
    text = (GOLDEN / golden).read_text()
    config = ModelConfig.from_text(text)
    assert config.to_text() == text
    again = ModelConfig.from_text(config.to_text())
    assert again == config


def test_changed_config_is_written_canonically() -> None:
    text = (GOLDEN / "handwritten.pbtxt").read_text()
    config = ModelConfig.from_text(text)
    config.max_batch_size = 4
    out = config.to_text()
    assert "# a comment" not in out
    assert "max_batch_size: 4" in out
    assert ModelConfig.from_text(out).inputs[0].name == "INPUT__0"


@pytest.mark.parametrize("dtype", list(DataType))
def test_every_triton_dtype_is_declared_and_read_back(dtype: DataType) -> None:
    config = ModelConfig(name="m", platform="onnxruntime_onnx")
    config.add_input("x", [-1, 2], dtype)
    back = ModelConfig.from_text(config.to_text())
    assert back.inputs[0].dtype is dtype
    assert back.inputs[0].dims == (-1, 2)
    expected = "TYPE_STRING" if dtype is DataType.BYTES else f"TYPE_{dtype.value}"
    assert f"data_type: {expected}" in config.to_text()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("float32", DataType.FP32),
        (np.int64, DataType.INT64),
        ("TYPE_BF16", DataType.BF16),
        ("STRING", DataType.BYTES),
        (np.dtype("uint16"), DataType.UINT16),
        (pb.TYPE_FP64, DataType.FP64),
        ("half", DataType.FP16),
    ],
)
def test_datatype_converts_names_numpy_and_proto(given, expected: DataType) -> None:
    assert DataType.of(given) is expected


def test_datatype_converts_torch_dtypes() -> None:
    torch = pytest.importorskip("torch")
    assert DataType.of(torch.bfloat16) is DataType.BF16
    assert DataType.FP16.torch is torch.float16


def test_python_backend_is_written_as_backend_field() -> None:
    config = ModelConfig(name="py", platform=Platform.PYTHON)
    assert config.to_text() == 'name: "py"\nbackend: "python"\n'
    assert config.platform is Platform.PYTHON


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda c: setattr(c, "max_batch_size", -1), "max_batch_size: expected an integer >= 0, got -1"),
        (lambda c: c.add_input("x", [0, 3]), "input[x].dims: [0, 3] has 0"),
        (lambda c: c.add_input("x", [3], "complex64"), "data_type: 'complex64' names no Triton type"),
        (lambda c: c.add_instance_group(count=0), "instance_group.count: expected an integer >= 1, got 0"),
        (lambda c: c.add_instance_group(kind="tpu"), "instance_group.kind: unknown value 'tpu'"),
        (lambda c: c.dynamic_batching(), "dynamic_batching: needs max_batch_size > 0"),
        (
            lambda c: c.sequence_batching(strategy="newest"),
            "sequence_batching.strategy: unknown value 'newest'",
        ),
        (
            lambda c: c.sequence_batching(max_candidate_sequences=2),
            "sequence_batching.direct: max_candidate_sequences and preferred_batch_sizes apply",
        ),
        (lambda c: c.add_state("a", "b", [3]), "sequence_batching.state: call sequence_batching(...) first"),
        (
            lambda c: c.version_policy(latest=0),
            "version_policy.latest.num_versions: expected an integer >= 1, got 0",
        ),
        (lambda c: c.version_policy(), "version_policy: give exactly one of"),
        (lambda c: c.add_warmup("w", data="ones"), "model_warmup.inputs: data 'ones'"),
        (lambda c: c.optimization(priority="urgent"), "optimization.priority: 'urgent'"),
        (lambda c: c.scale_instance_group(2), "instance_group: 0 groups; choose one"),
    ],
)
def test_wrong_values_raise_naming_the_field(action, message: str) -> None:
    config = ModelConfig(name="m", platform=Platform.ONNX)
    with pytest.raises(ModelConfigError, match=r"^" + re.escape(message)):
        action(config)


def test_instance_groups_scale_by_index_and_name_and_ensure_is_idempotent() -> None:
    config = ModelConfig(name="m", platform=Platform.ONNX)
    config.add_instance_group(kind="cpu", count=1, name="a")
    config.add_instance_group(kind="gpu", count=1, gpus=[1], name="b")
    config.scale_instance_group(4, name="b")
    config.scale_instance_group(3, index=0)
    assert [(g.name, g.count, list(g.gpus)) for g in config.proto.instance_group] == [
        ("a", 3, []),
        ("b", 4, [1]),
    ]
    with pytest.raises(
        ModelConfigError, match=r"instance_group\[c\]: no group of that name; groups are \['a', 'b'\]"
    ):
        config.scale_instance_group(2, name="c")
    single = ModelConfig(name="s", platform=Platform.ONNX)
    single.ensure_instance_group(count=2, kind="cpu")
    single.ensure_instance_group(count=5, kind="cpu")
    assert [(g.count, g.kind) for g in single.proto.instance_group] == [(5, pb.ModelInstanceGroup.KIND_CPU)]


def test_warmup_generates_inputs_from_config_zeros_random_and_files() -> None:
    config = ModelConfig(name="m", platform=Platform.ONNX)
    config.max_batch_size = 8
    config.add_input("x", [2, 3], "FP32")
    config.add_input("ids", [-1], "INT64")
    config.add_warmup("r", batch_size=8, data="random", shapes={"ids": [5]}, count=2)
    config.add_warmup("f", data={"x": "x.bin", "ids": "ids.bin"}, shapes={"ids": [5]})
    r, f = config.proto.model_warmup
    assert (r.batch_size, r.count, list(r.inputs["x"].dims), list(r.inputs["ids"].dims)) == (
        8,
        2,
        [2, 3],
        [5],
    )
    assert r.inputs["x"].random_data and r.inputs["ids"].data_type == pb.TYPE_INT64
    assert f.inputs["ids"].input_data_file == "ids.bin"
    with pytest.raises(ModelConfigError, match=r"model_warmup.inputs\[ids\].dims: \[-1\] has variable dims"):
        config.add_warmup("z")
    with pytest.raises(ModelConfigError, match=r"model_warmup\.batch_size: 9 exceeds max_batch_size 8"):
        config.add_warmup("big", batch_size=9, shapes={"ids": [1]})


def test_sequence_batching_oldest_with_control_inputs_and_file_state() -> None:
    config = ModelConfig(name="m", platform=Platform.PYTHON)
    config.max_batch_size = 4
    config.sequence_batching(
        strategy="oldest",
        max_candidate_sequences=8,
        preferred_batch_sizes=[4],
        max_queue_delay_us=100,
        max_sequence_idle_us=5_000_000,
    )
    config.add_control_input("READY", "ready", "BOOL")
    config.add_state("state_in", "state_out", [-1, 3], "FP16", initial="init.bin", initial_dims=[2, 3])
    seq = config.proto.sequence_batching
    assert (seq.oldest.max_candidate_sequences, list(seq.oldest.preferred_batch_size)) == (8, [4])
    assert seq.oldest.max_queue_delay_microseconds == 100 and seq.max_sequence_idle_microseconds == 5_000_000
    assert seq.control_input[0].control[0].kind == pb.ModelSequenceBatching.Control.CONTROL_SEQUENCE_READY
    assert list(seq.control_input[0].control[0].bool_false_true) == [False, True]
    state = seq.state[0]
    assert (list(state.dims), state.data_type, state.initial_state[0].data_file) == (
        [-1, 3],
        pb.TYPE_FP16,
        "init.bin",
    )
    assert list(state.initial_state[0].dims) == [2, 3]
    with pytest.raises(ModelConfigError, match=r"sequence_batching.state\[state_in\]: already declared"):
        config.add_state("state_in", "x", [3])


def test_parameters_are_set_as_text() -> None:
    config = ModelConfig(name="m", platform=Platform.ONNX)
    config.set_parameter("intra_op_thread_count", 2)
    config.set_parameter("execution_mode", "sequential")
    assert config.parameters == {"execution_mode": "sequential", "intra_op_thread_count": "2"}


def test_unknown_platform_text_raises_naming_the_source() -> None:
    with pytest.raises(
        ModelConfigError, match=r"^repo/m/config.pbtxt: platform: unknown value 'tensorflow_graphdef'"
    ):
        ModelConfig.from_text('name: "m"\nplatform: "tensorflow_graphdef"\n', source="repo/m/config.pbtxt")
    with pytest.raises(ModelConfigError, match=r"^x.pbtxt: not a valid Triton model config"):
        ModelConfig.from_text("name: 'm'\nmax_batch_size: lots\n", source="x.pbtxt")


def test_parameters_is_a_live_mapping_that_changes_the_config() -> None:
    config = ModelConfig(name="net", platform=Platform.ONNX)
    config.parameters["b"] = "2"
    config.parameters.update({"a": "1", "c": "3"})
    del config.parameters["c"]
    assert dict(config.parameters) == {"a": "1", "b": "2"} and list(config.parameters) == ["a", "b"]
    assert config.proto.parameters["b"].string_value == "2"
    assert 'key: "a"' in config.to_text()
    config.set_parameter("n", 4)
    assert config.parameters["n"] == "4"
    with pytest.raises(
        ModelConfigError, match=r"parameters\[x\]: Triton stores parameters as text, got int 5"
    ):
        config.parameters["x"] = 5  # type: ignore[assignment]
    with pytest.raises(ModelConfigError, match="key must be a non-empty string"):
        config.parameters[""] = "v"
    with pytest.raises(KeyError):
        del config.parameters["missing"]
