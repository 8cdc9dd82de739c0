"""``hermes models``: list, load, unload and hot-swap models on one or many Triton servers.

Every command takes the servers as ``--endpoints FILE`` (``{"endpoints": [{"name", "grpc",
"http", "metrics"}]}``, the cloud deployment's output, or one endpoint per line) and/or
repeated ``--url host:port`` (gRPC addresses). Every call goes through
:class:`~hermes.aeriel.control.ModelManager` and its one
:class:`~hermes.aeriel.control.ControlClient` per server (explicit model control, every server
at once); ``--admin-token`` (or ``$HERMES_ADMIN_TOKEN``) is sent with each call for servers whose
model-repository API is restricted.

Exit status: 0 on success, 1 when a server is unreachable or Triton refuses (the message names
the server and quotes Triton's reason), 2 for bad arguments.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import typer
from tritonclient.grpc import model_config_pb2 as pb

from hermes.aeriel._cli import register
from hermes.aeriel._lifecycle import Deadline
from hermes.aeriel.control.client import RepositoryEntry
from hermes.aeriel.control.model_manager import ModelManager
from hermes.aeriel.endpoints import Endpoint, load_endpoints
from hermes.aeriel.exceptions import AerielError, ConnectionFailed, EndpointError, ModelLoadError
from hermes.quiver.config import DataType

__all__ = ["models_app"]

models_app = typer.Typer(
    name="models",
    help="List, load, unload and hot-swap models on Triton servers (explicit model control).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_ENDPOINTS_HELP = "JSON file {'endpoints': [{name, grpc, http, metrics}]} (or one endpoint per line)."
_URL_HELP = "gRPC address host:port of a server; repeat for several."
_TOKEN_HELP = (
    "Admin token of the servers' restricted model-repository API (--grpc-restricted-protocol); "
    "better set in the environment than on the command line."
)


def _token_option() -> Any:
    return typer.Option(
        None, "--admin-token", envvar="HERMES_ADMIN_TOKEN", help=_TOKEN_HELP, show_default=False
    )


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


def _index_rows(server: str, index: list[RepositoryEntry]) -> list[dict[str, str]]:
    """Rows ``{server, model, versions, state, reason}``: one per model and state, versions joined."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for entry in index:
        versions = groups.setdefault((entry.name, entry.state or "UNLOADED", entry.reason), [])
        if entry.version.isdigit():
            versions.append(int(entry.version))
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
    admin_token: str | None = _token_option(),
) -> None:
    """Print a table of every model, its versions and their state on each server."""
    servers = _servers(endpoints, url)
    rows: list[dict[str, str]] = []
    down: list[str] = []
    with _reported("list"), ModelManager(servers, timeout_s=timeout_s, admin_token=admin_token) as manager:
        for ep in servers:
            try:
                index = manager.client(ep).repository_index()
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


def _print_ready(manager: ModelManager, name: str) -> None:
    for server, versions in manager.ready_versions(name).items():
        ready = ", ".join(str(v) for v in versions) or "none"
        typer.echo(f"  {server}: {name} ready versions {ready}")


@contextlib.contextmanager
def _rolled_back_on_failure(
    manager: ModelManager, name: str, command: str, timeout_s: float
) -> Iterator[None]:
    """On a failed load, put every server back to the versions of ``name`` it served before.

    A load goes to all servers at once, so when one refuses, the others may already serve
    the new versions; a cluster that answers with different versions is worse than none
    changed. The original error is re-raised after the roll-back.
    """
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
                if versions:
                    manager.client(ep).load(name, versions=versions, timeout_s=timeout_s)
                else:
                    manager.client(ep).unload(name, timeout_s=timeout_s)
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
    admin_token: str | None = _token_option(),
) -> None:
    """Load (or reload) NAME on every server and wait until it is ready."""
    servers = _servers(endpoints, url)
    with _reported("load"), ModelManager(servers, timeout_s=timeout_s, admin_token=admin_token) as manager:
        manager.check_reachable()
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
    admin_token: str | None = _token_option(),
) -> None:
    """Unload every version of NAME on every server and wait until none is ready or still unloading."""
    servers = _servers(endpoints, url)
    with _reported("unload"), ModelManager(servers, timeout_s=timeout_s, admin_token=admin_token) as manager:
        manager.check_reachable()
        started = time.monotonic()
        manager.unload(name)
        typer.echo(f"unloaded {name} on {len(servers)} server(s) in {time.monotonic() - started:.2f} s")


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


def _activity(
    manager: ModelManager, name: str, versions: list[int]
) -> dict[tuple[str, int], tuple[str, str]]:
    """``{(server, version): (inference count, last inference time)}`` of ``versions`` of ``name``."""
    seen = {}
    for ep in manager.endpoints:
        for v in versions:
            stats = manager.client(ep).statistics(name, v)
            for entry in stats.get("model_stats", []):
                seen[(ep.name, v)] = (
                    str(entry.get("inference_count", 0)),
                    str(entry.get("last_inference", 0)),
                )
    return seen


def _drain_by_idleness(
    manager: ModelManager, name: str, idle_s: float, busy: list[str]
) -> Callable[[float, frozenset[int]], int]:
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
        seen: dict[tuple[str, int], tuple[str, str]] = {}
        changed: list[str] = []

        def quiet() -> bool | None:
            now = _activity(manager, name, versions)
            first = not seen
            changed[:] = sorted(
                {server for (server, v), count in now.items() if seen.get((server, v)) != count}
            )
            seen.clear()
            seen.update(now)
            return None if first or changed else True  # the first reading is the baseline

        if Deadline(timeout_s).poll(quiet, interval_s=idle_s) is None:
            busy.extend(changed)
        return 0

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
    admin_token: str | None = _token_option(),
) -> None:
    """Hot-swap NAME to NEW_VERSION on every server: load it beside the old, warm, drain, retire the old."""
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
    with _reported("swap"), ModelManager(servers, timeout_s=timeout_s, admin_token=admin_token) as manager:
        manager.check_reachable()

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
                drain=_drain_by_idleness(manager, name, drain_idle_s, busy),
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
