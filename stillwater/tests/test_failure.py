"""Failure: errors, killed stages, interrupts and SIGTERM stop everything and leave nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path

import psutil
import pytest
import stillwater_test_stages as st

from hermes.stillwater import (
    ArraySpec,
    Map,
    Sink,
    Source,
    StageDied,
    StageFailed,
)


def _gone(pids: list[int | None]) -> bool:
    return not any(pid is not None and psutil.pid_exists(pid) for pid in pids)


def _no_segments(names: list[str]) -> bool:
    return not any(Path(f"/dev/shm/{name}").exists() for name in names)


def test_exception_in_a_stage_is_reraised_with_the_child_traceback_as_cause() -> None:
    spec = ArraySpec(shape=(4, 256))
    pipeline = Source(range(10)) >> Map(st.fail_on_three, name="picky") >> Map(st.square_frame, output=spec)
    match = r"stage 1 'picky' raised ValueError: item 3 is not welcome"
    with pytest.raises(StageFailed, match=match) as info, pipeline:
        list(pipeline)
    cause = info.value.__cause__
    assert isinstance(cause, ValueError) and str(cause) == "item 3 is not welcome"
    frames = [frame.name for frame in traceback.extract_tb(cause.__traceback__)]
    assert frames[-1] == "fail_on_three"
    assert "stage_main" in frames
    assert info.value.stage == "picky"
    assert _gone(pipeline.pids) and _no_segments(pipeline.shm_names)


def test_parent_and_stages_waiting_on_empty_rings_are_woken_when_the_source_fails(tmp_path: Path) -> None:
    marker = tmp_path / "teardown.txt"
    pipeline = (
        Source(st.emit_then_fail, args=(3,)) >> Map(st.TeardownMarker, args=(str(marker),)) >> Map(st.square)
    )
    received = []
    with pytest.raises(StageFailed, match="source gave up after 3 items") as info, pipeline:
        for item in pipeline:
            received.append(item)  # then the parent and both maps wait on empty rings
    assert received == [0, 1, 4]
    assert isinstance(info.value.__cause__, RuntimeError)
    assert marker.read_text() == "torn down"
    assert _gone(pipeline.pids) and _no_segments(pipeline.shm_names)


def test_exception_whose_init_needs_other_arguments_still_crosses_with_its_fields() -> None:
    with pytest.raises(StageFailed, match="raised NeedsTwoArgs: code 7: item 0") as info:
        (Source(range(3)) >> Map(st.raise_custom)).run()
    cause = info.value.__cause__
    assert isinstance(cause, st.NeedsTwoArgs) and cause.code == 7
    assert traceback.extract_tb(cause.__traceback__)[-1].name == "raise_custom"


def test_exception_in_a_sink_stops_the_pipeline_when_leaving_the_block() -> None:
    pipeline = Source(st.count_forever) >> Map(st.square) >> Sink(st.FailingSink)
    with pytest.raises(StageFailed, match="KeyError") as info, pipeline:
        pass
    assert isinstance(info.value.__cause__, KeyError)
    assert _gone(pipeline.pids) and _no_segments(pipeline.shm_names)


def test_a_stage_killing_itself_raises_stage_died_with_its_exit_code() -> None:
    pipeline = Source(range(10)) >> Map(st.kill_self_on_three, name="doomed")
    with pytest.raises(
        StageDied, match=r"stage 1 'doomed' \(pid \d+\) died with exit code -9 \(signal 9\)"
    ) as info:
        pipeline.run()
    assert info.value.exitcode == -signal.SIGKILL
    assert info.value.stage == "doomed"
    assert _gone(pipeline.pids) and _no_segments(pipeline.shm_names)


def test_killing_a_stage_from_outside_while_iterating_raises_stage_died() -> None:
    spec = ArraySpec(shape=(4, 256))
    pipeline = (
        Source(st.frames, args=(10**9,), output=spec) >> Map(st.negate, output=spec) >> Map(st.describe_array)
    )
    received = 0
    with pytest.raises(StageDied) as info, pipeline:
        for _ in pipeline:
            received += 1
            if received == 5:
                os.kill(pipeline.pids[1], signal.SIGKILL)  # type: ignore[arg-type]
    assert info.value.exitcode == -signal.SIGKILL
    assert info.value.stage == pipeline.stages[1].name
    assert _gone(pipeline.pids) and _no_segments(pipeline.shm_names)


def test_sigterm_to_a_stage_from_outside_is_reported_not_ignored() -> None:
    pipeline = Source(st.count_forever) >> Map(st.square)
    with pytest.raises(StageDied, match="stopped by SIGTERM from outside the pipeline"), pipeline:
        for n, _ in enumerate(pipeline):
            if n == 3:
                os.kill(pipeline.pids[0], signal.SIGTERM)  # type: ignore[arg-type]
    assert _gone(pipeline.pids)


def test_keyboard_interrupt_in_the_parent_stops_every_stage_and_runs_teardown(tmp_path: Path) -> None:
    marker = tmp_path / "teardown.txt"
    pipeline = Source(st.count_forever) >> Map(st.TeardownMarker, args=(str(marker),)) >> Map(st.square)
    with pytest.raises(KeyboardInterrupt), pipeline:
        for n, _ in enumerate(pipeline):
            if n == 10:
                raise KeyboardInterrupt
    assert marker.read_text() == "torn down"
    assert _gone(pipeline.pids) and _no_segments(pipeline.shm_names)


def test_breaking_out_early_stops_an_endless_source() -> None:
    pipeline = Source(st.count_forever) >> Map(st.square)
    with pipeline:
        first = [x for _, x in zip(range(5), pipeline, strict=False)]
    assert first == [0, 1, 4, 9, 16]
    assert _gone(pipeline.pids) and _no_segments(pipeline.shm_names)


_PARENT_SCRIPT = textwrap.dedent(
    """
    import faulthandler, json, signal, sys
    from multiprocessing import resource_tracker
    sys.path.insert(0, {tests!r})
    import stillwater_test_stages as st
    from hermes.stillwater import ArraySpec, Map, Source

    if __name__ == "__main__":
        # Ctrl-C as a program started from a terminal gets it: a shell without job control starts
        # background commands with SIGINT ignored, which Python then leaves ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test's view of a hang
        spec = ArraySpec(shape=(4, 256))
        pipeline = Source(st.frames, args=(10**9,), output=spec) >> Map(st.negate, output=spec) >> Map(st.slow_identity)
        with pipeline:
            for n, _ in enumerate(pipeline):
                if n == 2:
                    tracker = resource_tracker._resource_tracker._pid
                    report = {{"pids": pipeline.pids, "shm": pipeline.shm_names, "tracker": tracker}}
                    print(json.dumps(report), flush=True)
    """
)


def _wait_or_show_stacks(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """The parent's stderr once it exits; if it does not within ``timeout_s``, fail with its threads."""
    try:
        return proc.communicate(timeout=timeout_s)[1]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)  # faulthandler writes every thread's stack to stderr
        time.sleep(2)
        proc.kill()
        stderr = proc.communicate()[1]
        pytest.fail(
            f"the parent did not exit within {timeout_s} s; its stderr and threads:\n{stderr[-8000:]}"
        )


