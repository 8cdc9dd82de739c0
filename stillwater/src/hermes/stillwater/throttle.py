"""Throttle: pace a loop to a target rate on an absolute schedule (no drift)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

__all__ = ["Throttle"]

logger = logging.getLogger("hermes.stillwater.throttle")

T = TypeVar("T")


class Throttle:
    """Paces ticks at ``rate_hz`` on the absolute schedule ``t_n = t_0 + n / rate_hz``.

    Each wait sleeps until the next scheduled time, not for a fixed period, so a sleep that
    overshoots or a slow iteration shortens the next wait: errors never accumulate (drift
    correction). When the caller falls more than ``max_lag_s`` behind, the schedule is
    re-anchored at the current time instead of bursting to catch up, and ``resets`` counts it.

    Args:
        rate_hz: target ticks per second (> 0), e.g. 512 for one update of 1/512 s of data.
        max_lag_s: lag beyond which the schedule restarts from now; ``None`` always catches up.
        clock: monotonic clock in seconds (injectable for tests).
        sleep: sleep function in seconds (injectable for tests).

    Example:
        >>> throttle = Throttle(512.0)
        >>> for update in throttle.iterate(updates):  # doctest: +SKIP
        ...     send(update)
    """

    def __init__(
        self,
        rate_hz: float,
        *,
        max_lag_s: float | None = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not rate_hz > 0:
            raise ValueError(f"Throttle.rate_hz must be > 0, got {rate_hz!r}")
        if max_lag_s is not None and not max_lag_s > 0:
            raise ValueError(f"Throttle.max_lag_s must be > 0 or None, got {max_lag_s!r}")
        self.rate_hz = float(rate_hz)
        self.period_s = 1.0 / self.rate_hz
        self.max_lag_s = max_lag_s
        self._clock = clock
        self._sleep = sleep
        self._t0: float | None = None
        self._n = 0
        self.ticks = 0
        self.resets = 0
        self.lag_s = 0.0

    def deadline(self, n: int) -> float:
        """Scheduled clock time (s) of tick ``n`` since the current anchor (tick 0 = anchor)."""
        if self._t0 is None:
            raise RuntimeError("the throttle has not started: call wait() first")
        return self._t0 + n * self.period_s

    def wait(self) -> float:
        """Block until the next scheduled tick.

        Returns:
            the lag (s) at which this tick was released: how late it is after its scheduled time.
        """
        now = self._clock()
        if self._t0 is None:
            self._t0 = now
            self._n = 0
        target = self._t0 + self._n * self.period_s
        if target > now:
            self._sleep(target - now)
            now = self._clock()
        lag = now - target
        if self.max_lag_s is not None and lag > self.max_lag_s:
            logger.warning("throttle %.6g Hz fell %.3f s behind; restarting its schedule", self.rate_hz, lag)
            self._t0 = now
            self._n = 0
            self.resets += 1
            lag = 0.0
        self._n += 1
        self.ticks += 1
        self.lag_s = lag
        return lag

    def iterate(self, items: Iterable[T]) -> Iterator[T]:
        """Yield from ``items``, one per tick."""
        for item in items:
            self.wait()
            yield item

    def __iter__(self) -> Iterator[int]:
        """Endless ticks: ``for n in throttle:`` yields the tick count."""
        while True:
            self.wait()
            yield self.ticks
