"""A DeepClean-shaped streaming ensemble (21 channels, K = 4096, stride 8, B = 8) on the real server.

The network is tiny (a 1*1 convolution across the witness channels) so the check is about
the streaming models: ONNX snapshotter and online averager with implicit state. The mean
server-side time per update (Triton's statistics API) is recorded as a test property.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from hermes.aeriel import Server  # noqa: E402
from hermes.quiver import ModelRepository, Platform  # noqa: E402
from hermes.quiver.streaming import offline_stream  # noqa: E402

from ._streaming_client import compute_ns_per_request, stream_sequences  # noqa: E402

CHANNELS, K, STRIDE, BATCH, NUM_UPDATES, UPDATES = 21, 4096, 8, 8, 64, 96


class Cleaner(torch.nn.Module):
    """Witnesses ``(B, 21, K)`` → noise estimate ``(B, K)``."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = torch.nn.Conv1d(CHANNELS, 1, kernel_size=1)

    def forward(self, witness: torch.Tensor) -> torch.Tensor:
        return self.mix(witness)[:, 0]


def test_deepclean_shaped_ensemble_streams_the_offline_reference(
    triton_repo: Path, start_triton: Callable[..., Server], record_property: Callable[[str, object], None]
) -> None:
    cleaner = Cleaner().eval()
    repo = ModelRepository(triton_repo)
    net = repo.add("deepclean", platform=Platform.TORCHSCRIPT)
    net.config.add_input("INPUT__0", [BATCH, CHANNELS, K])
    net.config.add_output("OUTPUT__0", [BATCH, K])
    net.config.add_instance_group(kind="cpu", count=1)
    net.export_version(cleaner, example_inputs=[torch.randn(BATCH, CHANNELS, K)])
    ensemble = repo.add("deepclean-stream", platform=Platform.ENSEMBLE)
    group = ensemble.add_streaming_inputs(
        net.inputs["INPUT__0"], stride=STRIDE, batch_size=BATCH, key="witness"
    )
    output = ensemble.add_streaming_output(
        net.outputs["OUTPUT__0"], stride=STRIDE, num_updates=NUM_UPDATES, key="noise"
    )
    ensemble.export_version()
    assert group.update_shape == (1, CHANNELS, STRIDE * BATCH)
    assert (output.delay, output.zero_state_updates) == ((NUM_UPDATES - 1) * STRIDE, 8)
    assert output.averager.spec.zero_state_updates_after(group.snapshotter.spec) == 72  # ceil((511 + 63) / 8)

    server = start_triton(triton_repo, models=["deepclean-stream"])
    witness = np.random.randn(CHANNELS, STRIDE * BATCH * UPDATES).astype(np.float32)
    size = STRIDE * BATCH
    got = stream_sequences(
        server.grpc_url, "deepclean-stream", "noise",
        {7: [{"witness": witness[None, :, u * size : (u + 1) * size]} for u in range(UPDATES)]},
    )  # fmt: skip
    served = np.concatenate(got[7], axis=-1)[0]
    expected = offline_stream(
        cleaner, witness, kernel_size=K, stride=STRIDE, batch_size=BATCH, num_updates=NUM_UPDATES
    )
    assert served.shape == expected.shape == (STRIDE * BATCH * UPDATES,)
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)

    count, ns = compute_ns_per_request(server.grpc_url, "deepclean-stream")
    assert count == UPDATES
    record_property("server_ms_per_update", round(ns / 1e6, 3))
    for member in ("snapshotter", "deepclean", "aggregator"):
        member_count, member_ns = compute_ns_per_request(server.grpc_url, member)
        assert member_count == UPDATES
        record_property(f"{member}_ms_per_update", round(member_ns / 1e6, 3))
