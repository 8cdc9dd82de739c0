"""The Snapshotter module equals a plain numpy sliding window, update after update."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from hermes.quiver.streaming import (  # noqa: E402
    Snapshotter,
    SnapshotterSpec,
    StreamingTensor,
    sliding_windows,
)


def stream(
    module: Snapshotter, x: np.ndarray, updates: int, state: np.ndarray | None = None
) -> list[np.ndarray]:
    """Feed ``x`` (C, T) through ``module`` in ``updates`` updates; windows per tensor, concatenated."""
    spec = module.spec
    size = spec.update_size
    state_t = (
        torch.zeros(1, spec.num_channels, spec.kernel_size)
        if state is None
        else torch.from_numpy(state)[None]
    )
    outputs: list[list[np.ndarray]] = [[] for _ in spec.tensors]
    with torch.no_grad():
        for u in range(updates):
            *windows, state_t = module(torch.from_numpy(x[None, :, u * size : (u + 1) * size]), state_t)
            for collected, w in zip(outputs, windows, strict=True):
                collected.append(w.numpy())
    return [np.concatenate(c) for c in outputs]


@st.composite
def groups(draw: st.DrawFn) -> tuple[SnapshotterSpec, int]:
    kernel = draw(st.integers(2, 40))
    stride = draw(st.integers(1, kernel - 1))
    batch = draw(st.integers(1, 6))
    channels = draw(st.lists(st.one_of(st.none(), st.integers(1, 3)), min_size=1, max_size=3))
    tensors = tuple(StreamingTensor(name=f"t{i}", channels=c) for i, c in enumerate(channels))
    spec = SnapshotterSpec(tensors=tensors, kernel_size=kernel, stride=stride, batch_size=batch)
    updates = draw(st.integers(1, 2 + 2 * kernel // (stride * batch)))
    return spec, updates


@settings(max_examples=60, deadline=None)
@given(groups())
def test_snapshotter_windows_equal_numpy_sliding_windows(group: tuple[SnapshotterSpec, int]) -> None:
    spec, updates = group
    x = np.random.randn(spec.num_channels, spec.update_size * updates).astype(np.float32)
    got = stream(Snapshotter(spec), x, updates)
    reference = sliding_windows(x, kernel_size=spec.kernel_size, stride=spec.stride)
    for tensor, part, window_slice in zip(spec.tensors, got, spec.channel_slices, strict=True):
        expected = reference[:, window_slice]
        if tensor.channels is None:
            expected = expected[:, 0]
        assert part.shape == (updates * spec.batch_size, *spec.output_shape(tensor)[1:])
        np.testing.assert_array_equal(part, expected)


@settings(max_examples=25, deadline=None)
@given(groups())
def test_snapshotter_with_history_equals_windows_of_the_longer_stream(
    group: tuple[SnapshotterSpec, int],
) -> None:
    spec, updates = group
    history = np.random.randn(spec.num_channels, spec.kernel_size).astype(np.float32)
    x = np.random.randn(spec.num_channels, spec.update_size * updates).astype(np.float32)
    got = np.concatenate(
        [
            g if t.channels is not None else g[:, None]
            for g, t in zip(stream(Snapshotter(spec), x, updates, history), spec.tensors, strict=True)
        ],
        axis=1,
    )
    np.testing.assert_array_equal(
        got, sliding_windows(x, kernel_size=spec.kernel_size, stride=spec.stride, history=history)
    )


def test_snapshotter_last_window_ends_at_newest_sample() -> None:
    spec = SnapshotterSpec(tensors=(StreamingTensor(name="x"),), kernel_size=16, stride=2, batch_size=4)
    x = np.arange(8 * 11, dtype=np.float32)[None]
    windows = stream(Snapshotter(spec), x, 11)[0]
    # update 10 carries samples 80..87; its windows end at 81, 83, 85, 87
    assert windows[-4:, -1].tolist() == [81.0, 83.0, 85.0, 87.0]
    assert windows[-1].tolist() == list(range(72, 88))


def test_snapshotter_zero_state_counts_match_the_windows_that_hold_zeros() -> None:
    spec = SnapshotterSpec(
        tensors=(StreamingTensor(name="x", channels=1),), kernel_size=16, stride=3, batch_size=2
    )
    x = np.ones((1, spec.update_size * 8), dtype=np.float32)
    windows = stream(Snapshotter(spec), x, 8)[0]
    with_zeros = int((windows == 0).any(axis=(1, 2)).sum())
    assert spec.zero_state_windows == with_zeros == 5  # ceil(16 / 3) - 1
    updates_with_zeros = int((windows.reshape(8, 2, -1) == 0).any(axis=(1, 2)).sum())
    assert spec.zero_state_updates == updates_with_zeros == 3


def test_batched_snapshotter_keeps_sequences_apart() -> None:
    spec = SnapshotterSpec(
        tensors=(StreamingTensor(name="x", channels=2),), kernel_size=12, stride=3, batch_size=2
    )
    batched = Snapshotter(spec, batched=True)
    xs = np.random.randn(3, 2, spec.update_size * 5).astype(np.float32)
    state = torch.zeros(3, 2, 12)
    collected = []
    with torch.no_grad():
        for u in range(5):
            windows, state = batched(torch.from_numpy(xs[..., u * 6 : (u + 1) * 6]), state)
            assert windows.shape == (3, 2, 2, 12)
            collected.append(windows.numpy())
    got = np.concatenate(collected, axis=1)  # (sequences, windows, C, K)
    for i in range(3):
        np.testing.assert_array_equal(got[i], sliding_windows(xs[i], kernel_size=12, stride=3))
