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
from typing import Any

import asyncssh

from hermes.cloudbreak.exceptions import CloudConfigError, RemoteCommandError

__all__ = ["CommandResult", "known_hosts_for", "run_on_hosts", "run_on_hosts_async"]

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


def known_hosts_for(
    addresses: Mapping[str, str], host_keys: Mapping[str, Sequence[str]], *, port: int = 22
) -> asyncssh.SSHKnownHosts:
    """A known-hosts object trusting exactly ``host_keys[name]`` (``"ssh-ed25519 AAAA..."``) at each address."""
    lines = []
    for name, address in addresses.items():
        pattern = address if port == 22 else f"[{address}]:{port}"
        lines += [f"{pattern} {key}" for key in host_keys.get(name, ())]
    return asyncssh.import_known_hosts("\n".join(lines) + "\n")


async def _run_one(
    name: str,
    address: str,
    command: str,
    *,
    port: int,
    username: str | None,
    client_keys: Sequence[str | Path] | None,
    known_hosts: Any,
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
                    known_hosts=known_hosts,
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
    host_keys: Mapping[str, Sequence[str]] | None = None,
    check_host_keys: bool = True,
    timeout_s: float = 600.0,
    concurrency: int = 16,
) -> dict[str, CommandResult]:
    """Run ``command`` on every host; see :func:`run_on_hosts`."""
    trusted = _trust(hosts, known_hosts, host_keys, check_host_keys, port)
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
                known_hosts=trusted,
                timeout_s=timeout_s,
                semaphore=semaphore,
            )
            for name in names
        ]
    )
    return {r.host: r for r in results}


def _trust(
    hosts: Mapping[str, str],
    known_hosts: str | Path | None,
    host_keys: Mapping[str, Sequence[str]] | None,
    check: bool,
    port: int,
) -> Any:
    """What asyncssh checks server keys against: ``None`` (no check) only when asked."""
    if not check:
        logger.warning("SSH host keys are NOT checked (check_host_keys=False)")
        return None
    if host_keys is not None:
        return known_hosts_for(hosts, host_keys, port=port)
    if known_hosts is not None:
        return str(known_hosts)
    return ()  # asyncssh's default: ~/.ssh/known_hosts


def run_on_hosts(
    hosts: Mapping[str, str],
    command: str,
    *,
    per_host: Mapping[str, Sequence[object]] | None = None,
    port: int = 22,
    username: str | None = None,
    client_keys: Sequence[str | Path] | None = None,
    known_hosts: str | Path | None = None,
    host_keys: Mapping[str, Sequence[str]] | None = None,
    check_host_keys: bool = True,
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
        known_hosts: a known_hosts file; ``None`` uses ``~/.ssh/known_hosts`` (unless ``host_keys``).
        host_keys: host name → its public host keys (``"ssh-ed25519 AAAA..."``), e.g. from the VMs'
            guest attributes (:meth:`Swarm.host_keys`); only these are trusted.
        check_host_keys: ``False`` accepts any host key (an explicit, logged opt-out).
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
            host_keys=host_keys,
            check_host_keys=check_host_keys,
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
