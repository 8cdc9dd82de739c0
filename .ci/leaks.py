"""The leak check .ci/run runs after the suite: no process of the suite left, no new /dev/shm entry.

    python .ci/leaks.py snapshot FILE          # before the suite: the /dev/shm entries there
    python .ci/leaks.py check FILE TOKEN       # after it: exit 1 naming every leak

The suite runs with HERMES_CI_RUN=TOKEN in its environment, which every process it starts
inherits (tritonserver, its python-backend stubs, stillwater's stage processes), so a process is
"ours" when its environment carries the token.

A /dev/shm entry that was not in the snapshot is a leak unless it belongs to a live process that
is not ours: on a developer's machine other test runs and servers may create entries while the
suite runs (CI runs alone, so there every new entry counts). An entry belongs to a live process
when one maps it or holds it open, or when its name carries its creator's pid (hermes' own
schemes: ``hermes<pid>x…`` for a server's regions, ``hermes-sw-<pid>-…`` for stillwater) and
that process is alive.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

SHM = Path("/dev/shm")
CREATOR = re.compile(r"^(?:hermes(\d+)x|hermes-sw-(\d+)-)")


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _environ(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "environ").read_bytes()
    except OSError:
        return b""


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


def ours(token: str) -> list[int]:
    """Live processes (not zombies) whose environment carries the suite's token."""
    marker = f"HERMES_CI_RUN={token}".encode()
    found = []
    for pid in _pids():
        if pid == os.getpid() or marker not in _environ(pid).split(b"\0"):
            continue
        try:
            state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            found.append(pid)
    return found


def holders(path: Path) -> set[int]:
    """Processes that map ``path`` or hold it open."""
    found = set()
    text = str(path)
    for pid in _pids():
        proc = Path("/proc") / str(pid)
        try:
            if text in proc.joinpath("maps").read_text():
                found.add(pid)
                continue
            for fd in proc.joinpath("fd").iterdir():
                if str(fd.readlink()) == text:
                    found.add(pid)
                    break
        except OSError:
            continue
    return found


def foreign_owner(name: str, token: str) -> int | None:
    """A live process not of this suite that the entry belongs to, or None."""
    marker = f"HERMES_CI_RUN={token}".encode()
    candidates = holders(SHM / name)
    match = CREATOR.match(name)
    if match:
        creator = int(match.group(1) or match.group(2))
        if Path("/proc", str(creator)).exists():
            candidates.add(creator)
    for pid in sorted(candidates):
        if marker not in _environ(pid).split(b"\0"):
            return pid
    return None


def check(snapshot: Path, token: str, grace_s: float = 10.0) -> int:
    status = 0
    deadline = time.monotonic() + grace_s  # stubs end shortly after their server
    while (left := ours(token)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        status = 1
        print("error: the suite left processes running:")
        for pid in left:
            print(f"  {pid} {_cmdline(pid)}")
    before = set(snapshot.read_text().split())
    new = sorted({p.name for p in SHM.iterdir()} - before)
    leaked = []
    for name in new:
        owner = foreign_owner(name, token)
        if owner is None:
            leaked.append(name)
        else:
            print(
                f"note: /dev/shm/{name} is new but belongs to pid {owner} ({_cmdline(owner)[:80]}), not this suite"
            )
    if leaked:
        status = 1
        print("error: the suite left /dev/shm entries behind:")
        for name in leaked:
            print(f"  /dev/shm/{name}")
    if status == 0:
        print("no process of the suite left, no new /dev/shm entry of its own")
    return status


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "snapshot":
        Path(argv[2]).write_text("\n".join(sorted(p.name for p in SHM.iterdir())) + "\n")
        return 0
    if len(argv) == 4 and argv[1] == "check":
        return check(Path(argv[2]), argv[3])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
