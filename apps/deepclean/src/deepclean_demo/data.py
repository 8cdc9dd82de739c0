"""Synthetic DeepClean-shaped data: 21 witness channels whose noise couples into the strain.

The strain of each stream is ``h(t) = n(t) + s(t) + b(t)``: ``n`` is noise coupled from three
witness channels through short FIR filters (what a noise-regression network learns to predict),
``s`` a weak chirp-like signal and ``b`` white background. Everything is float32 and reproducible
from a seed, so a sink can rebuild what a source sent.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["SAMPLE_RATE_HZ", "WITNESS_CHANNELS", "Stream", "make_stream"]

SAMPLE_RATE_HZ = 4096
WITNESS_CHANNELS = 21
_COUPLED = (2, 7, 15)  # witness channels that couple into the strain


@dataclasses.dataclass(frozen=True)
class Stream:
    """One synthetic detector stream.

    Attributes:
        witnesses: (21, T) witness channels.
        noise: (T,) the coupled noise hidden in the strain.
        strain: (T,) noise + signal + background.
    """

    witnesses: np.ndarray
    noise: np.ndarray
    strain: np.ndarray


# The instrument: each witness channel's spectral slope and lines are fixed, as are the couplings;
# only the noise realisation differs between streams.
_INSTRUMENT = np.random.default_rng(1234)
_SLOPES = _INSTRUMENT.uniform(0.0, 1.0, WITNESS_CHANNELS)
_LINES_HZ = _INSTRUMENT.uniform(10, 500, (WITNESS_CHANNELS, 2))
_TAPS = [_INSTRUMENT.normal(0, 1, 9) * np.hanning(9) for _ in _COUPLED]


def _colored(rng: np.random.Generator, n: int, channel: int) -> np.ndarray:
    """Unit-variance noise with the channel's 1/f^alpha spectrum and its two spectral lines."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE_HZ)
    freqs[0] = freqs[1]
    spectrum /= freqs ** _SLOPES[channel]
    x = np.fft.irfft(spectrum, n)
    t = np.arange(n) / SAMPLE_RATE_HZ
    for f in _LINES_HZ[channel]:
        x += 0.5 * x.std() * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return (x - x.mean()) / x.std()


def make_stream(seconds: float, seed: int) -> Stream:
    """A reproducible stream of ``seconds`` of data at 4096 Hz."""
    n = round(seconds * SAMPLE_RATE_HZ)
    rng = np.random.default_rng(seed)
    witnesses = np.stack([_colored(rng, n, ch) for ch in range(WITNESS_CHANNELS)])
    noise = np.zeros(n)
    for ch, taps in zip(_COUPLED, _TAPS, strict=True):
        noise += np.convolve(witnesses[ch], taps, mode="same")
    noise += 0.3 * witnesses[_COUPLED[0]] * witnesses[_COUPLED[1]]  # a bilinear term
    t = np.arange(n) / SAMPLE_RATE_HZ
    f = 30 + 40 * t / max(seconds, 1e-9)
    signal = (
        0.3 * np.sin(2 * np.pi * np.cumsum(f) / SAMPLE_RATE_HZ) * np.exp(-(((t - seconds / 2) / 1.5) ** 2))
    )
    background = 0.2 * rng.standard_normal(n)
    strain = noise + signal + background
    return Stream(
        witnesses=witnesses.astype(np.float32),
        noise=noise.astype(np.float32),
        strain=strain.astype(np.float32),
    )
