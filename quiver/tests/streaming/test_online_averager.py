"""The OnlineAverager module equals a plain numpy average of overlapping predictions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from hermes.quiver.streaming import OnlineAverager, OnlineAveragerSpec, online_average  # noqa: E402


def stream(module: OnlineAverager, predictions: np.ndarray, updates: int) -> np.ndarray:
    """Feed ``predictions`` (W, [C,] K) in ``updates`` updates; the outputs concatenated along time."""
    spec = module.spec
    state = torch.zeros((1, *spec.state_shape))
    outputs = []
    with torch.no_grad():
        for u in range(updates):
            out, state = module(
                torch.from_numpy(predictions[u * spec.batch_size : (u + 1) * spec.batch_size]), state
            )
            assert tuple(out.shape) == spec.output_shape
            outputs.append(out[0].numpy())
    return np.concatenate(outputs, axis=-1)


@st.composite
def averagers(draw: st.DrawFn) -> tuple[OnlineAveragerSpec, int]:
    kernel = draw(st.integers(2, 40))
    stride = draw(st.integers(1, kernel))
    num_updates = draw(st.integers(1, kernel // stride))
    batch = draw(st.integers(1, 6))
    channels = draw(st.one_of(st.none(), st.integers(1, 3)))
    spec = OnlineAveragerSpec(
        kernel_size=kernel, stride=stride, batch_size=batch, num_updates=num_updates, channels=channels
    )
    return spec, draw(st.integers(1, 2 + 2 * num_updates // batch))


@settings(max_examples=60, deadline=None)
@given(averagers())
def test_online_averager_output_equals_numpy_average(case: tuple[OnlineAveragerSpec, int]) -> None:
    spec, updates = case
    predictions = np.random.randn(updates * spec.batch_size, *spec.input_shape[1:]).astype(np.float32)
    got = stream(OnlineAverager(spec), predictions, updates)
    expected = online_average(predictions, stride=spec.stride, num_updates=spec.num_updates)
    assert got.shape == expected.shape == (*spec.input_shape[1:-1], updates * spec.update_size)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_online_averager_of_constant_predictions_is_constant_after_its_delay() -> None:
    spec = OnlineAveragerSpec(kernel_size=16, stride=2, batch_size=4, num_updates=4)
    got = stream(OnlineAverager(spec), np.full((40, 16), 3.0, dtype=np.float32), 10)
    assert spec.delay == 6
    # the first (N - 1)·s = 6 samples belong to times before the stream start: 1/4, 2/4, 3/4 covered
    np.testing.assert_allclose(got[:6], [0.75, 0.75, 1.5, 1.5, 2.25, 2.25])
    np.testing.assert_allclose(got[6:], 3.0)
    assert spec.zero_state_updates == 1


def test_online_averager_output_trails_a_ramp_by_its_delay() -> None:
    # each prediction is the window itself: the average of identical samples is the sample
    spec = OnlineAveragerSpec(kernel_size=16, stride=2, batch_size=4, num_updates=3)
    t = np.arange(-16, 8 * 12, dtype=np.float32)
    windows = np.stack([t[w * 2 + 2 : w * 2 + 18] for w in range(48)])  # window w ends at (w + 1)·s
    got = stream(OnlineAverager(spec), windows, 12)
    np.testing.assert_allclose(got[spec.delay :], np.arange(96 - spec.delay, dtype=np.float32))


def test_batched_online_averager_keeps_sequences_apart() -> None:
    spec = OnlineAveragerSpec(kernel_size=10, stride=2, batch_size=3, num_updates=4, channels=2)
    module = OnlineAverager(spec, batched=True)
    predictions = np.random.randn(2, 5 * 3, 2, 10).astype(np.float32)
    state = torch.zeros(2, *spec.state_shape)
    outputs = []
    with torch.no_grad():
        for u in range(5):
            out, state = module(torch.from_numpy(predictions[:, u * 3 : (u + 1) * 3]), state)
            outputs.append(out.numpy())
    got = np.concatenate(outputs, axis=-1)
    for i in range(2):
        np.testing.assert_allclose(
            got[i], online_average(predictions[i], stride=2, num_updates=4), rtol=1e-5, atol=1e-6
        )
