"""Streaming specs validate their numbers when built and derive shapes, delays and warm-up."""

from __future__ import annotations

import numpy as np
import pytest

from hermes.quiver.exceptions import ModelConfigError
from hermes.quiver.streaming import (
    OnlineAveragerSpec,
    SequenceOptions,
    SnapshotterSpec,
    StreamingConfigError,
    StreamingPlatform,
    StreamingTensor,
    offline_stream,
    online_average,
    sliding_windows,
)


def group(**overrides: object) -> SnapshotterSpec:
    fields: dict[str, object] = {
        "tensors": (StreamingTensor(name="strain", channels=2), StreamingTensor(name="aux")),
        "kernel_size": 64, "stride": 8, "batch_size": 4,
    }  # fmt: skip
    fields.update(overrides)
    return SnapshotterSpec(**fields)  # type: ignore[arg-type]


def test_snapshotter_spec_derives_update_state_and_output_shapes() -> None:
    spec = group()
    assert (spec.num_channels, spec.update_shape, spec.state_shape) == (3, (1, 3, 32), (3, 64))
    assert [spec.output_shape(t) for t in spec.tensors] == [(4, 2, 64), (4, 64)]
    assert spec.channel_slices == (slice(0, 2), slice(2, 3))
    assert (spec.zero_state_windows, spec.zero_state_updates, spec.traffic_reduction) == (7, 2, 8.0)


def test_streaming_config_error_is_a_model_config_error_and_value_error() -> None:
    assert issubclass(StreamingConfigError, ModelConfigError) and issubclass(StreamingConfigError, ValueError)


def test_snapshotter_spec_rejects_stride_larger_than_kernel() -> None:
    with pytest.raises(
        StreamingConfigError,
        match=r"stride 65 must be smaller than the kernel length K=64 of streaming tensors strain, aux",
    ):
        group(stride=65)


def test_snapshotter_spec_rejects_colliding_tensor_names() -> None:
    with pytest.raises(StreamingConfigError, match=r"streaming tensor name 'update' collides"):
        group(tensors=(StreamingTensor(name="update"),))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("kernel_size", 0, "kernel_size must be a positive integer, got 0"),
        ("batch_size", 2.5, "batch_size must be a positive integer, got 2.5"),
        ("update_name", "9lives", "update_name '9lives' is not a valid tensor/model name"),
        ("tensors", (), "needs at least one tensor"),
    ],
)
def test_snapshotter_spec_names_the_bad_field(field: str, value: object, message: str) -> None:
    with pytest.raises(StreamingConfigError, match=message):
        group(**{field: value})


def test_streaming_tensor_from_shape_rejects_rank_and_variable_axes() -> None:
    with pytest.raises(StreamingConfigError, match=r"'x' has shape \[2, 3, 4, 5\] of rank 4"):
        StreamingTensor.from_shape("x", (2, 3, 4, 5))
    with pytest.raises(StreamingConfigError, match=r"'x' has a variable window axis"):
        StreamingTensor.from_shape("x", (2, None))
    assert StreamingTensor.from_shape("x", (None, 3, 16)) == StreamingTensor(name="x", channels=3)


def test_update_size_must_be_whole_strides() -> None:
    with pytest.raises(
        StreamingConfigError, match=r"update size 20 of 'update' is not a multiple of the stride 8"
    ):
        group().check_update_size(20)


def test_online_averager_spec_delay_and_state() -> None:
    spec = OnlineAveragerSpec(kernel_size=4096, stride=8, batch_size=8, num_updates=64)
    assert (spec.delay, spec.state_shape, spec.output_shape, spec.zero_state_updates) == (
        504,
        (504,),
        (1, 64),
        8,
    )
    single = OnlineAveragerSpec(kernel_size=16, stride=4, batch_size=2, num_updates=1, channels=3)
    assert (single.delay, single.state_shape, single.output_shape) == (0, (3, 4), (1, 3, 8))


def test_online_averager_spec_from_shape_needs_a_batch_size_for_a_variable_batch() -> None:
    with pytest.raises(StreamingConfigError, match=r"'update' has a variable batch axis: pass batch_size"):
        OnlineAveragerSpec.from_shape((None, 16), stride=2, num_updates=2)
    assert OnlineAveragerSpec.from_shape((None, 16), stride=2, num_updates=2, batch_size=4).batch_size == 4
    with pytest.raises(StreamingConfigError, match=r"batch_size 4 disagrees with the batch axis 8"):
        OnlineAveragerSpec.from_shape((8, 16), stride=2, num_updates=2, batch_size=4)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"idle_timeout_s": 0}, "idle_timeout_s must be a positive finite number of seconds, got 0"),
        ({"idle_timeout_s": float("inf")}, "idle_timeout_s must be a positive finite"),
        ({"instances": 0}, "instances must be a positive integer, got 0"),
        ({"instance_kind": "tpu"}, "instance_kind must be 'auto', 'cpu' or 'gpu', got 'tpu'"),
    ],
)
def test_sequence_options_name_the_bad_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(StreamingConfigError, match=message):
        SequenceOptions(**fields)  # type: ignore[arg-type]


def test_sequence_options_batched_and_idle_microseconds() -> None:
    assert (SequenceOptions().batched, SequenceOptions().idle_timeout_us) == (False, 60_000_000)
    assert SequenceOptions(sequences_per_instance=2, idle_timeout_s=1.5).idle_timeout_us == 1_500_000


def test_streaming_platform_parses_names_and_rejects_others() -> None:
    assert StreamingPlatform.parse("torchscript") is StreamingPlatform.TORCHSCRIPT
    assert StreamingPlatform.parse("onnxruntime_onnx") is StreamingPlatform.ONNX
    with pytest.raises(
        StreamingConfigError, match=r"platform 'tensorrt_plan' cannot serve a streaming model"
    ):
        StreamingPlatform.parse("tensorrt_plan")


def test_sliding_windows_zero_pad_before_the_stream_start() -> None:
    windows = sliding_windows(np.arange(1, 9, dtype=np.float32), kernel_size=4, stride=2)
    assert windows.tolist() == [[0, 0, 1, 2], [1, 2, 3, 4], [3, 4, 5, 6], [5, 6, 7, 8]]


def test_online_average_of_ones_counts_the_covering_predictions() -> None:
    out = online_average(np.ones((6, 8), dtype=np.float32), stride=2, num_updates=3)
    assert out.tolist() == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3] + [1.0] * 8)


def test_offline_stream_runs_the_network_per_batch_and_averages() -> None:
    x = np.random.randn(2, 48).astype(np.float32)
    calls: list[int] = []

    def network(windows: np.ndarray) -> np.ndarray:
        calls.append(len(windows))
        return windows.sum(axis=1)

    got = offline_stream(network, x, kernel_size=12, stride=3, batch_size=4, num_updates=2)
    assert calls == [4, 4, 4, 4]
    windows = sliding_windows(x, kernel_size=12, stride=3)
    np.testing.assert_allclose(got, online_average(windows.sum(axis=1), stride=3, num_updates=2), rtol=1e-6)
    with pytest.raises(
        StreamingConfigError,
        match=r"length 48 of x is not a multiple of the update size stride \* batch_size = 30",
    ):
        offline_stream(network, x, kernel_size=12, stride=3, batch_size=10)
