"""A sweep's results as a table, a CSV file and a plot."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from hermes.aeriel.profile._run import Measurement

__all__ = ["format_table", "plot", "rows", "write_csv"]

COLUMNS = (
    "streams", "in_flight", "instances", "requests", "data_s_per_s", "requests_per_s", "p50_ms", "p99_ms",
    "client_cpu_us", "server_cpu_us", "floor_data_s_per_s", "ratio_to_floor", "server_split_us",
)  # fmt: skip


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def rows(results: Sequence[Measurement]) -> list[dict[str, object]]:
    """One dict per measurement, keyed by :data:`COLUMNS`."""
    out: list[dict[str, object]] = []
    for m in results:
        out.append({
            "streams": m.streams, "in_flight": m.in_flight, "instances": m.instances, "requests": m.requests,
            "data_s_per_s": m.data_rate, "requests_per_s": m.requests_per_s, "p50_ms": m.latency_ms(50),
            "p99_ms": m.latency_ms(99), "client_cpu_us": m.client_cpu_us, "server_cpu_us": m.server_cpu_us,
            "floor_data_s_per_s": m.floor_rate, "ratio_to_floor": m.floor_ratio,
            "server_split_us": " ".join(f"{k}={v:.0f}" for k, v in m.server_split_us.items()),
        })  # fmt: skip
    return out


def format_table(results: Sequence[Measurement]) -> str:
    """A markdown table of the sweep (one row per configuration)."""
    head = [
        "streams", "in flight", "instances", "s data/s", "req/s", "p50 ms", "p99 ms", "client CPU us/req",
        "server CPU us/req", "floor s/s", "ratio", "server split us/req (queue+compute)",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows(results):
        cells = [
            r["streams"], r["in_flight"], r["instances"], r["data_s_per_s"], r["requests_per_s"], r["p50_ms"],
            r["p99_ms"], r["client_cpu_us"], r["server_cpu_us"], r["floor_data_s_per_s"], r["ratio_to_floor"],
            r["server_split_us"] or "-",
        ]  # fmt: skip
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    return "\n".join(lines)


def write_csv(path: str | Path, results: Sequence[Measurement]) -> None:
    """Write the sweep as CSV (columns :data:`COLUMNS`)."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows(results):
            writer.writerow({k: "" if v is None else v for k, v in r.items()})


def plot(path: str | Path, results: Sequence[Measurement], title: str) -> None:
    """Seconds of data per second and p99 latency against streams, one line per (in flight, instances).

    Raises:
        ImportError: matplotlib is missing (names the extra).
    """
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - the dev environment has it
        raise ImportError("--plot needs matplotlib: pip install matplotlib") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate_ax, latency_ax) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    lines: dict[tuple[int, int | None], list[Measurement]] = {}
    for m in results:
        lines.setdefault((m.in_flight, m.instances), []).append(m)
    for (in_flight, instances), points in sorted(lines.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        points = sorted(points, key=lambda m: m.streams)
        label = f"{in_flight} in flight" + (f", {instances} instance(s)" if instances else "")
        x = [m.streams for m in points]
        rate_ax.plot(x, [m.data_rate for m in points], marker="o", label=label)
        latency_ax.plot(x, [m.latency_ms(99) for m in points], marker="o", label=label)
        floors = [m.floor_rate for m in points if m.floor_rate]
        if floors:
            rate_ax.axhline(max(floors), ls="--", lw=0.8, color="gray")
    rate_ax.set_xlabel("concurrent streams")
    rate_ax.set_ylabel("seconds of data per second")
    rate_ax.set_title(f"{title}: throughput (dashed: in-process floor)")
    latency_ax.set_xlabel("concurrent streams")
    latency_ax.set_ylabel("p99 latency (ms)")
    latency_ax.set_title("latency")
    rate_ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
