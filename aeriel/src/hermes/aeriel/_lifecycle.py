"""What every aeriel resource shares: closing by ``with``, and waiting for something until a deadline.

```python
class Thing(Closeable):
    def close(self) -> None: ...

with Thing() as thing:
    ready = Deadline(30.0).poll(lambda: thing.ready() or None, interval_s=0.1)
```
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self, TypeVar

__all__ = ["Closeable", "Deadline"]

T = TypeVar("T")


class Closeable:
    """A resource that ``with`` closes on the way out; subclasses define :meth:`close` (idempotent)."""

    def close(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define close()")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Deadline:
    """A point in monotonic time, ``timeout_s`` from now (``None``: never).

    Args:
        timeout_s: seconds from now; ``None`` for no deadline.
        clock: the clock (``time.monotonic``).
    """

    def __init__(self, timeout_s: float | None, *, clock: Callable[[], float] = time.monotonic):
        if timeout_s is not None and not timeout_s >= 0:
            raise ValueError(f"timeout_s must be >= 0 seconds or None, got {timeout_s!r}")
        self._clock = clock
        self.at = math.inf if timeout_s is None else clock() + timeout_s

    @property
    def remaining_s(self) -> float:
        """Seconds left (0 once passed; ``inf`` without a deadline)."""
        return max(0.0, self.at - self._clock())

    @property
    def expired(self) -> bool:
        return self._clock() >= self.at

    def poll(
        self,
        check: Callable[[], T | None],
        *,
        interval_s: float = 0.1,
        stop: threading.Event | None = None,
    ) -> T | None:
        """Call ``check`` until it returns something other than ``None``; that value, or ``None`` at the deadline.

        ``check`` runs at least once, even when the deadline has passed. Between calls it sleeps
        ``interval_s`` (never past the deadline); a set ``stop`` event ends the wait early (``None``).
        """
        waiter = stop if stop is not None else threading.Event()
        while True:
            value = check()
            if value is not None:
                return value
            if self.expired or waiter.is_set():
                return None
            if waiter.wait(min(interval_s, self.remaining_s)):
                return None
