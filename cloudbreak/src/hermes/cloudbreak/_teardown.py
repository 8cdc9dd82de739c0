"""Signal handling that turns SIGINT, SIGTERM and SIGHUP into an orderly teardown.

While a cloud context is active, SIGTERM and SIGHUP (the terminal or the login session
closed) raise :class:`Terminated` (a ``SystemExit``) in
the main thread and SIGINT raises ``KeyboardInterrupt``: the stack unwinds through every
``with`` block, and each context deletes what it created. While a teardown runs, further
signals are logged and ignored, so a second Ctrl-C does not leave half a cluster behind.
The previous handlers come back when the outermost context closes.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = ["Terminated", "signal_teardown", "teardown_in_progress"]

logger = logging.getLogger("hermes.cloudbreak.teardown")

_SIGNALS: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_lock = threading.Lock()
_depth = 0
_saved: dict[int, Any] = {}
_tearing_down = 0


class Terminated(SystemExit):
    """Raised in the main thread when the process receives SIGTERM or SIGHUP inside a cloud context."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


def _handler(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if _tearing_down:
        logger.warning("received %s during teardown; finishing the teardown first", name)
        return
    logger.warning("received %s: tearing down cloud resources", name)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


@contextmanager
def signal_teardown() -> Iterator[None]:
    """Route SIGINT/SIGTERM/SIGHUP into exceptions while the block runs (main thread only; a no-op elsewhere)."""
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with _lock:
        if _depth == 0:
            for sig in _SIGNALS:
                _saved[sig] = signal.signal(sig, _handler)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for signum, previous in _saved.items():
                    signal.signal(signum, previous)
                _saved.clear()


@contextmanager
def teardown_in_progress() -> Iterator[None]:
    """Mark a teardown as running: signals that arrive meanwhile are logged and ignored."""
    global _tearing_down
    _tearing_down += 1
    try:
        yield
    finally:
        _tearing_down -= 1
