"""``hermes profile``: the command line of the streaming profiler."""

from __future__ import annotations

from pathlib import Path

import typer

from hermes.aeriel._cli import register


def _ints(value: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{what} takes comma-separated integers, got {value!r}") from None
    if not values:
        raise typer.BadParameter(f"{what} needs at least one value")
    return values


def profile_command(
    model: str = typer.Argument(
        ..., help="The streaming model: a quiver streaming ensemble, a fused model, or any stateful model."
    ),
    url: str = typer.Option(
        None, "--url", help="gRPC address of a running server (else --repository is served locally)."
    ),
    repository: Path = typer.Option(
        None, "--repository", "-r", help="Local model repository (needed for --instances and --floor)."
    ),
    streams: str = typer.Option("1", "--streams", help="Concurrent sequences, comma-separated: 1,4,8."),
    in_flight: str = typer.Option(
        "1", "--in-flight", help="Requests outstanding per stream, comma-separated."
    ),
    instances: str = typer.Option(
        "",
        "--instances",
        help="Instance counts of the model's members and network, comma-separated (local repository).",
    ),
    updates: int = typer.Option(
        200, "--updates", help="Requests per stream (the first carries START, the last END)."
    ),
    rate: str = typer.Option(
        "max", "--rate", help="'max' as fast as possible, or a multiple of real time per stream."
    ),
    sample_rate: float = typer.Option(4096.0, "--sample-rate", help="Samples per second of the data."),
    floor: bool = typer.Option(
        False, "--floor", help="Also run the network in-process on the same windows; print the ratio."
    ),
    csv: Path = typer.Option(None, "--csv", help="Write the results as CSV."),
    plot: Path = typer.Option(
        None, "--plot", help="Write a plot (PNG) of s of data/s and p99 latency against streams."
    ),
) -> None:
    """Profile a streaming model: streams x in-flight x instances, real sequences (START/END).

    Per configuration: seconds of data per second (all streams), requests/s, p50/p99 latency,
    client CPU and server CPU per request (server CPU when the server is started here) and the
    server-side time per step (queue + compute, Triton statistics API). With --floor, the same
    network runs in-process on the same windows in the same batches, and the table shows the
    ratio of served to in-process seconds of data per second.

    Example: hermes profile deepclean-stream -r demo-output/model-repository --streams 1,4 --floor
    """
    from hermes.aeriel.exceptions import ProfileError
    from hermes.aeriel.profile import SweepConfig, format_table, sweep, write_csv
    from hermes.aeriel.profile import plot as write_plot

    try:
        config = SweepConfig(
            model=model, url=url, repository=repository, streams=_ints(streams, "--streams"),
            in_flight=_ints(in_flight, "--in-flight"),
            instances=_ints(instances, "--instances") if instances else (None,), updates=updates,
            rate=None if rate == "max" else float(rate), sample_rate=sample_rate, floor=floor,
        )  # fmt: skip
        results = sweep(config, progress=lambda m: typer.echo(
            f"  {m.streams} stream(s), {m.in_flight} in flight: {m.data_rate:.2f} s of data/s, "
            f"p50 {m.latency_ms(50):.2f} ms", err=True))  # fmt: skip
    except (ProfileError, ValueError) as exc:
        typer.echo(f"hermes profile: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(format_table(results))
    if csv is not None:
        write_csv(csv, results)
        typer.echo(f"wrote {csv}")
    if plot is not None:
        write_plot(plot, results, model)
        typer.echo(f"wrote {plot}")


register("profile", profile_command)
