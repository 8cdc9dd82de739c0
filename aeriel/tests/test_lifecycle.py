"""Closeable and Deadline: the shared lifecycle pieces of aeriel's resources."""

from __future__ import annotations

import threading

import pytest

from hermes.aeriel._lifecycle import Closeable, Deadline


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Thing(Closeable):
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_with_closes_once_and_returns_the_instance() -> None:
    with _Thing() as thing:
        assert isinstance(thing, _Thing)
        assert thing.closed == 0
    assert thing.closed == 1


def test_with_closes_when_the_body_raises() -> None:
    thing = _Thing()
    with pytest.raises(RuntimeError, match="boom"), thing:
        raise RuntimeError("boom")
    assert thing.closed == 1


def test_a_subclass_without_close_is_named() -> None:
    with pytest.raises(NotImplementedError, match="Closeable must define close"):
        Closeable().close()


def test_deadline_counts_down_on_its_clock() -> None:
    clock = _Clock()
    deadline = Deadline(5.0, clock=clock)
    assert deadline.remaining_s == 5.0 and not deadline.expired
    clock.now += 3.5
    assert deadline.remaining_s == 1.5
    clock.now += 2.0
    assert deadline.remaining_s == 0.0 and deadline.expired


def test_no_deadline_never_expires() -> None:
    deadline = Deadline(None)
    assert deadline.remaining_s == float("inf") and not deadline.expired


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_a_bad_timeout_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="timeout_s must be >= 0"):
        Deadline(bad)


def test_poll_returns_the_first_value_that_is_not_none() -> None:
    answers = iter([None, None, 0, 7])
    assert Deadline(10.0).poll(lambda: next(answers), interval_s=0.001) == 0


def test_poll_checks_once_even_past_the_deadline_then_gives_none() -> None:
    calls: list[int] = []
    assert Deadline(0.0).poll(lambda: calls.append(1), interval_s=0.001) is None
    assert calls == [1]
    assert Deadline(0.0).poll(lambda: "ready") == "ready"


def test_poll_stops_when_the_stop_event_is_set() -> None:
    stop = threading.Event()
    calls: list[int] = []

    def check() -> None:
        calls.append(1)
        if len(calls) == 3:
            stop.set()

    assert Deadline(None).poll(check, interval_s=0.001, stop=stop) is None
    assert len(calls) == 3
