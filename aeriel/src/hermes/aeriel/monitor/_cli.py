"""``hermes monitor``: watch Triton servers, write per-interval deltas to CSV, show a live table."""

from __future__ import annotations

from pathlib import Path

import typer

from hermes.aeriel._cli import register
from hermes.aeriel.endpoints import DEFAULT_PORTS, Endpoint, load_endpoints
from hermes.aeriel.exceptions import EndpointError

__all__ = ["monitor"]


def monitor(
    host: list[str] = typer.Option(
        [], "--host", "-H", help="Server host (repeat for several); default 127.0.0.1 unless --endpoints."
    ),
    grpc_port: int = typer.Option(DEFAULT_PORTS["grpc"], help="gRPC port of every --host."),
    http_port: int = typer.Option(DEFAULT_PORTS["http"], help="HTTP port of every --host."),
    metrics_port: int = typer.Option(DEFAULT_PORTS["metrics"], help="Metrics port of every --host."),
    endpoints: Path | None = typer.Option(
        None, "--endpoints", "-e", help="JSON file {'endpoints': [...]} (the cloud deployment's output)."
    ),
    csv_path: Path | None = typer.Option(None, "--csv", help="Append per-interval rows to this CSV file."),
    interval_s: float = typer.Option(1.0, "--interval", "-i", help="Seconds between readings."),
    duration_s: float | None = typer.Option(None, "--duration", "-d", help="Stop after this many seconds."),
    source: str = typer.Option("metrics", help="'metrics' (Prometheus) or 'statistics' (per-model API)."),
    model: list[str] = typer.Option([], "--model", "-m", help="Only this model (repeat for several)."),
    live: bool = typer.Option(True, "--live/--no-live", help="Show a live table."),
    timeout_s: float = typer.Option(2.0, "--timeout", help="Seconds one server may take to answer."),
    admin_token: str | None = typer.Option(
        None,
        "--admin-token",
        envvar="HERMES_ADMIN_TOKEN",
        show_default=False,
        help="Admin token for servers whose statistics API is restricted (--source statistics); "
        "better set in the environment than on the command line.",
    ),
) -> None:
    """Watch Triton servers: requests, batch sizes, queue and compute times, GPU use."""
    from hermes.aeriel.monitor.monitor import Monitor

    try:
        targets: list[Endpoint] = load_endpoints(endpoints) if endpoints is not None else []
        for h in host or ([] if endpoints is not None else ["127.0.0.1"]):
            targets.append(
                Endpoint(
                    name=f"{h}:{grpc_port}",
                    grpc=f"{h}:{grpc_port}",
                    http=f"{h}:{http_port}",
                    metrics=f"{h}:{metrics_port}",
                )
            )
        if source not in ("metrics", "statistics"):
            raise typer.BadParameter(f"--source must be 'metrics' or 'statistics', got {source!r}")
        mon = Monitor(
            targets,
            csv_path=csv_path,
            interval_s=interval_s,
            source=source,  # type: ignore[arg-type]
            models=model or None,
            timeout_s=timeout_s,
            admin_token=admin_token,
        )
    except (EndpointError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    with mon:
        mon.run(duration_s=duration_s, live=live)
        if not live:
            from rich.console import Console

            Console().print(mon.table())


register("monitor", monitor)
