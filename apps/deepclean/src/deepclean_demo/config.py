"""What the demo is asked to do (:class:`DemoConfig`), checked before any work starts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

__all__ = ["SAMPLE_RATE_HZ", "DemoConfig"]

SAMPLE_RATE_HZ = 4096


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """Options of :func:`run_demo`.

    Args:
        seconds: length of each stream (s of data at 4096 Hz).
        streams: concurrent sequences.
        rate: ``None`` streams as fast as possible; a number streams at that multiple of
            real time (1.0 = 4096 samples per second per stream).
        output: folder for the figure, the records and the model repository.
        kernel_size: K, samples per window.
        stride: s, samples between windows (>= 8).
        batch_size: B, windows per request (>= 8).
        num_updates: N, predictions averaged into each output sample.
        train_steps: Adam steps of training before export (0 keeps random weights).
        network_instances: instances of the network model on the server.
        max_in_flight: requests the client keeps outstanding.
        rtol, atol: tolerance of the served-vs-offline check (float32 arithmetic).
        seed: seed of the data and of the weights.
        progress: show a live progress bar.
        form: ``"fused"`` (one stateful model, default) or ``"ensemble"`` (snapshotter ->
            network -> averager as three models).
    """

    seconds: float = 8.0
    streams: int = 4
    rate: float | None = None
    output: Path = Path("demo-output")
    kernel_size: int = 4096
    stride: int = 16
    batch_size: int = 8
    num_updates: int = 32
    train_steps: int = 300
    network_instances: int = 2
    max_in_flight: int = 16
    rtol: float = 1e-4
    atol: float = 1e-4
    seed: int = 0
    progress: bool = True
    form: str = "fused"

    def __post_init__(self) -> None:
        if self.form not in ("fused", "ensemble"):
            raise ValueError(f"form must be 'fused' or 'ensemble', got {self.form!r}")
        if self.seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {self.seconds}")
        if self.streams < 1:
            raise ValueError(f"streams must be >= 1, got {self.streams}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate must be > 0 (a multiple of real time) or None, got {self.rate}")
        if self.stride < 8 or self.batch_size < 8:
            raise ValueError(f"stride and batch_size must be >= 8, got {self.stride} and {self.batch_size}")
        if self.seconds * SAMPLE_RATE_HZ < self.stride * self.batch_size:
            raise ValueError(
                f"seconds={self.seconds} is shorter than one update ({self.stride * self.batch_size} samples)"
            )
