"""An asyncssh server on 127.0.0.1 that runs each command with subprocess and returns its output."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncssh


class _Server(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True  # public-key auth against authorized_client_keys

    def public_key_auth_supported(self) -> bool:
        return True


async def _process(process: asyncssh.SSHServerProcess) -> None:
    command = process.command or "true"
    proc = await asyncio.create_subprocess_shell(
        command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    process.stdout.write(out.decode())
    process.stderr.write(err.decode())
    process.exit(proc.returncode or 0)


@contextmanager
def ssh_server(tmp: Path) -> Iterator[dict[str, Any]]:
    """Yields ``{"port", "client_key" (path), "host_key" ("ssh-ed25519 AAAA..."), "commands"}``; stopped on exit."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = tmp / "id_ed25519"
    key_path.write_bytes(client_key.export_private_key())
    key_path.chmod(0o600)
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {"commands": []}

    async def main() -> None:
        box["stop"] = asyncio.Event()

        async def handle(process: asyncssh.SSHServerProcess) -> None:
            box["commands"].append(process.command)
            await _process(process)

        server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[host_key],
            authorized_client_keys=authorized,
            process_factory=handle,
            server_factory=_Server,
        )
        box["port"] = server.sockets[0].getsockname()[1]
        ready.set()
        await box["stop"].wait()
        server.close()
        await server.wait_closed()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="fake-ssh", daemon=True)
    thread.start()
    try:
        assert ready.wait(10), "ssh server did not start"
        public = " ".join(host_key.export_public_key().decode().split()[:2])
        yield {"port": box["port"], "client_key": key_path, "host_key": public, "commands": box["commands"]}
    finally:
        loop.call_soon_threadsafe(box["stop"].set)
        thread.join(10)
        loop.close()
