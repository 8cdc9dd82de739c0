"""``hermes models``: list, load, unload and hot-swap models on one or many Triton servers.

Every command takes the servers as ``--endpoints FILE`` (``{"endpoints": [{"name", "grpc",
"http", "metrics"}]}``, the cloud deployment's output, or one endpoint per line) and/or
repeated ``--url host:port`` (gRPC addresses). Loads, unloads and swaps go through
:class:`~hermes.aeriel.routing.ModelManager` (explicit model control, every server at once).

Exit status: 0 on success, 1 when a server is unreachable or Triton refuses (the message names
the server and quotes Triton's reason), 2 for bad arguments.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import typer
from tritonclient.grpc import model_config_pb2 as pb

from hermes.aeriel._cli import register
from hermes.aeriel.endpoints import Endpoint, load_endpoints
from hermes.aeriel.exceptions import (
    AerielError,
    ConnectionFailed,
    EndpointError,
    ModelLoadError,
    ServerError,
    ServerStartTimeout,
)
from hermes.quiver.config import DataType

__all__ = ["models_app"]

logger = logging.getLogger("hermes.aeriel.routing.cli")

models_app = typer.Typer(
    name="models",
    help="List, load, unload and hot-swap models on Triton servers (explicit model control).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_ENDPOINTS_HELP = "JSON file {'endpoints': [{name, grpc, http, metrics}]} (or one endpoint per line)."
_URL_HELP = "gRPC address host:port of a server; repeat for several."


def _servers(endpoints_file: Path | None, urls: list[str]) -> list[Endpoint]:
    """The servers named by ``--endpoints`` and ``--url``; exit 2 when none or malformed."""
    if endpoints_file is None and not urls:
        typer.echo("error: name the servers with --endpoints FILE or --url host:port", err=True)
        raise typer.Exit(2)
    try:
        entries: list[Endpoint] = load_endpoints(endpoints_file) if endpoints_file is not None else []
        entries += [Endpoint.parse(url) for url in urls]
        return load_endpoints(entries)
    except EndpointError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@contextlib.contextmanager
def _reported(command: str) -> Iterator[None]:
    """Turn hermes errors into ``hermes models <command>: error: ...`` on stderr and exit status 1."""
    try:
        yield
    except (AerielError, ValueError) as exc:
        typer.echo(f"hermes models {command}: error: {exc}", err=True)
        raise typer.Exit(1) from None


class _Servers:
    """One tritonclient gRPC client per server, with its errors translated; a context manager."""

    def __init__(self, endpoints: list[Endpoint], timeout_s: float):
        import tritonclient.grpc as grpcclient

        self.endpoints = endpoints
        self.timeout_s = timeout_s
        self._clients = {ep.name: grpcclient.InferenceServerClient(ep.grpc) for ep in endpoints}

    def call(self, ep: Endpoint, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """``client.<method>(*args, **kwargs)`` on ``ep`` within ``timeout_s``.

        Raises:
            ConnectionFailed: the server did not answer (names it and gRPC's reason).
            ServerError: the server answered with an error (quotes Triton's message).
        """
        from tritonclient.utils import InferenceServerException

        try:
            return getattr(self._clients[ep.name], method)(*args, client_timeout=self.timeout_s, **kwargs)
        except InferenceServerException as exc:
            status = str(exc.status() or "")
            if "UNAVAILABLE" in status or "DEADLINE_EXCEEDED" in status:
                raise ConnectionFailed(
                    f"server {_where(ep)} is unreachable ({what}): {exc.message()}"
                ) from exc
            raise ServerError(f"server {_where(ep)}: {what} failed: {exc.message()}") from exc

    def check_reachable(self) -> None:
        """Raise ConnectionFailed naming every server that does not answer a liveness check."""
        down = []
        for ep in self.endpoints:
            try:
                self.call(ep, "liveness check", "is_server_live")
            except ConnectionFailed as exc:
                down.append(str(exc))
        if down:
            raise ConnectionFailed("\n".join(down))

    def close(self) -> None:
        """Close every client. Idempotent."""
        clients, self._clients = self._clients, {}
        for client in clients.values():
            with contextlib.suppress(Exception):
                client.close()

    def __enter__(self) -> _Servers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _where(ep: Endpoint) -> str:
    """``name (host:port)``, or just ``host:port`` when that is the name."""
    return ep.name if ep.name == ep.grpc else f"{ep.name} ({ep.grpc})"


def _index_rows(server: str, index: dict[str, Any]) -> list[dict[str, str]]:
    """Rows ``{server, model, versions, state, reason}``: one per model and state, versions joined."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for entry in index.get("models", []):
        state = str(entry.get("state") or "UNLOADED")
        key = (str(entry.get("name", "")), state, str(entry.get("reason") or ""))
        versions = groups.setdefault(key, [])
        version = str(entry.get("version") or "")
        if version.isdigit():
            versions.append(int(version))
    return [
        {
            "server": server,
            "model": model,
            "versions": ", ".join(str(v) for v in sorted(versions)) or "-",
            "state": state,
            "reason": reason,
        }
        for (model, state, reason), versions in sorted(groups.items())
    ]


def _table(rows: list[dict[str, str]], columns: tuple[str, ...]) -> str:
    """A plain text table with upper-case headers, columns padded to their widest cell."""
    widths = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


@models_app.command("list")
def list_command(
    endpoints: Path | None = typer.Option(None, "--endpoints", "-e", help=_ENDPOINTS_HELP),
    url: list[str] = typer.Option([], "--url", "-u", help=_URL_HELP),
    model: list[str] = typer.Option([], "--model", "-m", help="Only this model; repeat for several."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as a JSON list instead of a table."),
    timeout_s: float = typer.Option(10.0, "--timeout", help="Seconds each server may take to answer."),
) -> None:
    """Print a table of every model, its versions and their state on each server."""
    servers = _servers(endpoints, url)
    rows: list[dict[str, str]] = []
    down: list[str] = []
    with _reported("list"), _Servers(servers, timeout_s) as clients:
        for ep in servers:
            try:
                index = clients.call(
                    ep, "reading the repository index", "get_model_repository_index", as_json=True
                )
            except ConnectionFailed as exc:
                down.append(str(exc))
                continue
            rows += [r for r in _index_rows(ep.name, index) if not model or r["model"] in model]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    elif rows:
        typer.echo(_table(rows, ("server", "model", "versions", "state", "reason")))
    elif not down:
        typer.echo("no models" + (f" named {', '.join(model)}" if model else "") + " on any server")
    if down:
        for message in down:
            typer.echo(f"hermes models list: error: {message}", err=True)
        raise typer.Exit(1)


def _print_ready(manager: Any, name: str) -> None:
    for server, versions in manager.ready_versions(name).items():
        ready = ", ".join(str(v) for v in versions) or "none"
        typer.echo(f"  {server}: {name} ready versions {ready}")


@contextlib.contextmanager
def _rolled_back_on_failure(manager: Any, name: str, command: str, timeout_s: float) -> Iterator[None]:
    """On a failed load, put every server back to the versions of ``name`` it served before.

    A load goes to all servers at once, so when one refuses, the others may already serve
    the new versions; a cluster that answers with different versions is worse than none
    changed. The original error is re-raised after the roll-back.
    """
    from hermes.aeriel.control.model_manager import ModelManager

    before = manager.ready_versions(name)
    try:
        yield
    except ModelLoadError:
        now = manager.ready_versions(name)
        for ep in manager.endpoints:
            versions = before[ep.name]
            if now.get(ep.name) == versions:
                continue
            try:
                with ModelManager(ep, timeout_s=timeout_s) as one:
                    if versions:
                        one.load(name, versions=versions)
                    else:
                        one.unload(name)
            except AerielError as exc:
                typer.echo(f"hermes models {command}: could not roll back {ep.name}: {exc}", err=True)
                continue
            what = f"version(s) {', '.join(map(str, versions))}" if versions else "nothing (unloaded)"
            typer.echo(f"hermes models {command}: rolled {ep.name} back to {what}", err=True)
        raise


@models_app.command("load")
def load_command(
    name: str = typer.Argument(..., help="Model name in the servers' repositories."),
    version: list[int] = typer.Option(
        [], "--version", "-V", help="Serve exactly this version (repeat for several); default: the config's."
    ),
    endpoints: Path | None = typer.Option(None, "--endpoints", "-e", help=_ENDPOINTS_HELP),
    url: list[str] = typer.Option([], "--url", "-u", help=_URL_HELP),
    timeout_s: float = typer.Option(120.0, "--timeout", help="Seconds the load may take on each server."),
) -> None:
    """Load (or reload) NAME on every server and wait until it is ready."""
    from hermes.aeriel.control.model_manager import ModelManager

    servers = _servers(endpoints, url)
    with (
        _reported("load"),
        _Servers(servers, timeout_s) as clients,
        ModelManager(servers, timeout_s=timeout_s) as manager,
    ):
        clients.check_reachable()
        started = time.monotonic()
        with _rolled_back_on_failure(manager, name, "load", timeout_s):
            manager.load(name, versions=version or None)
        what = (
            f"{name} version{'s' if len(version) > 1 else ''} {', '.join(map(str, sorted(version)))}"
            if version
            else name
        )
        typer.echo(f"loaded {what} on {len(servers)} server(s) in {time.monotonic() - started:.2f} s")
        _print_ready(manager, name)


@models_app.command("unload")
def unload_command(
    name: str = typer.Argument(..., help="Model name."),
    endpoints: Path | None = typer.Option(None, "--endpoints", "-e", help=_ENDPOINTS_HELP),
    url: list[str] = typer.Option([], "--url", "-u", help=_URL_HELP),
    timeout_s: float = typer.Option(60.0, "--timeout", help="Seconds the unload may take on each server."),
) -> None:
    """Unload every version of NAME on every server and wait until none is ready."""
    from hermes.aeriel.control.model_manager import ModelManager

    servers = _servers(endpoints, url)
    with (
        _reported("unload"),
        _Servers(servers, timeout_s) as clients,
        ModelManager(servers, timeout_s=timeout_s) as manager,
    ):
        clients.check_reachable()
        started = time.monotonic()
        manager.unload(name)
        _wait_unloaded(clients, name, started + timeout_s)
        typer.echo(f"unloaded {name} on {len(servers)} server(s) in {time.monotonic() - started:.2f} s")


def _wait_unloaded(clients: _Servers, name: str, deadline: float) -> None:
    """Wait until no version of ``name`` is still UNLOADING on any server (its instances are gone).

    Raises:
        ServerStartTimeout: some version was still unloading at ``deadline`` (monotonic seconds).
    """
    pause = threading.Event()  # never set: the waits below end by their timeout
    interval = 0.01
    while True:
        unloading = [
            f"{ep.name} version {entry.get('version')}"
            for ep in clients.endpoints
            for entry in clients.call(
                ep, "reading the repository index", "get_model_repository_index", as_json=True
            ).get("models", [])
            if entry.get("name") == name and entry.get("state") == "UNLOADING"
        ]
        if not unloading:
            return
        if time.monotonic() >= deadline:
            raise ServerStartTimeout(
                f"model {name!r} still unloading at the deadline: {', '.join(unloading)}"
            )
        pause.wait(interval)
        interval = min(interval * 1.5, 0.2)


def zero_inputs(config: pb.ModelConfig) -> dict[str, np.ndarray]:
    """Zero-filled inputs for one request to a model, from its configuration.

    Variable dimensions (-1) become 1; a batching model (``max_batch_size`` > 0) gets a batch of one.

    Raises:
        ValueError: an input has a data type that cannot be filled with zeros here (BF16).
    """
    batch = [1] if config.max_batch_size > 0 else []
    inputs = {}
    for spec in config.input:
        shape = batch + [max(int(d), 1) for d in spec.dims]
        dtype = DataType.from_proto(spec.data_type) if spec.data_type != pb.TYPE_BF16 else None
        if dtype is None:
            fillable = [f"TYPE_{t.value}" for t in DataType if t is not DataType.BF16]
            raise ValueError(
                f"input {spec.name!r} has data type {pb.DataType.Name(spec.data_type)!r}; warm-up can fill "
                f"{', '.join(fillable)}"
            )
        inputs[spec.name] = (
            np.full(shape, b"", dtype=np.object_) if dtype is DataType.BYTES else np.zeros(shape, dtype.numpy)
        )
    return inputs


def _activity(clients: _Servers, name: str, versions: list[int]) -> dict[tuple[str, int], tuple[str, str]]:
    """``{(server, version): (inference count, last inference time)}`` of ``versions`` of ``name``."""
    seen = {}
    for ep in clients.endpoints:
        for v in versions:
            stats = clients.call(
                ep, f"reading the statistics of {name!r} version {v}", "get_inference_statistics",
                name, str(v), as_json=True,
            )  # fmt: skip
            for entry in stats.get("model_stats", []):
                seen[(ep.name, v)] = (
                    str(entry.get("inference_count", 0)),
                    str(entry.get("last_inference", 0)),
                )
    return seen


def _drain_by_idleness(clients: _Servers, name: str, idle_s: float, busy: list[str]) -> Any:
    """A ``drain`` for :meth:`ModelManager.swap`: wait until the old versions get no requests for ``idle_s``.

    The command line cannot see the clients' sequences, so it watches Triton's per-version
    statistics: once no old version received a request during ``idle_s`` seconds, the
    clients have moved on. Servers whose old versions were still busy at the drain timeout
    are appended to ``busy``.
    """

    def drain(timeout_s: float, old_versions: frozenset[int]) -> int:
        if not old_versions or timeout_s <= 0 or idle_s <= 0:
            return 0
        versions = sorted(old_versions)
        deadline = time.monotonic() + timeout_s
        pause = threading.Event()  # never set: waits below end by their timeout
        before = _activity(clients, name, versions)
        while True:
            pause.wait(max(0.0, min(idle_s, deadline - time.monotonic())))
            after = _activity(clients, name, versions)
            changed = sorted(
                {server for (server, v), seen in after.items() if before.get((server, v)) != seen}
            )
            if not changed:
                return 0
            if time.monotonic() >= deadline:
                busy.extend(changed)
                return 0
            before = after

    return drain


@models_app.command("swap")
def swap_command(
    name: str = typer.Argument(..., help="Model name."),
    new_version: int = typer.Argument(..., help="The version to serve from now on (in every repository)."),
    drain_timeout_s: float = typer.Option(
        60.0,
        "--drain-timeout",
        help="Seconds to let clients finish on the old version(s) before retiring them.",
    ),
    drain_idle_s: float = typer.Option(
        1.0,
        "--drain-idle",
        help="The drain ends once the old version(s) got no request for this many seconds.",
    ),
    warmup: int = typer.Option(
        0,
        "--warmup",
        help="Zero-filled warm-up requests sent to the new version on each server before the drain.",
    ),
    endpoints: Path | None = typer.Option(None, "--endpoints", "-e", help=_ENDPOINTS_HELP),
    url: list[str] = typer.Option([], "--url", "-u", help=_URL_HELP),
    timeout_s: float = typer.Option(120.0, "--timeout", help="Seconds each load may take on each server."),
) -> None:
    """Hot-swap NAME to NEW_VERSION on every server: load it beside the old, warm, drain, retire the old."""
    from hermes.aeriel.control.model_manager import ModelManager

    if warmup < 0 or drain_timeout_s < 0 or drain_idle_s < 0:
        typer.echo(
            f"error: --warmup, --drain-timeout and --drain-idle must be >= 0, "
            f"got {warmup}, {drain_timeout_s}, {drain_idle_s}",
            err=True,
        )
        raise typer.Exit(2)
    servers = _servers(endpoints, url)
    busy: list[str] = []
    warm_s = [0.0]
    with (
        _reported("swap"),
        _Servers(servers, timeout_s) as clients,
        ModelManager(servers, timeout_s=timeout_s) as manager,
    ):
        clients.check_reachable()

        def warm(version: int) -> None:
            if warmup == 0:
                return
            started = time.monotonic()
            inputs = zero_inputs(manager.config(name))
            for _ in range(warmup):
                manager.warm(name, version, inputs, timeout_s=timeout_s)
            warm_s[0] = time.monotonic() - started

        with _rolled_back_on_failure(manager, name, "swap", timeout_s):
            report = manager.swap(
                name,
                new_version,
                on_switch=warm,
                drain=_drain_by_idleness(clients, name, drain_idle_s, busy),
                drain_timeout_s=drain_timeout_s,
                timeout_s=timeout_s,
            )
        old = ", ".join(map(str, report.old_versions)) or "none"
        typer.echo(
            f"swapped {name} {old} -> {report.new_version} on {len(servers)} server(s) in {report.total_s:.2f} s "
            f"(load {report.load_s:.2f} s, warm-up {warm_s[0]:.2f} s, drain {report.drain_s - warm_s[0]:.2f} s, "
            f"retire {report.retire_s:.2f} s)"
        )
        _print_ready(manager, name)
    if busy:
        typer.echo(
            f"hermes models swap: warning: {', '.join(busy)} still received requests for the old version(s) "
            f"{', '.join(map(str, report.old_versions))} when the {drain_timeout_s:g} s drain ended",
            err=True,
        )


register("models", models_app)