@pytest.mark.parametrize(("signum", "returncode"), [(signal.SIGINT, -signal.SIGINT), (signal.SIGTERM, 143)])
def test_signal_to_the_parent_process_shuts_the_pipeline_down_cleanly(
    tmp_path: Path, signum: int, returncode: int
) -> None:
    script = tmp_path / "parent.py"
    script.write_text(_PARENT_SCRIPT.format(tests=str(Path(__file__).parent)))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        proc.send_signal(signum)
        stderr = _wait_or_show_stacks(proc, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == returncode, stderr
    assert len(info["pids"]) == 3 and _gone(info["pids"])
    assert len(info["shm"]) == 4 and _no_segments(info["shm"])  # three channel rings and the counters
    assert "leaked shared_memory" not in stderr
    assert "Traceback" not in stderr or signum == signal.SIGINT


def test_stages_stop_by_themselves_when_the_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(_PARENT_SCRIPT.format(tests=str(Path(__file__).parent)))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        stages = [psutil.Process(pid) for pid in info["pids"]]
        proc.kill()  # no cleanup in the parent at all
        proc.communicate(timeout=60)
        # Each stage's lifeline reads EOF, it stops itself; the shared resource tracker then
        # unlinks the segments its dead owner left.
        _, alive = psutil.wait_procs(stages, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert alive == []
    assert proc.returncode == -signal.SIGKILL
    try:
        tracker = [psutil.Process(info["tracker"])]
    except psutil.NoSuchProcess:  # already done
        tracker = []
    _, tracker_alive = psutil.wait_procs(tracker, timeout=60)
    assert tracker_alive == []
    assert _no_segments(info["shm"])
