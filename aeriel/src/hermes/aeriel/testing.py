"""pytest fixtures that run a real Triton server (the local runtime) for your tests.

Installed with hermes-aeriel as a pytest plugin (entry point ``pytest11``), so any test
suite in an environment with ``hermes-aeriel[local]`` can use:

* ``triton_repo``: an empty temporary model repository (a :class:`pathlib.Path`).
* ``triton_server``: a running server on ``triton_repo`` in explicit model-control mode with
  no model loaded; fill the repository, then ``triton_server.load_model("name")``.
* ``start_triton``: a factory, ``start_triton(repo, **serve_kwargs) -> Server``, for several
  servers or other options.

Every server is stopped at teardown, and the teardown fails the test if its process, its
python-backend stubs or its ``/dev/shm`` regions are left behind.

```python
def test_identity(triton_repo, triton_server):
    write_identity_model(triton_repo / "identity")
    triton_server.load_model("identity")
```
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hermes.aeriel.serve import Server, serve
from hermes.aeriel.serve._server import _session_members

__all__ = ["leftover_resources", "start_triton", "triton_repo", "triton_server"]


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


@pytest.fixture
def triton_repo(tmp_path: Path) -> Path:
    """An empty model repository directory for one test."""
    repo = tmp_path / "model-repository"
    repo.mkdir()
    return repo


@pytest.fixture
def start_triton(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """A factory that starts real local Triton servers and stops them after the test."""
    servers: list[Server] = []

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
