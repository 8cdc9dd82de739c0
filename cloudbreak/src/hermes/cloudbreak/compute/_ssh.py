"""Run a command on many hosts over SSH (asyncssh), with bounded concurrency and output per host.

```
run_on_hosts ──asyncio.run──▶ one task per host ──semaphore(concurrency)──▶ asyncssh.connect → run
                                                     results gathered by host name
```
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from hermes.cloudbreak.exceptions import CloudConfigError, RemoteCommandError

__all__ = ["CommandResult", "run_on_hosts", "run_on_hosts_async"]

logger = logging.getLogger("hermes.cloudbreak.ssh")


@dataclass(frozen=True, kw_only=True)
class CommandResult:
    """What one command did on one VM.

    Attributes:
        host: the VM's name.
        address: the address connected to.
        command: the command as run (after per-VM formatting).
        exit_status: the remote exit status (``None`` when the connection failed).
        stdout: its standard output.
        stderr: its standard error (or the connection error).
    """

    host: str
    address: str
    command: str
    exit_status: int | None
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        """Whether the command ran and exited 0."""
        return self.exit_status == 0


async def _run_one(
    name: str,
    address: str,
    command: str,
    *,
    port: int,
    username: str | None,
    client_keys: Sequence[str | Path] | None,
    known_hosts: str | Path | None,
    timeout_s: float,
    semaphore: asyncio.Semaphore,
) -> CommandResult:
    async with semaphore:
        try:
            async with asyncio.timeout(timeout_s):
                async with asyncssh.connect(
                    address,
                    port=port,
                    username=username,
                    client_keys=[str(k) for k in client_keys] if client_keys is not None else (),
                    known_hosts=str(known_hosts) if known_hosts is not None else None,
                ) as conn:
                    result = await conn.run(command, check=False)
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            logger.warning("%s (%s): %s", name, address, reason)
            return CommandResult(
                host=name, address=address, command=command, exit_status=None, stdout="", stderr=reason
            )
    out = result.stdout if isinstance(result.stdout, str) else (result.stdout or b"").decode(errors="replace")
    err = result.stderr if isinstance(result.stderr, str) else (result.stderr or b"").decode(errors="replace")
    return CommandResult(
        host=name, address=address, command=command, exit_status=result.exit_status, stdout=out, stderr=err
    )


async def run_on_hosts_async(
    hosts: Mapping[str, str],
    command: str,
    *,
    per_host: Mapping[str, Sequence[object]] | None = None,
    port: int = 22,
    username: str | None = None,
    client_keys: Sequence[str | Path] | None = None,
    known_hosts: str | Path | None = None,
    timeout_s: float = 600.0,
    concurrency: int = 16,
) -> dict[str, CommandResult]:
    """Run ``command`` on every host; see :func:`run_on_hosts`."""
    if concurrency < 1:
        raise CloudConfigError(f"concurrency must be >= 1, got {concurrency}")
    names = list(hosts)
    commands = {}
    for i, name in enumerate(names):
        values = {key: seq[i] for key, seq in (per_host or {}).items()}
        for key, seq in (per_host or {}).items():
            if len(seq) != len(names):
                raise CloudConfigError(f"per_host[{key!r}] has {len(seq)} values for {len(names)} hosts")
        try:
            commands[name] = command.format(**values) if per_host else command
        except (KeyError, IndexError) as exc:
            raise CloudConfigError(f"command {command!r} names {exc} which per_host does not give") from exc
    semaphore = asyncio.Semaphore(concurrency)
    results = await asyncio.gather(
        *[
            _run_one(
                name,
                hosts[name],
                commands[name],
                port=port,
                username=username,
                client_keys=client_keys,
                known_hosts=known_hosts,
                timeout_s=timeout_s,
                semaphore=semaphore,
            )
            for name in names
        ]
    )
    return {r.host: r for r in results}


def run_on_hosts(
    hosts: Mapping[str, str],
    command: str,
    *,
    per_host: Mapping[str, Sequence[object]] | None = None,
    port: int = 22,
    username: str | None = None,
    client_keys: Sequence[str | Path] | None = None,
    known_hosts: str | Path | None = None,
    timeout_s: float = 600.0,
    concurrency: int = 16,
    check: bool = False,
) -> dict[str, CommandResult]:
    """Run ``command`` on every host over SSH and collect each one's output.

    Args:
        hosts: VM name → address.
        command: the shell command; with ``per_host``, ``str.format`` fields are filled per VM.
        per_host: field → one value per host (in ``hosts`` order), e.g. ``{"shard": [0, 1, 2]}``.
        port: the SSH port.
        username: the remote user.
        client_keys: private key files; ``None`` uses the SSH agent and default keys.
        known_hosts: a known_hosts file; ``None`` skips host-key checks (fresh cloud VMs have new keys).
        timeout_s: the deadline for each host (connect and run), in seconds.
        concurrency: the most hosts at once.
        check: raise :class:`RemoteCommandError` when any host failed.

    Returns:
        VM name → :class:`CommandResult` (a failed connection has ``exit_status`` None).
    """
    results = asyncio.run(
        run_on_hosts_async(
            hosts,
            command,
            per_host=per_host,
            port=port,
            username=username,
            client_keys=client_keys,
            known_hosts=known_hosts,
            timeout_s=timeout_s,
            concurrency=concurrency,
        )
    )
    failed = [r for r in results.values() if not r.ok]
    if check and failed:
        raise RemoteCommandError(
            "command failed on "
            + ", ".join(f"{r.host} (exit {r.exit_status}: {r.stderr.strip()[-200:]})" for r in failed)
        )
    return results
