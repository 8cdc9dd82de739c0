"""Deadline-bounded polling of a remote state (an operation, a rollout, a load balancer)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from hermes.cloudbreak.exceptions import OperationTimeout

__all__ = ["poll_until"]

T = TypeVar("T")


def poll_until(
    check: Callable[[], T | None],
    *,
    timeout_s: float,
    interval_s: float,
    what: str,
    describe: Callable[[], str] | None = None,
    stop: threading.Event | None = None,
) -> T:
    """Call ``check`` every ``interval_s`` seconds until it returns something other than ``None``.

    Args:
        check: returns the result when done, ``None`` while still waiting.
        timeout_s: the deadline, in seconds from now.
        interval_s: the wait between checks, in seconds (a remote API has no push here).
        what: names what is awaited, for the timeout message.
        describe: the last observed state, for the timeout message.
        stop: set it to end the wait early with :class:`OperationTimeout`.

    Raises:
        OperationTimeout: not done before the deadline.
    """
    deadline = time.monotonic() + timeout_s
    waiter = stop or threading.Event()
    while True:
        result = check()
        if result is not None:
            return result
        left = deadline - time.monotonic()
        if left <= 0 or waiter.wait(min(interval_s, left)):
            state = f" (last state: {describe()})" if describe else ""
            raise OperationTimeout(f"{what} did not finish within {timeout_s:g} s{state}")
