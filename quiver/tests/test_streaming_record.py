"""The streaming record quiver writes and aeriel reads: typed, versioned, and old records still read."""

from __future__ import annotations

import json

import pytest

from hermes.quiver import (
    ModelConfig,
    Platform,
    StreamingRecordError,
    StreamingRecords,
    StreamingRecordVersionError,
    StreamInputRecord,
    StreamOutputRecord,
)

# Golden: the parameters exactly as the code before records were versioned (main at ff18100)
# wrote them, copied from a freshly exported repository: a streaming ensemble (snapshotter
# over net.x and net.aux, instances=2; an averager over net.y) and a fused model of the same
# network (groups "strain" with an initial history and "aux"; outputs "clean" and "multi").
OLD_ENSEMBLE_TEXT = r"""
name: "ens"
platform: "ensemble"
parameters {
  key: "hermes.streaming_input.update"
  value {
    string_value: "{\"model\": \"snapshotter\", \"kernel_size\": 16, \"stride\": 2, \"batch_size\": 4, \"channels\": [3, null], \"tensors\": [\"net.x\", \"net.aux\"], \"zero_state_updates\": 2, \"max_sequences\": 2}"
  }
}
parameters {
  key: "hermes.streaming_output.clean"
  value {
    string_value: "{\"model\": \"aggregator\", \"stride\": 2, \"batch_size\": 4, \"num_updates\": 3, \"delay\": 4, \"zero_state_updates\": 1, \"max_sequences\": 1}"
  }
}
"""
OLD_FUSED = {
    "hermes.streaming_input.aux": '{"model": "fused", "key": "aux", "fused": true, "network": "net", "network_version": 1, "kernel_size": 16, "stride": 2, "batch_size": 4, "channels": [null], "tensors": ["aux"], "zero_state_updates": 2, "max_sequences": 2}',
    "hermes.streaming_input.strain": '{"model": "fused", "key": "strain", "fused": true, "network": "net", "network_version": 1, "kernel_size": 16, "stride": 2, "batch_size": 4, "channels": [3], "tensors": ["x"], "zero_state_updates": 0, "max_sequences": 2}',
    "hermes.streaming_output.clean": '{"model": "fused", "key": "clean", "fused": true, "stride": 2, "batch_size": 4, "num_updates": 3, "delay": 4, "zero_state_updates": 3, "max_sequences": 2}',
    "hermes.streaming_output.multi": '{"model": "fused", "key": "multi", "fused": true, "stride": 2, "batch_size": 4, "num_updates": 2, "delay": 2, "zero_state_updates": 2, "max_sequences": 2}',
}  # fmt: skip


def test_old_ensemble_records_read_as_version_1() -> None:
    records = StreamingRecords.from_parameters(ModelConfig.from_text(OLD_ENSEMBLE_TEXT).parameters)
    assert records.inputs == (
        StreamInputRecord(
            name="update", model="snapshotter", kernel_size=16, stride=2, batch_size=4, channels=(3, None),
            tensors=("net.x", "net.aux"), zero_state_updates=2, max_sequences=2, version=1,
        ),
    )  # fmt: skip
    assert records.outputs == (
        StreamOutputRecord(
            name="clean", model="aggregator", stride=2, batch_size=4, num_updates=3, delay=4,
            zero_state_updates=1, max_sequences=1,
        ),
    )  # fmt: skip
    assert (records.max_sequences, records.models) == (1, frozenset({"snapshotter", "aggregator"}))
    assert (records.inputs[0].update_size, records.inputs[0].total_channels) == (8, 4)


def test_old_fused_records_read_with_their_group_keys_and_network() -> None:
    records = StreamingRecords.from_parameters(OLD_FUSED)
    assert [(r.name, r.group, r.fused, r.network, r.network_version) for r in records.inputs] == [
        ("aux", "aux", True, "net", 1),
        ("strain", "strain", True, "net", 1),
    ]
    assert [(r.name, r.num_updates, r.delay, r.zero_state_updates) for r in records.outputs] == [
        ("clean", 3, 4, 3),
        ("multi", 2, 2, 2),
    ]


def test_a_record_written_today_is_the_old_json_plus_its_version() -> None:
    for parameters in (dict(ModelConfig.from_text(OLD_ENSEMBLE_TEXT).parameters), OLD_FUSED):
        for record in (
            StreamingRecords.from_parameters(parameters).inputs
            + StreamingRecords.from_parameters(parameters).outputs
        ):
            key, text = record.to_parameter()
            assert json.loads(text) == {"version": 1, **json.loads(parameters[key])}
            assert type(record).from_parameter(key, text) == record


def test_records_round_trip_through_a_config_and_its_text() -> None:
    config = ModelConfig(name="ens", platform=Platform.ENSEMBLE)
    record = StreamOutputRecord(
        name="out", model="avg", stride=4, batch_size=2, num_updates=5, delay=16, zero_state_updates=2,
        max_sequences=3,
    )  # fmt: skip
    config.parameters.update([record.to_parameter()])
    reread = ModelConfig.from_text(config.to_text())
    assert StreamingRecords.from_parameters(reread.parameters).outputs == (record,)
    assert StreamingRecords.from_parameters(reread.proto.parameters).outputs == (record,)  # protobuf values
    json_form = {k: {"string_value": v} for k, v in reread.parameters.items()}  # Triton's JSON form
    assert StreamingRecords.from_parameters(json_form).outputs == (record,)


def test_a_record_of_a_newer_version_is_a_clear_error() -> None:
    text = json.dumps({**json.loads(OLD_FUSED["hermes.streaming_output.clean"]), "version": 7, "new": 1})
    with pytest.raises(
        StreamingRecordVersionError,
        match=r"hermes.streaming_output.clean has version 7, but this hermes reads versions up to 1: .*upgrade",
    ):
        StreamingRecords.from_parameters({"hermes.streaming_output.clean": text})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", r"hermes.streaming_input.u: not JSON"),
        ("[1, 2]", r"expected a JSON object"),
        ('{"model": "s", "kernel_size": 0}', r"kernel_size=0; expected an integer >= 1"),
        ('{"version": "1"}', r"version='1'; expected an integer >= 1"),
    ],
)
def test_a_malformed_record_names_the_parameter_and_field(text: str, message: str) -> None:
    with pytest.raises(StreamingRecordError, match=message):
        StreamingRecords.from_parameters({"hermes.streaming_input.u": text})
    skipped: list[StreamingRecordError] = []
    assert not StreamingRecords.from_parameters({"hermes.streaming_input.u": text}, on_error=skipped.append)
    assert len(skipped) == 1


def test_unknown_fields_of_a_known_version_are_ignored() -> None:
    text = json.dumps({**json.loads(OLD_FUSED["hermes.streaming_output.multi"]), "later": "field"})
    (record,) = StreamingRecords.from_parameters({"hermes.streaming_output.multi": text}).outputs
    assert record.num_updates == 2
