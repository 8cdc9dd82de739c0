"""pytest fixtures that run a real Triton server (the local runtime) for your tests.

Installed with hermes-aeriel as a pytest plugin (entry point ``pytest11``), so any test
suite in an environment with ``hermes-aeriel[local]`` can use:

* ``triton_repo``: an empty temporary model repository (a :class:`pathlib.Path`).
* ``triton_server``: a running server on ``triton_repo`` in explicit model-control mode with
  no model loaded; fill the repository, then ``triton_server.load_model("name")``.
* ``start_triton``: a factory, ``start_triton(repo, **serve_kwargs) -> Server``, for several
  servers or other options.
* ``shared_triton``: ONE real server for the whole test session (``triton_session``), handed to
  each test as a :class:`SharedTriton`; the test writes models into ``shared_triton.repository``
  and loads them by name; after the test, the models it loaded are unloaded and the folders it
  wrote are removed. Use it where a suite would otherwise start a server per module.

Every server is stopped at teardown, and the teardown fails the test if its process, its
python-backend stubs or its ``/dev/shm`` regions are left behind. When a test fails, its report
gains a section per server the test started: whether the process was still running (or its exit
status) and the last lines of its log, so a crash in CI can be told from a client-side error.

```python
def test_identity(triton_repo, triton_server):
    write_identity_model(triton_repo / "identity")
    triton_server.load_model("identity")

def test_identity_on_the_session_server(shared_triton):
    write_identity_model(shared_triton.repository / "identity")
    shared_triton.server.load_model("identity")
```

Helpers that keep tests free of port races: :func:`serve_on_free_ports` (explicit ports,
chosen again when another process takes one first) and :func:`refusing_port` (a port on which
nothing can listen while the test holds it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hermes.aeriel.exceptions import PortInUseError
from hermes.aeriel.server import Server, free_ports, serve
from hermes.aeriel.server._server import _session_members

__all__ = [
    "SharedTriton",
    "leftover_resources",
    "refusing_port",
    "retry_while_port_in_use",
    "serve_on_free_ports",
    "shared_triton",
    "start_triton",
    "triton_repo",
    "triton_server",
    "triton_session",
    "wait_until_released",
]


_LOG_LINES = 40
_SERVERS = pytest.StashKey[list[list[Server]]]()  # the servers each fixture of a test started


def _server_section(server: Server) -> str:
    """A failed test's view of one server: running or how it ended, and its log's last lines."""
    code = server.returncode
    state = (
        "running" if code is None else (f"killed by signal {-code}" if code < 0 else f"exit status {code}")
    )
    tail = server.read_log().splitlines()[-_LOG_LINES:]
    return f"{server!r} was {state} when the test failed; {server.spec.log_file} ends:\n" + "\n".join(tail)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Append the servers' state and log tails to the report of a test that failed."""
    report = yield
    if report.when == "call" and report.failed:
        servers = [server for started in item.stash.get(_SERVERS, []) for server in started]
        for i, server in enumerate(servers):
            report.sections.append((f"tritonserver {i}", _server_section(server)))
    return report


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a pid reused by another user
        return True
    # A zombie still answers kill(0); it is gone as far as resources go.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def leftover_resources(server: Server) -> list[str]:
    """What a stopped server left behind: a live process, a stub in its session, a /dev/shm region."""
    leftovers = []
    if server.pid is not None and _process_exists(server.pid):
        leftovers.append(f"tritonserver process {server.pid}")
    if server.pid is not None:
        leftovers += [f"process {pid} in the server's session" for pid in _session_members(server.pid)]
    leftovers += [f"/dev/shm/{p.name}" for p in Path("/dev/shm").glob(f"{server.spec.shm_prefix}*")]
    return leftovers


