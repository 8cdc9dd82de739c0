"""Offline references for the streaming models: plain numpy sliding windows and averages.

These functions compute, over a whole timeseries at once, what a streaming ensemble
returns update by update, so every served sample can be checked:

* :func:`sliding_windows`: the snapshotter's windows, ``(W, C, K)``.
* :func:`online_average`: the online averager's continuous output from per-window predictions.
* :func:`offline_stream`: both around a network: windows → network → average.

Stream time ``t`` counts samples from the first sample of the first update. Window ``w``
covers ``[(w + 1)·s - K, (w + 1)·s)``; samples at ``t < 0`` come from ``history`` (the
snapshotter's initial state), zeros by default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from hermes.quiver.exceptions import StreamingConfigError

__all__ = ["offline_stream", "online_average", "sliding_windows"]


def sliding_windows(
    x: npt.ArrayLike,
    *,
    kernel_size: int,
    stride: int,
    history: npt.ArrayLike | None = None,
) -> np.ndarray:
    """All windows a snapshotter emits for the timeseries ``x``.

    Args:
        x: ``(C, T)`` or ``(T,)`` samples; ``T`` must be a multiple of ``stride``.
        kernel_size: ``K``, samples per window.
        stride: ``s``, samples between consecutive window ends.
        history: ``(C, K)`` or ``(K,)`` samples before ``x`` (the initial state); zeros if None.

    Returns:
        ``(T / s, C, K)`` windows (``(T / s, K)`` for 1-D ``x``); window ``w`` ends at sample
        ``(w + 1)·s`` of ``x``.
    """
    data = np.asarray(x)
    squeeze = data.ndim == 1
    if squeeze:
        data = data[None]
    if data.ndim != 2:
        raise StreamingConfigError(f"x must be (C, T) or (T,), got shape {data.shape}")
    if stride < 1 or stride >= kernel_size:
        raise StreamingConfigError(f"stride {stride} must satisfy 1 <= stride < kernel_size={kernel_size}")
    channels, length = data.shape
    if length % stride:
        raise StreamingConfigError(f"the length {length} of x is not a multiple of the stride {stride}")
    if history is None:
        past = np.zeros((channels, kernel_size), dtype=data.dtype)
    else:
        past = np.asarray(history, dtype=data.dtype).reshape(channels, kernel_size)
    full = np.concatenate([past, data], axis=-1)
    num_windows = length // stride
    starts = stride * (np.arange(num_windows) + 1)
    index = starts[:, None] + np.arange(kernel_size)[None, :]
    windows = full[:, index].transpose(1, 0, 2)  # (W, C, K)
    return windows[:, 0] if squeeze else windows


def online_average(predictions: npt.ArrayLike, *, stride: int, num_updates: int) -> np.ndarray:
    """The continuous output an online averager emits for per-window predictions.

    Each stride block ``m`` of the output (stream samples ``[m·s, (m + 1)·s)``) is the sum of
    the newest ``N·s`` samples of predictions ``m … m + N - 1`` at that block, divided by
    ``N``. The output is shifted by the averager's delay ``(N - 1)·s``: output sample ``i``
    is stream sample ``i - (N - 1)·s``, and the first ``(N - 1)·s`` outputs belong to times
    before the stream start (only partly covered, still divided by ``N``).

    Args:
        predictions: ``(W, K)`` or ``(W, C, K)``, prediction ``w`` for the window ending at
            ``(w + 1)·s``.
        stride: ``s``.
        num_updates: ``N`` (``N·s ≤ K``).

    Returns:
        ``(W·s,)`` or ``(C, W·s)``: what the averager returns over the ``W / B`` updates,
        concatenated along time.
    """
    preds = np.asarray(predictions)
    squeeze = preds.ndim == 2
    if squeeze:
        preds = preds[:, None]
    if preds.ndim != 3:
        raise StreamingConfigError(f"predictions must be (W, K) or (W, C, K), got shape {preds.shape}")
    num_windows, channels, kernel = preds.shape
    span = num_updates * stride
    if span > kernel:
        raise StreamingConfigError(f"num_updates {num_updates} * stride {stride} exceeds the kernel {kernel}")
    tails = preds[..., kernel - span :].reshape(num_windows, channels, num_updates, stride)
    # Block m (offset by N - 1 so that pre-stream blocks have indices 0 ... N - 2).
    total = np.zeros((channels, num_windows + num_updates - 1, stride), dtype=np.float64)
    for k in range(num_updates):
        # prediction w puts its k-th tail block on block w - N + 1 + k (offset: w + k)
        total[:, k : k + num_windows] += tails[:, :, k].transpose(1, 0, 2)
    out = (total[:, :num_windows] / num_updates).astype(preds.dtype).reshape(channels, num_windows * stride)
    return out[0] if squeeze else out


def _as_numpy_function(network: Any) -> Callable[[np.ndarray], np.ndarray]:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch-free environments pass numpy callables
        return network  # type: ignore[no-any-return]
    if isinstance(network, torch.nn.Module):

        def run(batch: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return network(torch.from_numpy(np.ascontiguousarray(batch))).numpy()

        return run
    return network  # type: ignore[no-any-return]


def offline_stream(
    network: Callable[[np.ndarray], np.ndarray] | Any,
    x: npt.ArrayLike,
    *,
    kernel_size: int,
    stride: int,
    batch_size: int = 1,
    num_updates: int | None = None,
    history: npt.ArrayLike | None = None,
) -> np.ndarray:
    """Run ``network`` over a whole timeseries with the streaming windowing and averaging.

    This is what a streaming ensemble (snapshotter → network → online averager) returns
    for the same data sent as ``T / (s·B)`` updates, concatenated along time.

    Args:
        network: a :class:`torch.nn.Module` or a numpy callable taking windows
            ``(B, C, K)`` (``(B, K)`` for 1-D ``x``) and returning predictions ``(B, [C',] K')``.
        x: ``(C, T)`` or ``(T,)`` samples, ``T`` a multiple of ``s·B``.
        kernel_size: ``K``.
        stride: ``s``.
        batch_size: ``B``, windows per network call (as served).
        num_updates: ``N`` for the online average; None returns the raw predictions.
        history: ``(C, K)`` samples before ``x`` (the snapshotter's initial state), zeros if None.

    Returns:
        With ``num_updates``: the continuous output ``([C',] T)``, trailing the input by
        ``(N - 1)·s`` samples. Without: the predictions ``(T / s, [C',] K')``.
    """
    data = np.asarray(x)
    if data.shape[-1] % (stride * batch_size):
        raise StreamingConfigError(
            f"the length {data.shape[-1]} of x is not a multiple of the update size "
            f"stride * batch_size = {stride * batch_size}"
        )
    windows = sliding_windows(data, kernel_size=kernel_size, stride=stride, history=history)
    run = _as_numpy_function(network)
    predictions = np.concatenate(
        [np.asarray(run(windows[i : i + batch_size])) for i in range(0, len(windows), batch_size)]
    )
    if num_updates is None:
        return predictions
    return online_average(predictions, stride=stride, num_updates=num_updates)
