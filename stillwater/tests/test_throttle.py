"""Throttle: drift-free schedule, re-anchoring, validation (fake clock: no real sleeping)."""

from __future__ import annotations

import pytest

from hermes.stillwater import Throttle


class FakeClock:
    """A clock whose sleep advances time by the request plus a fixed overshoot."""

    def __init__(self, overshoot_s: float = 0.0) -> None:
        self.now = 100.0
        self.overshoot_s = overshoot_s
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds + self.overshoot_s


def test_throttle_at_512_hz_keeps_absolute_schedule_despite_oversleeping() -> None:
    fake = FakeClock(overshoot_s=2e-4)
    throttle = Throttle(512.0, clock=fake.clock, sleep=fake.sleep)
    for _ in range(1025):
        throttle.wait()
    # Tick n is released at t0 + n/512 plus one overshoot, never n overshoots.
    assert fake.now == pytest.approx(100.0 + 1024 / 512 + 2e-4, abs=1e-9)
    assert throttle.deadline(1024) == pytest.approx(102.0)
    # Each sleep after the first is the period minus the previous overshoot.
    assert fake.sleeps[1:4] == pytest.approx([1 / 512 - 2e-4] * 3)
    assert throttle.lag_s == pytest.approx(2e-4)
    assert throttle.resets == 0


def test_throttle_catches_up_after_a_slow_iteration_without_sleeping() -> None:
    fake = FakeClock()
    throttle = Throttle(100.0, clock=fake.clock, sleep=fake.sleep)
    throttle.wait()
    fake.now += 0.035  # the caller stalled for 3.5 periods
    lags = [throttle.wait() for _ in range(4)]
    # Ticks 1..3 are already due (no sleep); tick 4 waits for its slot at t0 + 0.04.
    assert lags[:3] == pytest.approx([0.025, 0.015, 0.005])
    assert fake.sleeps == pytest.approx([0.005])
    assert fake.now == pytest.approx(100.04)


def test_throttle_restarts_schedule_when_lag_exceeds_max_lag() -> None:
    fake = FakeClock()
    throttle = Throttle(10.0, max_lag_s=0.5, clock=fake.clock, sleep=fake.sleep)
    throttle.wait()
    fake.now += 2.0
    assert throttle.wait() == 0.0
    assert throttle.resets == 1
    assert throttle.deadline(0) == pytest.approx(102.0)
    throttle.wait()
    assert fake.now == pytest.approx(102.1)


def test_throttle_iterate_paces_items_and_keeps_them() -> None:
    fake = FakeClock()
    throttle = Throttle(4.0, clock=fake.clock, sleep=fake.sleep)
    assert list(throttle.iterate("abcd")) == ["a", "b", "c", "d"]
    assert fake.now == pytest.approx(100.75)
    assert throttle.ticks == 4


@pytest.mark.parametrize("rate", [0, -5.0])
def test_throttle_rejects_non_positive_rate(rate: float) -> None:
    with pytest.raises(ValueError, match=f"rate_hz must be > 0, got {rate}"):
        Throttle(rate)


def test_throttle_deadline_before_start_explains_itself() -> None:
    with pytest.raises(RuntimeError, match="call wait"):
        Throttle(5.0).deadline(1)
