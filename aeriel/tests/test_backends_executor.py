"""The portable backends' config parsing, sequence state and batching, in-process (no server)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hermes.aeriel.backends import BackendConfig, BackendConfigError, BatchExecutor, Request
from hermes.aeriel.backends._torchscript import input_order, output_positions
from hermes.aeriel.exceptions import BackendRequestError
from hermes.quiver.config import ControlKind, DataType, SequenceState, SequenceStrategy, TensorSpec


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def accumulator_config(
    *, max_batch_size: int = 4, idle_us: str = "1000000", initial: dict | None = None
) -> dict:
    """The JSON Triton hands a python-based backend (64-bit integers as strings)."""
    return {
        "name": "acc",
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "max_batch_size": max_batch_size,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": ["1"]}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": ["1"]}],
        "sequence_batching": {
            "max_sequence_idle_microseconds": idle_us,
            "oldest": {"max_candidate_sequences": 4},
            "control_input": [
                {"name": "START", "control": [{"kind": "CONTROL_SEQUENCE_START", "int32_false_true": [0, 1]}]}
            ],
            "state": [
                {
                    "input_name": "STATE_IN",
                    "output_name": "STATE_OUT",
                    "data_type": "TYPE_FP32",
                    "dims": ["1"],
                    "initial_state": [
                        initial
                        or {"data_type": "TYPE_FP32", "dims": ["1"], "zero_data": True, "name": "zeros"}
                    ],
                }
            ],
        },
        "parameters": {"intra_op_thread_count": {"string_value": "2"}},
    }


class Recorder:
    """A model call ``y = x + state`` that records the batch sizes it ran."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.batches.append(int(feeds["x"].shape[0]))
        y = feeds["x"] + feeds["STATE_IN"]
        return {"y": y, "STATE_OUT": y}


def values(results: list) -> list[float]:
    return [float(r["y"].reshape(-1)[0]) for r in results]


def req(value: float, cid: int, *, start: bool = False, end: bool = False, ready: bool = True) -> Request:
    return Request(
        inputs={"x": np.full((1, 1), value, np.float32)},
        correlation_id=cid,
        start=start,
        end=end,
        ready=ready,
    )


def test_config_parses_triton_json_with_string_integers():
    config = BackendConfig.from_json(json.dumps(accumulator_config(idle_us="2500000")))
    assert config.max_batch_size == 4
    assert config.sequence is not None
    assert config.sequence.strategy is SequenceStrategy.OLDEST
    assert config.sequence.max_idle_us == 2_500_000
    assert config.sequence.controls[ControlKind.START].name == "START"
    assert config.states[0].input_name == "STATE_IN"
    assert config.states[0].dims == (1,)
    assert config.int_parameter("intra_op_thread_count") == 2


def test_config_parses_into_quivers_types_and_ignores_fields_of_a_newer_triton():
    data = accumulator_config()
    data["a_field_of_a_later_triton"] = {"enabled": True}
    data["input"][0]["another_new_field"] = 3
    config = BackendConfig.from_json(data)
    assert config.proto.name == "acc" and config.proto.sequence_batching.oldest.max_candidate_sequences == 4
    assert config.inputs == (TensorSpec(name="x", dims=(1,), dtype=DataType.FP32),)
    assert config.states == (
        SequenceState(
            input_name="STATE_IN", output_name="STATE_OUT", dims=(1,), dtype=DataType.FP32, initial="zeros",
            initial_name="zeros", initial_dims=(1,),
        ),
    )  # fmt: skip
    assert config.sequence is not None and config.sequence.controls[ControlKind.START].true_value == 1.0


def test_config_that_is_not_a_model_config_is_a_clear_error():
    with pytest.raises(BackendConfigError, match=r"not a Triton model configuration: .*max_batch_size"):
        BackendConfig.from_json({"name": "acc", "max_batch_size": "many"})


def test_config_rejects_string_tensors_naming_the_tensor():
    data = accumulator_config()
    data["input"][0]["data_type"] = "TYPE_STRING"
    with pytest.raises(
        BackendConfigError, match="model 'acc': data_type of 'x'='TYPE_STRING' is not supported"
    ):
        BackendConfig.from_json(data)


def test_initial_state_needs_exactly_one_source():
    data = accumulator_config(initial={"data_type": "TYPE_FP32", "dims": ["1"], "name": "nothing"})
    with pytest.raises(BackendConfigError, match="must set exactly one of zero_data or data_file"):
        BackendConfig.from_json(data)


def test_initial_state_data_file_of_wrong_size_is_rejected(tmp_path: Path):
    (tmp_path / "initial_state").mkdir()
    (tmp_path / "initial_state" / "s.bin").write_bytes(b"\0" * 3)
    data = accumulator_config(initial={"data_type": "TYPE_FP32", "dims": ["1"], "data_file": "s.bin"})
    with pytest.raises(BackendConfigError, match="holds 3 bytes, expected 4"):
        BatchExecutor(BackendConfig.from_json(data), Recorder(), model_dir=tmp_path)


