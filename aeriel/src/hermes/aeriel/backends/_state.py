"""Implicit state per sequence, kept by the backend because the python backend does not.

Triton's ``sequence_batching.state`` semantics, for one model instance (the sequence
batcher pins every sequence to one instance, so this store needs no sharing):

* on START a sequence gets a fresh copy of each state's initial value;
* each request feeds the current value as the state input, and the model's state output
  replaces it;
* END drops the sequence; so does being idle longer than ``max_sequence_idle_microseconds``
  (checked lazily, each time the backend executes).

Values carry the batch dimension (``[1, *dims]``) when the model is batched, none otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path

import numpy as np

from hermes.aeriel.backends._config import initial_value
from hermes.aeriel.exceptions import BackendRequestError
from hermes.quiver.config import SequenceState

__all__ = ["SequenceStates"]

logger = logging.getLogger("hermes.aeriel.backends")

CorrelationId = Hashable


@dataclasses.dataclass
class _Sequence:
    values: dict[str, np.ndarray]
    last_used: float


class SequenceStates:
    """The live sequences of one model instance and their state values.

    Args:
        specs: the model's ``sequence_batching.state`` entries.
        model_dir: the model's folder, where ``initial_state/<data_file>`` lives.
        batched: the model has a batch dimension (``max_batch_size > 0``); values then
            have shape ``[1, *dims]``.
        max_idle_s: a sequence not used for longer is dropped (seconds).
        clock: monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self,
        specs: tuple[SequenceState, ...],
        *,
        model_dir: str | Path,
        batched: bool,
        max_idle_s: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_idle_s <= 0:
            raise ValueError(f"max_idle_s must be > 0, got {max_idle_s}")
        self.specs = specs
        self.batched = batched
        self.max_idle_s = max_idle_s
        self._clock = clock
        self._by_output = {spec.output_name: spec for spec in specs}
        self._dtypes = {spec.output_name: spec.dtype.numpy for spec in specs}
        self._initial: dict[str, np.ndarray] = {}
        for spec in specs:
            value = initial_value(spec, model_dir)
            if batched:
                value = value[np.newaxis, ...]
            value.setflags(write=False)
            self._initial[spec.input_name] = value
        self._live: dict[CorrelationId, _Sequence] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, corrid: object) -> bool:
        return corrid in self._live

    @property
    def live(self) -> list[CorrelationId]:
        """Correlation ids of the live sequences."""
        return list(self._live)

    def initial(self, input_name: str) -> np.ndarray:
        """The (read-only) initial value of a state input."""
        return self._initial[input_name]

    def start(self, corrid: CorrelationId) -> None:
        """Begin (or restart) ``corrid`` from the initial state."""
        with self._lock:
            self._live[corrid] = _Sequence(
                values={name: value.copy() for name, value in self._initial.items()},
                last_used=self._clock(),
            )

    def get(self, corrid: CorrelationId) -> dict[str, np.ndarray]:
        """The current value of each state input of ``corrid``.

        Raises:
            BackendRequestError: the sequence is not live (never started, ended or expired).
        """
        with self._lock:
            seq = self._live.get(corrid)
            if seq is None:
                raise BackendRequestError(
                    f"sequence {corrid!r} has no state here: its first request must carry the START flag "
                    "(sequence_start=True); it may also have ended or been idle longer than "
                    f"max_sequence_idle_microseconds ({self.max_idle_s * 1e6:.0f} us)"
                )
            seq.last_used = self._clock()
            return dict(seq.values)

    def update(self, corrid: CorrelationId, outputs: Mapping[str, np.ndarray]) -> None:
        """Replace the state of ``corrid`` with the model's state outputs (keyed by output name).

        Raises:
            BackendRequestError: a state output is missing or has a different dtype-compatible shape.
        """
        with self._lock:
            seq = self._live.get(corrid)
            if seq is None:
                return
            for output_name, spec in self._by_output.items():
                if output_name not in outputs:
                    raise BackendRequestError(f"the model did not return state output {output_name!r}")
                # the framework returns a fresh array each call: keep it, converting only a foreign dtype
                seq.values[spec.input_name] = np.asarray(outputs[output_name]).astype(
                    self._dtypes[output_name], copy=False
                )
            seq.last_used = self._clock()

    def end(self, corrid: CorrelationId) -> bool:
        """Drop ``corrid``; returns whether it was live."""
        with self._lock:
            return self._live.pop(corrid, None) is not None

    def expire(self) -> list[CorrelationId]:
        """Drop every sequence idle longer than ``max_idle_s``; returns their ids."""
        now = self._clock()
        with self._lock:
            stale = [cid for cid, seq in self._live.items() if now - seq.last_used > self.max_idle_s]
            for cid in stale:
                del self._live[cid]
        for cid in stale:
            logger.info("dropped sequence %r: idle longer than %.6f s", cid, self.max_idle_s)
        return stale
