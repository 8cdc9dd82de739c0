"""Timeouts, SIGTERM and leftover semaphores of whole runs (issue 16, items 2 and 8)."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import stillwater_test_stages as st

from hermes.stillwater import Map, Pipeline, PipelineTimeout, Sink, Source, StageFailed


def test_run_with_an_output_enforces_its_timeout_and_stops_the_stuck_stage() -> None:
    pipeline = Source(range(3)) >> Map(st.sleep_then_echo, args=(20.0,), name="stuck")
    started = time.monotonic()
    with pytest.raises(PipelineTimeout, match=r"the pipeline did not finish within 2 s"):
        pipeline.run(timeout_s=2)
    assert time.monotonic() - started < 15  # the stage sleeps 20 s; the old run() waited for it
    assert pipeline.pids and all(pid is not None for pid in pipeline.pids)


def test_run_with_a_sink_enforces_its_timeout_too(tmp_path: Path) -> None:
    pipeline = (
        Source(range(3))
        >> Map(st.sleep_then_echo, args=(20.0,))
        >> Sink(st.LineWriter, args=(str(tmp_path / "o"),))
    )
    with pytest.raises(PipelineTimeout, match=r"within 1\.5 s"):
        pipeline.run(timeout_s=1.5)


def test_a_run_that_finishes_in_time_returns_its_outputs_and_leaves_no_timer_thread() -> None:
    assert (Source(range(5)) >> Map(st.square)).run(timeout_s=60) == [0, 1, 4, 9, 16]
    assert not [t for t in threading.enumerate() if t.name == "hermes-stillwater-run-timeout"]


@pytest.mark.parametrize("bad", [-5, 0, float("nan"), float("inf"), "10", True])
def test_run_refuses_a_bad_timeout_before_starting_anything(bad: object) -> None:
    pipeline = Source(range(3)) >> Map(st.square)
    with pytest.raises(ValueError, match=r"timeout_s must be None or a positive number of seconds, got"):
        pipeline.run(timeout_s=bad)  # type: ignore[arg-type]
    assert all(pid is None for pid in pipeline.pids)  # no stage process started


def test_sigterm_during_run_leaves_as_a_plain_system_exit_143() -> None:
    pipeline = Source(st.count_forever) >> Map(st.slow_identity)
    timer = threading.Timer(1.0, os.kill, args=(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        with pytest.raises(SystemExit) as info:
            pipeline.run(timeout_s=60)
    finally:
        timer.cancel()
        timer.join()
    assert type(info.value) is SystemExit  # not a private subclass
    assert info.value.code == 143


def _semaphore_names(pipeline: Pipeline) -> list[str]:
    """The POSIX names of a running pipeline's semaphores (its channels' and its log lock)."""
    locks = [lock for c in pipeline._channels for lock in (c._free, c._filled, c._lock) if lock is not None]
    assert pipeline._forwarder is not None
    locks.append(pipeline._forwarder.sink.lock)
    return [lock._semlock.name for lock in locks]


def test_failed_pipelines_unlink_their_semaphores_without_waiting_for_garbage_collection() -> None:
    # Only this test's own names are checked: other processes on the machine make sem.mp-* too.
    names: list[str] = []
    failures = []
    gc.disable()
    try:
        for _ in range(10):
            pipeline = Source(range(10)) >> Map(st.fail_on_three) >> Map(st.square)
            with pytest.raises(StageFailed) as info, pipeline:
                names += _semaphore_names(pipeline)
                list(pipeline)
            failures.append(info.value)  # tracebacks keep the pipeline's frames alive
        left = [name for name in names if Path(f"/dev/shm/sem.{name.lstrip('/')}").exists()]
    finally:
        gc.enable()
    assert len(names) == 10 * 7  # three rings of two semaphores each, and the log lock
    assert left == []
    assert len(failures) == 10
