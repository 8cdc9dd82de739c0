"""A bounded retry policy for capacity errors (GPU stockouts, exhausted quotas)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from hermes.cloudbreak.exceptions import CapacityError, CloudConfigError, CloudUnavailable

__all__ = ["RetryPolicy", "retry_transient"]

logger = logging.getLogger("hermes.cloudbreak.retry")

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often, and for how long, to retry a request the cloud refused for lack of capacity.

    Only capacity errors (:class:`~hermes.cloudbreak.CapacityError`: stockout, quota) are retried;
    every other error is raised at once. Waits grow geometrically and stop at ``deadline_s``.

    Args:
        attempts: the most attempts in all (1 = no retry).
        backoff_s: the wait before the second attempt, in seconds.
        multiplier: each following wait is this many times longer.
        max_backoff_s: the longest single wait, in seconds.
        deadline_s: no new attempt starts later than this many seconds after the first.
    """

    attempts: int = 3
    backoff_s: float = 30.0
    multiplier: float = 2.0
    max_backoff_s: float = 300.0
    deadline_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise CloudConfigError(f"RetryPolicy.attempts must be >= 1, got {self.attempts!r}")
        for field in ("backoff_s", "max_backoff_s", "deadline_s"):
            value = getattr(self, field)
            if value < 0:
                raise CloudConfigError(f"RetryPolicy.{field} must be >= 0 seconds, got {value!r}")
        if self.multiplier < 1:
            raise CloudConfigError(f"RetryPolicy.multiplier must be >= 1, got {self.multiplier!r}")

    @classmethod
    def never(cls) -> RetryPolicy:
        """A policy that makes exactly one attempt."""
        return cls(attempts=1, backoff_s=0.0, deadline_s=0.0)

    def delays(self) -> Iterator[float]:
        """The waits between attempts, in seconds (``attempts - 1`` of them)."""
        delay = self.backoff_s
        for _ in range(self.attempts - 1):
            yield min(delay, self.max_backoff_s)
            delay *= self.multiplier

    def call(
        self,
        attempt: Callable[[], T],
        *,
        what: str,
        stop: threading.Event | None = None,
    ) -> T:
        """Run ``attempt`` until it succeeds or raises something other than a capacity error.

        Args:
            attempt: makes one attempt; raises :class:`CapacityError` when the cloud lacks capacity.
                It must clean up what a failed attempt created before raising.
            what: names the request in logs and in the final error.
            stop: set it to stop waiting early (the last capacity error is raised).

        Raises:
            CapacityError: the last attempt's error, with ``attempts`` set, once the policy gives up.
        """
        start = time.monotonic()
        delays = self.delays()
        number = 0
        while True:
            number += 1
            try:
                return attempt()
            except CapacityError as exc:
                delay = next(delays, None)
                elapsed = time.monotonic() - start
                if delay is None or elapsed + delay > self.deadline_s:
                    raise CapacityError(
                        f"{what}: gave up after {number} attempt(s) over {elapsed:.0f} s: {exc}. "
                        "Try another zone or region, a different GPU type, spot=False, or ask for more quota "
                        "(RetryPolicy sets attempts, backoff_s and deadline_s).",
                        kind=exc.kind,
                        attempts=number,
                        code=exc.code,
                        resource=exc.resource,
                        zones_available=exc.zones_available,
                    ) from exc
                logger.warning("%s: %s; attempt %d failed, retrying in %.0f s", what, exc.kind, number, delay)
                waiter = stop or threading.Event()
                if waiter.wait(delay):
                    raise


def retry_transient(
    attempt: Callable[[], T],
    *,
    what: str,
    deadline_s: float,
    backoff_s: float = 1.0,
    max_backoff_s: float = 30.0,
    stop: threading.Event | None = None,
) -> T:
    """Run ``attempt`` again after each :class:`CloudUnavailable` (network, 5xx, token refresh), with backoff.

    Used at the teardown boundary: a blip during a long delete must not end the teardown.
    Waits double from ``backoff_s`` up to ``max_backoff_s``; no new attempt starts after ``deadline_s``.

    Raises:
        CloudUnavailable: the last error, once the deadline has passed (or ``stop`` was set).
    """
    start = time.monotonic()
    delay = backoff_s
    waiter = stop or threading.Event()
    number = 0
    while True:
        number += 1
        try:
            return attempt()
        except CloudUnavailable as exc:
            left = deadline_s - (time.monotonic() - start)
            if left <= 0 or waiter.is_set():
                raise
            wait = min(delay, max_backoff_s, left)
            logger.warning("%s: %s; attempt %d, retrying in %.1f s", what, exc, number, wait)
            if waiter.wait(wait):
                raise
            delay *= 2