def test_batched_sequences_run_as_one_call_and_keep_separate_state(tmp_path: Path):
    run = Recorder()
    executor = BatchExecutor(BackendConfig.from_json(accumulator_config()), run, model_dir=tmp_path)
    assert values(executor.execute([req(1, 1, start=True), req(10, 2, start=True)])) == [1.0, 10.0]
    assert values(executor.execute([req(2, 1), req(20, 2)])) == [3.0, 30.0]
    assert values(executor.execute([req(3, 1, end=True), req(30, 2)])) == [6.0, 60.0]
    assert run.batches == [2, 2, 2]
    assert executor.states is not None and executor.states.live == [2]


def test_two_requests_of_one_sequence_in_one_batch_run_in_order(tmp_path: Path):
    run = Recorder()
    executor = BatchExecutor(BackendConfig.from_json(accumulator_config()), run, model_dir=tmp_path)
    results = executor.execute([req(1, 7, start=True), req(2, 7), req(5, 8, start=True), req(3, 7)])
    assert values(results) == [1.0, 3.0, 5.0, 6.0]
    assert run.batches == [2, 1, 1]


def test_null_requests_are_answered_empty_and_touch_no_state(tmp_path: Path):
    run = Recorder()
    executor = BatchExecutor(BackendConfig.from_json(accumulator_config()), run, model_dir=tmp_path)
    results = executor.execute([req(1, 1, start=True), req(99, 0, ready=False)])
    assert results[1] == {}
    assert values(results[:1]) == [1.0]
    assert run.batches == [1]


def test_unknown_sequence_without_start_gets_an_error_naming_it(tmp_path: Path):
    executor = BatchExecutor(BackendConfig.from_json(accumulator_config()), Recorder(), model_dir=tmp_path)
    results = executor.execute([req(1, 42), req(1, 43, start=True)])
    assert isinstance(results[0], BackendRequestError)
    assert "model 'acc': sequence 42 has no state here: its first request must carry the START flag" in str(
        results[0]
    )
    assert values(results[1:]) == [1.0]


def test_idle_sequence_expires_after_max_sequence_idle(tmp_path: Path):
    clock = FakeClock()
    config = BackendConfig.from_json(accumulator_config(idle_us="500000"))
    executor = BatchExecutor(config, Recorder(), model_dir=tmp_path, clock=clock)
    executor.execute([req(1, 1, start=True), req(1, 2, start=True)])
    clock.now += 0.4
    executor.execute([req(1, 2)])
    clock.now += 0.2  # sequence 1 idle 0.6 s > 0.5 s; sequence 2 idle 0.2 s
    results = executor.execute([req(1, 2)])
    assert values(results) == [3.0]
    assert executor.states is not None and executor.states.live == [2]
    assert isinstance(executor.execute([req(1, 1)])[0], BackendRequestError)


def test_initial_state_comes_from_the_data_file(tmp_path: Path):
    (tmp_path / "initial_state").mkdir()
    np.array([5.0], "<f4").tofile(tmp_path / "initial_state" / "five.bin")
    data = accumulator_config(initial={"data_type": "TYPE_FP32", "dims": ["1"], "data_file": "five.bin"})
    executor = BatchExecutor(BackendConfig.from_json(data), Recorder(), model_dir=tmp_path)
    assert values(executor.execute([req(1, 1, start=True)])) == [6.0]
    assert values(executor.execute([req(1, 1, start=True)])) == [6.0]  # START restarts from the file


def test_model_failure_becomes_an_error_response_for_its_group(tmp_path: Path):
    def broken(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError("boom")

    executor = BatchExecutor(BackendConfig.from_json(accumulator_config()), broken, model_dir=tmp_path)
    results = executor.execute([req(1, 1, start=True)])
    assert str(results[0]) == "model 'acc' failed: RuntimeError: boom"


def test_torchscript_inputs_follow_indices_then_forward_names_then_config_order():
    assert input_order(["INPUT__1", "INPUT__0", "INPUT__2"], None) == ["INPUT__0", "INPUT__1", "INPUT__2"]
    assert input_order(["signal", "memory"], ["memory", "signal"]) == ["memory", "signal"]
    assert input_order(["a", "b"], ["x", "y"]) == ["a", "b"]
    assert output_positions(["OUTPUT__1", "OUTPUT__0"]) == {"OUTPUT__1": 1, "OUTPUT__0": 0}
    assert output_positions(["y", "STATE_OUT"]) == {"y": 0, "STATE_OUT": 1}


@pytest.mark.parametrize(
    ("groups", "parameter", "cpus", "threads"),
    [
        ([], None, 8, 0),  # one instance: the framework's default (every core), as in Triton
        ([3, 1], None, 8, 2),  # four instances share eight CPUs
        ([4], None, 2, 1),  # more instances than CPUs: one thread each, never zero
        ([4], "3", 2, 3),  # a thread count the config sets wins
        ([2], "0", 8, 4),  # "0" means unset, as in Triton's backends
    ],
)
def test_unset_thread_counts_share_the_cpus_among_the_instances(
    groups: list[int], parameter: str | None, cpus: int, threads: int
) -> None:
    data = accumulator_config()
    data["instance_group"] = [{"kind": "KIND_CPU", "count": count} for count in groups]
    data["parameters"] = {} if parameter is None else {"intra_op_thread_count": {"string_value": parameter}}
    config = BackendConfig.from_json(data)
    assert config.instance_count == (sum(groups) or 1)
    assert config.threads_per_call("intra_op_thread_count", cpus=cpus) == threads
