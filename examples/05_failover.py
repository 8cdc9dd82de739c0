"""A stream survives the SIGKILL of its server: replayed elsewhere, no gap, equal to the offline run.

    python examples/05_failover.py

Two local servers serve a streaming ensemble (21 channels, K = 512, stride 8, B = 4, N = 16:
the replay tail is ceil(512 / 32) + ceil(15 / 4) = 20 updates). The stream's server is killed
halfway; the RoutingClient replays the tail on the other server and carries on. Prints the
timeline and checks every output against ``offline_stream``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hermes.aeriel import serve
from hermes.aeriel.routing import Endpoint, RoutingClient
from hermes.quiver import ModelRepository, Platform
from hermes.quiver.streaming import offline_stream

CHANNELS, K, STRIDE, BATCH, NUM_UPDATES, UPDATES = 21, 512, 8, 4, 16, 60
UPDATE = STRIDE * BATCH


def build(root: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    cleaner = torch.nn.Sequential(torch.nn.Conv1d(CHANNELS, 1, kernel_size=9, padding=4), torch.nn.Flatten(1))
    repo = ModelRepository(root)
    net = repo.add("cleaner", platform=Platform.TORCHSCRIPT)
    net.config.add_input("INPUT__0", [BATCH, CHANNELS, K])
    net.config.add_output("OUTPUT__0", [BATCH, K])
    net.export_version(cleaner.eval(), example_inputs=[torch.randn(BATCH, CHANNELS, K)])
    ensemble = repo.add("clean-stream", platform=Platform.ENSEMBLE)
    ensemble.add_streaming_inputs(net.inputs["INPUT__0"], stride=STRIDE, batch_size=BATCH, key="witness")
    ensemble.add_streaming_output(
        net.outputs["OUTPUT__0"], stride=STRIDE, num_updates=NUM_UPDATES, key="noise"
    )
    ensemble.export_version()
    return cleaner


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cleaner = build(root / "repo")
        servers = [serve(root / "repo", models=["clean-stream"], log_file=root / f"{i}.log") for i in (0, 1)]
        try:
            endpoints = [Endpoint.from_server(s, name=f"server-{i}") for i, s in enumerate(servers)]
            witness = (
                np.random.default_rng(0).standard_normal((CHANNELS, UPDATE * UPDATES)).astype(np.float32)
            )
            t0 = time.monotonic()
            stamp = lambda: f"{time.monotonic() - t0:7.3f} s"  # noqa: E731
            with RoutingClient(endpoints, "clean-stream") as client:
                seq = client.sequence(7)
                print(
                    f"{stamp()}  sequence 7 starts on {seq.endpoint}; replay tail {client.replay.updates} updates"
                )
                futures = []
                for u in range(UPDATES):
                    if u == UPDATES // 2:
                        futures[-1].result()
                        servers[int(seq.endpoint[-1])].process.kill()
                        print(f"{stamp()}  SIGKILL {seq.endpoint} after update {u - 1}")
                        killed = time.monotonic()
                    futures.append(
                        seq.send(
                            {"witness": witness[None, :, u * UPDATE : (u + 1) * UPDATE]}, end=u == UPDATES - 1
                        )
                    )
                    if u == UPDATES // 2:
                        futures[-1].result()
                        event = seq.failovers[-1]
                        print(f"{stamp()}  moved to {seq.endpoint}: {event.replayed} updates replayed, "
                              f"{event.resent} resent; update {u} answered {time.monotonic() - killed:.3f} s after the kill")  # fmt: skip
                served = np.concatenate([f.result()["noise"][0] for f in futures])
                print(f"{stamp()}  stream ended: {len(futures)} updates, {served.size} samples, no gap")
            expected = offline_stream(cleaner, witness, kernel_size=K, stride=STRIDE, batch_size=BATCH,
                                      num_updates=NUM_UPDATES)  # fmt: skip
            error = float(np.abs(served - expected).max())
            assert error < 1e-4, error
            print(f"{stamp()}  max |served - offline| = {error:.1e} over the whole stream")
        finally:
            for s in servers:
                s.close()


if __name__ == "__main__":
    main()