def wait_until_released(server: Server, timeout_s: float = 10.0) -> list[str]:
    """What ``server`` (closed) still leaves behind after up to ``timeout_s`` (stubs take a moment)."""
    deadline = time.monotonic() + timeout_s
    while (left := leftover_resources(server)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def serve_on_free_ports(repository: str | os.PathLike[str], *, attempts: int = 5, **kwargs: Any) -> Server:
    """``serve()`` on explicitly chosen free ports, choosing again if another process takes one first.

    A free port can be taken between choosing and binding; the server then exits with
    :class:`~hermes.aeriel.PortInUseError`, and this tries new ports (``attempts`` times).
    """
    for attempt in range(attempts):
        http, grpc, metrics = free_ports(3)
        try:
            return serve(repository, http_port=http, grpc_port=grpc, metrics_port=metrics, **kwargs)
        except PortInUseError:
            if attempt + 1 == attempts:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def retry_while_port_in_use(start: Callable[[], Server], within_s: float = 30.0) -> Server:
    """``start()`` again while it fails with :class:`~hermes.aeriel.PortInUseError`, up to ``within_s``.

    For a server restarted on the ports of one just stopped: another process may hold one of
    them for a moment (an outgoing connection's ephemeral port), which is no reason to fail.
    """
    deadline = time.monotonic() + within_s
    while True:
        try:
            return start()
        except PortInUseError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextlib.contextmanager
def refusing_port(address: str = "127.0.0.1") -> Iterator[int]:
    """A TCP port that refuses connections for as long as the ``with`` block runs.

    The port is bound (so no other process can listen on it) but not listening, so a connection
    gets ``Connection refused``; a merely "free" port could be taken by another process.
    """
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as sock:
        sock.bind((address, 0))
        yield sock.getsockname()[1]


@pytest.fixture
def triton_repo(tmp_path: Path) -> Path:
    """An empty model repository directory for one test."""
    repo = tmp_path / "model-repository"
    repo.mkdir()
    return repo


@pytest.fixture
def start_triton(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Server]]:
    """A factory that starts real local Triton servers and stops them after the test."""
    servers: list[Server] = []
    request.node.stash.setdefault(_SERVERS, []).append(servers)

    def start(repository: str | os.PathLike[str], **kwargs: Any) -> Server:
        kwargs.setdefault("log_file", tmp_path / f"tritonserver-{len(servers)}.log")
        kwargs.setdefault("exit_timeout_s", 2)
        kwargs.setdefault("timeout_s", 120.0)
        server = serve(repository, **kwargs)
        servers.append(server)
        return server

    yield start
    problems = []
    for server in servers:
        server.close()
        left = leftover_resources(server)
        if left:
            problems.append(f"{server!r} left behind: {', '.join(left)}")
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def triton_server(triton_repo: Path, start_triton: Callable[..., Server]) -> Server:
    """A running server on ``triton_repo`` (explicit mode, nothing loaded yet)."""
    return start_triton(triton_repo, models=[])


@dataclass(frozen=True)
class SharedTriton:
    """The session's server and its model repository (explicit model control)."""

    server: Server
    repository: Path


@pytest.fixture(scope="session")
def triton_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedTriton]:
    """One real server for the whole session, in explicit mode with nothing loaded at start."""
    base = tmp_path_factory.mktemp("triton-session")
    repository = base / "model-repository"
    repository.mkdir()
    server = serve(repository, models=[], log_file=base / "tritonserver.log", exit_timeout_s=2)
    try:
        yield SharedTriton(server, repository)
    finally:
        server.close()
        left = wait_until_released(server)
        if left:
            pytest.fail(f"the session's {server!r} left behind: {', '.join(left)}")


def _ready_models(server: Server) -> set[str]:
    return {entry.name for entry in server.repository_index() if entry.state == "READY"}


@pytest.fixture
def shared_triton(triton_session: SharedTriton, request: pytest.FixtureRequest) -> Iterator[SharedTriton]:
    """The session's server for one test; what the test loads and writes is removed after it."""
    server, repository = triton_session.server, triton_session.repository
    request.node.stash.setdefault(_SERVERS, []).append([server])
    server.check()  # an earlier test must not have stopped it
    ready, folders = _ready_models(server), set(repository.iterdir())
    yield triton_session
    server.check()
    for name in sorted(_ready_models(server) - ready):
        server.unload_model(name)
    for folder in set(repository.iterdir()) - folders:
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
        else:
            folder.unlink()
