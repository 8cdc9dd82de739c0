"""What the demo measured (:class:`DemoReport`) and the records it writes: summary, CSV, arrays, figure."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from deepclean_demo.config import SAMPLE_RATE_HZ, DemoConfig
from deepclean_demo.stages import StreamPlan

__all__ = ["DemoReport", "figure", "summary_json", "write_records"]


@dataclasses.dataclass
class DemoReport:
    """What the demo measured; ``summary()`` formats it."""

    config: DemoConfig
    seconds_of_data: float
    wall_s: float
    stream_wall_s: float
    requests: int
    latencies_s: list[float]
    max_abs_error: float
    reference_scale: float
    passed: bool
    noise_reduction_db: float
    export_report: str
    server_ready_s: float
    files: dict[str, str]
    floor_rate: float | None = None

    @property
    def data_rate(self) -> float:
        """Seconds of data processed per second of wall time (all streams)."""
        return self.seconds_of_data / self.stream_wall_s

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.stream_wall_s

    @property
    def floor_ratio(self) -> float | None:
        """Served seconds of data per second over the network's in-process rate on the same windows."""
        return self.data_rate / self.floor_rate if self.floor_rate else None

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1e3) if self.latencies_s else float("nan")

    def _floor_text(self) -> str:
        if not self.floor_rate or self.floor_ratio is None:
            return "not measured"
        return (
            f"the network in-process on the same windows runs {self.floor_rate:.2f} s of data per second; "
            f"served / floor = {self.floor_ratio:.2f}"
        )

    def summary(self) -> str:
        c = self.config
        mode = "as fast as possible" if c.rate is None else f"at {c.rate:g}x real time"
        lines = [
            f"hermes demo: {c.streams} streams x {c.seconds:g} s of 21 witness channels at 4096 Hz, {mode}",
            f"  {'fused model' if c.form == 'fused' else 'ensemble'}: snapshotter (K={c.kernel_size}, stride "
            f"{c.stride}, B={c.batch_size}) -> network -> online averager (N={c.num_updates}, delay "
            f"{(c.num_updates - 1) * c.stride} samples)",
            f"  server ready in {self.server_ready_s:.2f} s; streamed in {self.stream_wall_s:.2f} s "
            f"(whole demo {self.wall_s:.1f} s)",
            f"  data rate:    {self.data_rate:.2f} s of data per second ({self.data_rate / c.streams:.2f}x "
            "real time per stream)",
            f"  floor:        {self._floor_text()}",
            f"  requests/s:   {self.requests_per_s:.1f} ({self.requests} requests)",
            f"  latency:      p50 {self.percentile_ms(50):.2f} ms, p99 {self.percentile_ms(99):.2f} ms",
            f"  max |served - offline|: {self.max_abs_error:.3g} (outputs up to {self.reference_scale:.3g}; "
            f"tolerance atol {c.atol:g} + rtol {c.rtol:g})  -> {'PASS' if self.passed else 'FAIL'}",
            f"  noise removed from the strain: {self.noise_reduction_db:.1f} dB",
            "  export " + self.export_report.strip().replace("\n", "\n  "),
            "  files: " + ", ".join(f"{k} {v}" for k, v in self.files.items()),
        ]
        return "\n".join(lines)


def figure(
    path: Path, record: dict[str, Any], plan: StreamPlan, latencies_s: list[float], delay: int
) -> float:
    """Draw raw strain, estimated noise, cleaned strain and latencies to ``path``; return the dB removed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = plan.stream(record["stream"])
    served = record["served"]
    # served[t] estimates the noise at input time t - delay
    estimate = served[delay:]
    strain = data.strain[: estimate.size]
    truth = data.noise[: estimate.size]
    cleaned = strain - estimate
    skip = min(plan.kernel_size, estimate.size // 2)  # past the zero initial state
    reduction = 10 * np.log10(np.var(strain[skip:]) / max(np.var(cleaned[skip:]), 1e-30))
    t = np.arange(strain.size) / SAMPLE_RATE_HZ
    window = slice(skip, min(skip + SAMPLE_RATE_HZ // 4, strain.size))
    fig, axes = plt.subplots(4, 1, figsize=(10, 11), constrained_layout=True)
    axes[0].plot(t[window], strain[window], lw=0.6, color="tab:gray")
    axes[0].set_title(f"raw strain (stream {record['stream']})")
    axes[1].plot(t[window], truth[window], lw=0.8, label="true coupled noise")
    axes[1].plot(t[window], estimate[window], lw=0.8, ls="--", label="estimated by the served network")
    axes[1].legend(loc="upper right")
    axes[1].set_title("noise")
    axes[2].plot(t[window], strain[window], lw=0.5, color="tab:gray", alpha=0.6, label="raw")
    axes[2].plot(t[window], cleaned[window], lw=0.7, color="tab:green", label="cleaned")
    axes[2].legend(loc="upper right")
    axes[2].set_title(f"cleaned strain ({reduction:.1f} dB less variance)")
    axes[2].set_xlabel("time (s)")
    axes[3].hist(np.asarray(latencies_s) * 1e3, bins=50, color="tab:blue")
    axes[3].set_xlabel("request latency (ms), client send to receive")
    axes[3].set_ylabel("requests")
    axes[3].set_title("latency")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return float(reduction)


def write_records(out: Path, records: list[dict[str, Any]]) -> dict[str, str]:
    """Write every request's latency (CSV) and the served and offline outputs (npz); return their paths."""
    csv_path = out / "requests.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["stream", "update", "latency_ms"])
        for r in records:
            for u, lat in enumerate(r["latencies_s"]):
                writer.writerow([r["stream"], u, f"{lat * 1e3:.4f}"])
    arrays = out / "outputs.npz"
    np.savez_compressed(
        arrays,
        **{f"served_{r['stream']}": r["served"] for r in records},
        **{f"offline_{r['stream']}": r["reference"] for r in records},
    )
    return {"summary": str(out / "summary.json"), "requests": str(csv_path), "outputs": str(arrays)}


def summary_json(report: DemoReport) -> dict[str, Any]:
    """The report as JSON-ready values (written to ``summary.json``)."""
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(report.config).items()}
    return {
        "config": config,
        "passed": report.passed,
        "seconds_of_data": report.seconds_of_data,
        "stream_wall_s": report.stream_wall_s,
        "wall_s": report.wall_s,
        "data_seconds_per_second": report.data_rate,
        "requests": report.requests,
        "requests_per_s": report.requests_per_s,
        "latency_p50_ms": report.percentile_ms(50),
        "latency_p99_ms": report.percentile_ms(99),
        "form": report.config.form,
        "floor_data_seconds_per_second": report.floor_rate,
        "ratio_to_floor": report.floor_ratio,
        "max_abs_error": report.max_abs_error,
        "reference_scale": report.reference_scale,
        "noise_reduction_db": report.noise_reduction_db,
        "server_ready_s": report.server_ready_s,
        "export_verification": report.export_report,
        "files": report.files,
    }
