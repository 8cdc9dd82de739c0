"""Fixtures for hermes.stillwater tests: a leak check around every test."""

from __future__ import annotations

import gc
import os
import sys
import threading
from collections.abc import Iterator
from multiprocessing import forkserver, resource_tracker
from pathlib import Path

import psutil
import pytest

from hermes.stillwater.channel import SHM_PREFIX

# Stage functions must be importable by name inside spawned stage processes.
_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


def _children() -> set[int]:
    # multiprocessing's resource tracker (and forkserver, once used) serve the whole session.
    tracker = getattr(resource_tracker._resource_tracker, "_pid", None)
    server = getattr(forkserver._forkserver, "_forkserver_pid", None)
    return {p.pid for p in psutil.Process().children(recursive=True)} - {tracker, server}


def _segments() -> set[str]:
    # Only this process's segments (channels are named <prefix><pid>-...): other test runs on
    # the same machine create theirs at the same time.
    own = f"{SHM_PREFIX}{os.getpid()}-"
    return {path.name for path in Path("/dev/shm").iterdir() if path.name.startswith(own)}


def _ours(segment: str) -> bool:
    """Whether a new segment can be this test's: other test runs on a shared machine make some too.

    Stillwater names a segment after its creator (``hermes-sw-<pid>-...``); a segment whose
    creator is alive and outside this process tree belongs to someone else. One whose creator is
    gone (a stage process of this test that exited) counts.
    """
    try:
        creator = int(segment.removeprefix(SHM_PREFIX).split("-")[0])
    except ValueError:
        return True
    return creator == os.getpid() or creator in _children() or not psutil.pid_exists(creator)


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


@pytest.fixture(autouse=True)
def leak_check() -> Iterator[None]:
    """Fail the test if it leaves a child process, a stillwater /dev/shm segment or a thread."""
    children, segments, threads = _children(), _segments(), _threads()
    yield
    gc.collect()
    left = {
        "child processes": sorted(_children() - children),
        "/dev/shm segments": sorted(s for s in _segments() - segments if _ours(s)),
        "threads": sorted(t.name for t in _threads() - threads),
    }
    left = {k: v for k, v in left.items() if v}
    assert not left, f"the test leaked {left}"
