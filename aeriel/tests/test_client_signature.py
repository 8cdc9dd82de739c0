"""Signature discovery and request validation, from the test models' real config files (no server)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from hermes.aeriel import InputValidationError
from hermes.aeriel.client import ModelSignature
from hermes.aeriel.client._requests import RequestBuilder
from hermes.aeriel.client._signature import ensemble_steps, read_signature
from hermes.quiver import StreamingRecordVersionError, StreamInputRecord, StreamOutputRecord

MODELS = Path(__file__).parent / "client_models"


def _config(name: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse((MODELS / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def _signature(name: str) -> ModelSignature:
    config = _config(name)
    steps = {step: _config(step) for step, _ in ensemble_steps(config)}
    return read_signature(name, "", config, steps)


def test_snapshotter_feeding_two_tensors_is_one_group_with_both_targets_and_channel_counts():
    signature = _signature("ens_stream")
    assert signature.stateful
    (group,) = signature.streams
    assert (group.input, group.snapshotter, group.snapshotter_input) == (
        "snapshot_update",
        "snapshotter",
        "snapshot_update",
    )
    assert [(t.snapshot_output, t.tensor, t.consumers, t.channels) for t in group.targets] == [
        ("a_snapshot", "a_window", ("double_a/x",), 2),
        ("b_snapshot", "b_window", ("double_b/x",), 1),  # a 2-D (B, K) window is one channel
    ]
    assert group.channels == 3
    assert signature.inputs[0].shape == (-1, 3, 2)


def test_two_streaming_inputs_make_two_groups():
    signature = _signature("ens_two_groups")
    assert [(g.input, g.snapshotter, g.channels) for g in signature.streams] == [
        ("snapshot_update", "snapshotter", 3),
        ("aux_update", "snapshotter_aux", 1),
    ]
    assert signature.output_names == ("out_a", "out_b", "out_c")


def test_plain_model_is_stateless_with_no_groups():
    signature = _signature("identity")
    assert not signature.stateful
    assert signature.streams == ()
    assert signature.describe() == "model 'identity' expects inputs: INPUT0 FP32 [-1, -1]"


def test_wrong_input_name_names_the_expected_signature():
    builder = RequestBuilder(_signature("identity"))
    with pytest.raises(InputValidationError) as info:
        builder.prepare({"INPUT1": np.zeros((1, 2), np.float32)})
    assert "unknown input 'INPUT1'" in str(info.value)
    assert "expects inputs: INPUT0 FP32 [-1, -1]" in str(info.value)


def test_wrong_dtype_and_wrong_shape_are_refused_before_sending():
    builder = RequestBuilder(_signature("ens_stream"))
    with pytest.raises(InputValidationError, match=r"dtype float64, expected float32 \(FP32\)"):
        builder.prepare(np.zeros((1, 3, 2)))
    with pytest.raises(InputValidationError, match=r"shape \[1, 4, 2\], expected \[-1, 3, 2\]"):
        builder.prepare(np.zeros((1, 4, 2), np.float32))
    with pytest.raises(InputValidationError, match=r"batch 9, expected 1..8"):
        builder.prepare(np.zeros((9, 3, 2), np.float32))


def test_one_array_for_a_two_input_model_is_refused():
    builder = RequestBuilder(_signature("ens_two_groups"))
    with pytest.raises(InputValidationError, match="got one array but the model has 2 inputs"):
        builder.prepare(np.zeros((1, 3, 2), np.float32))


def test_stream_parts_are_concatenated_in_channel_order_by_consumer_name():
    builder = RequestBuilder(_signature("ens_stream"))
    a = np.arange(4, dtype=np.float32).reshape(1, 2, 2)
    b = np.array([[10, 11]], dtype=np.float32)  # (1, samples) for a 2-D target
    prepared = builder.prepare({"double_b/x": b, "double_a/x": a})
    np.testing.assert_array_equal(prepared.arrays[0], [[[0, 1], [2, 3], [10, 11]]])


def test_missing_state_part_names_what_is_missing():
    builder = RequestBuilder(_signature("ens_stream"))
    with pytest.raises(InputValidationError) as info:
        builder.prepare({"double_a/x": np.zeros((1, 2, 2), np.float32)})
    assert "missing its state part(s) ['double_b/x']" in str(info.value)
    assert "snapshot_update -> snapshotter: double_a/x (2 ch), double_b/x (1 ch)" in str(info.value)


def test_partial_batch_is_refused_with_a_hint_unless_padding_is_asked():
    signature = _signature("fixed_batch")
    assert signature.fixed_batch == 4
    with pytest.raises(InputValidationError, match=r"expected \[4, 3\] \(pass pad_batch=True"):
        RequestBuilder(signature).prepare(np.ones((2, 3), np.float32))
    prepared = RequestBuilder(signature, pad_batch=True).prepare(np.ones((2, 3), np.float32))
    assert prepared.real_batch == 2
    np.testing.assert_array_equal(prepared.arrays[0], [[1, 1, 1], [1, 1, 1], [0, 0, 0], [0, 0, 0]])


def test_in_band_inputs_are_built_once_per_shape_and_reused():
    builder = RequestBuilder(_signature("identity"))
    first = builder.encode(builder.prepare(np.zeros((2, 3), np.float32)))[0]
    second = builder.encode(builder.prepare(np.ones((2, 3), np.float32)))[0]
    other = builder.encode(builder.prepare(np.ones((3, 3), np.float32)))[0]
    assert first is second
    assert other is not first
    assert other.shape() == [3, 3]


def _with_parameters(name: str, parameters: dict[str, str]) -> ModelSignature:
    config = _config(name)
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    steps = {step: _config(step) for step, _ in ensemble_steps(config)}
    return read_signature(name, "", config, steps)


def _input_record(max_sequences: int, **fields: object) -> str:
    record = StreamInputRecord(
        name="snapshot_update", model="snapshotter", kernel_size=8, stride=2, batch_size=1, channels=(None, None),
        tensors=("double_a.x", "double_b.x"), zero_state_updates=3, max_sequences=max_sequences,
    )  # fmt: skip
    return dataclasses.replace(record, **fields).to_parameter()[1]  # type: ignore[arg-type]


def _output_record(name: str, max_sequences: int) -> str:
    return StreamOutputRecord(
        name=name, model="averager", stride=2, batch_size=1, num_updates=2, delay=2, zero_state_updates=1,
        max_sequences=max_sequences,
    ).to_parameter()[1]  # fmt: skip


def test_max_sequences_is_the_smallest_recorded_by_the_streaming_parameters():
    signature = _with_parameters(
        "ens_stream",
        {
            "hermes.streaming_input.snapshot_update": _input_record(6),
            "hermes.streaming_output.out_a": _output_record("out_a", 4),
            "unrelated": '{"max_sequences": 1}',
        },
    )
    assert signature.max_sequences == 4
    assert [g.snapshotter for g in signature.streams] == ["snapshotter"]


def test_max_sequences_is_none_without_records_and_skips_malformed_ones():
    assert _signature("ens_stream").max_sequences is None
    signature = _with_parameters(
        "ens_stream",
        {
            "hermes.streaming_input.snapshot_update": "not json",
            "hermes.streaming_output.out_a": '{"max_sequences": 0}',
            "hermes.streaming_output.out_b": '{"delay": 2}',
        },
    )
    assert signature.max_sequences is None
    # the stream groups are still found from the graph
    assert [g.input for g in signature.streams] == ["snapshot_update"]


def test_a_record_from_a_newer_hermes_is_a_clear_error():
    with pytest.raises(
        StreamingRecordVersionError, match=r"has version 2, but this hermes reads versions up to 1"
    ):
        _with_parameters(
            "ens_stream", {"hermes.streaming_input.snapshot_update": _input_record(2, version=2)}
        )
