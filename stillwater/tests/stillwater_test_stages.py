"""Stage functions and classes for the tests; importable by name inside spawned stage processes."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("stillwater_test.stage")


def square(x: int) -> int:
    return x * x


def square_frame(x: int) -> np.ndarray:
    """x squared as a (4, 256) float32 frame (what an ArraySpec(shape=(4, 256)) ring carries)."""
    return np.full((4, 256), x * x, dtype=np.float32)


def add(x: int, y: int) -> int:
    return x + y


def frames(n: int, shape: tuple[int, ...] = (4, 256)) -> Iterator[np.ndarray]:
    for i in range(n):
        yield np.full(shape, i, dtype=np.float32) + np.arange(shape[-1], dtype=np.float32)


def negate(x: np.ndarray) -> np.ndarray:
    return -x


def describe_array(x: np.ndarray) -> tuple[bool, float, tuple[int, ...], str]:
    return bool(x.flags.writeable), float(x[..., 0].sum()), x.shape, str(x.dtype)


def repeat_n_times(x: int) -> Iterator[int]:
    for _ in range(x % 3):
        yield x


def count_forever() -> Iterator[int]:
    yield from itertools.count()


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"item {x} is not welcome")
    return x


def kill_self_on_three(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def log_items(x: int) -> int:
    logger.info("stage saw item %d in pid %d", x, os.getpid())
    logger.debug("this debug record must not reach the parent")
    return x


def slow_identity(x: int, delay_s: float = 0.01) -> int:
    time.sleep(delay_s)
    return x


class Accumulator:
    """A Map class: setup in the child, emits running sums, flushes the total, tears down."""

    def __init__(self, marker: str) -> None:
        self.marker = Path(marker)
        self.total = 0
        self.pid: int | None = None

    def setup(self) -> None:
        self.pid = os.getpid()

    def __call__(self, x: int) -> tuple[int, int]:
        self.total += x
        assert self.pid is not None
        return self.total, self.pid

    def flush(self) -> list[tuple[str, int]]:
        return [("total", self.total)]

    def teardown(self) -> None:
        self.marker.write_text(f"{self.pid} {self.total}")


class LineWriter:
    """A Sink class writing one line per item to a file it opens in setup."""

    def __init__(self, path: str) -> None:
        self.path = path

    def setup(self) -> None:
        self.fh = open(self.path, "w")  # noqa: SIM115

    def __call__(self, x: object) -> None:
        self.fh.write(f"{x}\n")

    def teardown(self) -> None:
        self.fh.close()


class FailingSink:
    def __call__(self, x: int) -> None:
        if x == 9:
            raise KeyError(f"sink cannot store {x}")


class TeardownMarker:
    """A Map class whose teardown leaves a file, to show stopping runs teardown."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __call__(self, x: int) -> int:
        return x

    def teardown(self) -> None:
        Path(self.marker).write_text("torn down")


class NeedsTwoArgs(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"code {code}: {detail}")
        self.code = code


def raise_custom(x: int) -> int:
    raise NeedsTwoArgs(7, f"item {x}")


class Countdown:
    """A Source class: iterates in the child after setup; teardown leaves a marker."""

    def __init__(self, start: int, marker: str) -> None:
        self.start = start
        self.marker = marker
        self.ready = False

    def setup(self) -> None:
        self.ready = True

    def __iter__(self) -> Iterator[tuple[int, bool]]:
        for n in range(self.start, 0, -1):
            yield n, self.ready

    def teardown(self) -> None:
        Path(self.marker).write_text(f"done in {os.getpid()}")


def describe_item(item: tuple[int, bool]) -> str:
    return f"{item[0]} {item[1]}"


def tagged(tag: str, n: int) -> Iterator[tuple[str, int]]:
    for i in range(n):
        yield tag, i


def tagged_frames(tag: int, n: int) -> Iterator[np.ndarray]:
    for i in range(n):
        yield np.full((2, 64), 1000 * tag + i, dtype=np.float64)


def send_all(sender: Any, items: list[Any]) -> None:
    """Child body: send every item on a channel, then its end."""
    try:
        for item in items:
            sender.send(item)
        sender.send_end()
    finally:
        sender.close()


def recv_one_and_report(receiver: Any, report: Any) -> None:
    """Child body: wait for one item and report what happened and the CPU time the wait took."""
    cpu0 = time.process_time()
    try:
        outcome = ("item", repr(receiver.recv()))
    except Exception as exc:
        outcome = (type(exc).__name__, str(exc))
    report.send((*outcome, time.process_time() - cpu0))
    receiver.close()
    report.close()


def emit_then_fail(n: int) -> Iterator[int]:
    """Emit ``n`` items, then raise (its downstream stages are left waiting on empty rings)."""
    yield from range(n)
    time.sleep(0.2)
    raise RuntimeError(f"source gave up after {n} items")


def sleep_then_echo(x: int, delay_s: float = 20.0) -> int:
    """A stage stuck for ``delay_s`` on its first item."""
    time.sleep(delay_s)
    return x


def wrong_shape(x: np.ndarray) -> np.ndarray:
    """Emits an array one sample short of the declared spec."""
    return x[..., :-1]


def as_text(x: object) -> str:
    return str(x)


def connect_to_nothing(x: int) -> int:
    """Raises the aeriel client's ConnectionFailed (chained from an unpicklable tritonclient error)."""
    import socket

    from hermes.aeriel.client import InferenceClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    InferenceClient(f"127.0.0.1:{port}", "nothing", connect_timeout_s=2)
    return x
