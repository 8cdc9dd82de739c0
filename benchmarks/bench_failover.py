"""Streams that survive: recovery time after a server's death, and the cost of keeping the tail.

A DeepClean-shaped stream (21 witness channels, K = 4096, stride 8, B = 8, N = 256: the tail is
``ceil(4096 / 64) + ceil(255 / 8)`` = 96 updates, 6,144 samples, 516 KB of float32) goes through
two local Triton servers with a ``RoutingClient``:

* **recovery after SIGKILL**: the stream runs paced (4 updates in flight); its server is killed;
  the figure is the time from the kill to the next answered update (which the new server gives
  after replaying the tail), against the median time between answers before the kill.
* **planned move** (``rebuild()``, what a drain or a swap does): time from the call to the next
  answer, against the same baseline.
* **throughput cost of the tail**: updates/s of one stream with failover on vs ``failover=False``
  on the same server, side by side.

    python benchmarks/run.py --only failover [--quick]
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np

TOPIC = "failover"
CHANNELS, K, STRIDE, BATCH, NUM_UPDATES = 21, 4096, 8, 8, 256
UPDATE = STRIDE * BATCH


def _build(root: Path) -> None:
    import torch

    from hermes.quiver import ModelRepository, Platform

    class Cleaner(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mix = torch.nn.Conv1d(CHANNELS, 1, kernel_size=7, padding=3)

        def forward(self, witness: torch.Tensor) -> torch.Tensor:
            return self.mix(witness)[:, 0]

    repo = ModelRepository(root)
    net = repo.add("deepclean", platform=Platform.TORCHSCRIPT)
    net.config.add_input("INPUT__0", [BATCH, CHANNELS, K])
    net.config.add_output("OUTPUT__0", [BATCH, K])
    net.config.add_instance_group(kind="cpu", count=1)
    net.export_version(Cleaner().eval(), example_inputs=[torch.randn(BATCH, CHANNELS, K)], verify=False)
    ensemble = repo.add("dc", platform=Platform.ENSEMBLE)
    ensemble.add_streaming_inputs(net.inputs["INPUT__0"], stride=STRIDE, batch_size=BATCH, key="witness")
    ensemble.add_streaming_output(
        net.outputs["OUTPUT__0"], stride=STRIDE, num_updates=NUM_UPDATES, key="noise"
    )
    ensemble.export_version()


def _paced(seq, updates: int, event_at: int | None, event, in_flight: int = 4) -> dict:
    """Send ``updates`` updates with ``in_flight`` unanswered; run ``event()`` before update ``event_at``."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal((1, CHANNELS, UPDATE)).astype(np.float32)
    answered: list[float] = []
    lock = threading.Lock()
    futures: list[Future] = []
    marked = 0.0
    for u in range(updates):
        if u == event_at:
            futures[-1].result(120)
            marked = time.monotonic()
            event()
        fut = seq.send({"witness": data}, end=u == updates - 1)
        fut.add_done_callback(lambda f: (lock.acquire(), answered.append(time.monotonic()), lock.release()))
        futures.append(fut)
        if len(futures) > in_flight:
            futures[-in_flight - 1].result(120)
    for f in futures:
        f.result(120)
    gaps = np.diff(sorted(answered[: max(2, (event_at or updates) - 1)]))
    after = [t for t in sorted(answered) if t > marked] if event_at is not None else []
    return {"step": float(np.median(gaps)), "recovery": (after[0] - marked) if after else float("nan")}


def _row(figure: str, value: float, unit: str, baseline: str, base: float, target: str | None) -> dict:
    return {
        "benchmark": TOPIC, "figure": figure, "value": round(value, 4), "unit": unit, "baseline": baseline,
        "baseline_value": round(base, 4), "ratio": round(value / base, 3) if base else float("nan"), "target": target,
    }  # fmt: skip


def run(quick: bool = False) -> list[dict]:
    """Measure on two local servers; returns the rows (see the module docstring)."""
    from hermes.aeriel.routing import Endpoint, RoutingClient
    from hermes.aeriel.server import serve

    repeats = 1 if quick else 3
    updates = 60 if quick else 200
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        root = Path(tmp)
        _build(root / "repo")
        servers = [
            serve(root / "repo", models=["dc"], log_file=root / f"s{i}.log", exit_timeout_s=2) for i in (0, 1)
        ]
        try:
            kills, moves, steps = [], [], []
            for r in range(repeats):
                eps = [Endpoint.from_server(s, name=f"server-{i}") for i, s in enumerate(servers)]
                with RoutingClient(eps, "dc", watch_interval_s=None) as client:
                    assert client.replay is not None
                    seq = client.sequence(1000 + r)
                    victim = servers[int(seq.endpoint.removeprefix("server-"))]
                    out = _paced(seq, updates, updates // 2, victim.process.kill)
                    kills.append(out["recovery"])
                    steps.append(out["step"])
                    other = client.sequence(2000 + r)
                    moves.append(_paced(other, updates, updates // 2, other.rebuild)["recovery"])
                index = servers.index(victim)
                victim.close()
                servers[index] = serve(
                    root / "repo", models=["dc"], log_file=root / f"s{index}-{r}.log", exit_timeout_s=2
                )
            step = statistics.median(steps)
            rows.append(_row("SIGKILL -> next good output (96-update replay)", statistics.median(kills), "s",
                             "time between answers", step, None))  # fmt: skip
            rows.append(_row("planned move (drain/swap) -> next good output", statistics.median(moves), "s",
                             "time between answers", step, None))  # fmt: skip
            ep = [Endpoint.from_server(servers[0], name="server-0")]
            rates: dict[bool, list[float]] = {True: [], False: []}
            for r in range(repeats):
                for failover in (True, False):
                    with RoutingClient(ep, "dc", failover=failover, watch_interval_s=None) as client:
                        seq = client.sequence(3000 + 2 * r + failover)
                        t0 = time.monotonic()
                        _paced(seq, updates, None, None, in_flight=16)
                        rates[failover].append(updates / (time.monotonic() - t0))
            rows.append(_row("updates/s of one stream keeping a 96-update tail", statistics.median(rates[True]),
                             "upd/s", "failover=False", statistics.median(rates[False]), ">= 0.95"))  # fmt: skip
        finally:
            for s in servers:
                s.close()
    return rows
