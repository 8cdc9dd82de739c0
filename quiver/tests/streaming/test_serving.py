"""Streaming ensembles on the real local Triton server, checked against the offline reference.

One server (module scope) serves three things built once:

* ``stream_onnx``: one streaming group (a 3-D and a 2-D tensor) → network → averager, ONNX;
* ``stream_ts``: two named streaming groups (TorchScript, the first with an initial history)
  → the same network → averager (TorchScript);
* ``batched_snapshotter``: a snapshotter holding several sequences per instance (batched state).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from hermes.aeriel import serve  # noqa: E402
from hermes.aeriel.testing import leftover_resources  # noqa: E402
from hermes.quiver import ModelRepository, Platform  # noqa: E402
from hermes.quiver.streaming import (  # noqa: E402
    SequenceOptions,
    SnapshotterSpec,
    StreamingTensor,
    offline_stream,
    sliding_windows,
    write_snapshotter,
)

from ._streaming_client import stream_sequences  # noqa: E402

K, STRIDE, BATCH, NUM_UPDATES = 16, 2, 4, 3
UPDATES = 9


class Net(torch.nn.Module):
    """Windows ``x (B, 3, K)`` and ``aux (B, K)`` → predictions ``(B, K)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(3, 1, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x)[:, 0]) + 0.5 * aux


def _reference(net: Net, data: np.ndarray, history: np.ndarray | None = None) -> np.ndarray:
    def run(windows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            w = torch.from_numpy(np.ascontiguousarray(windows))
            return net(w[:, :3], w[:, 3]).numpy()

    return offline_stream(
        run, data, kernel_size=K, stride=STRIDE, batch_size=BATCH, num_updates=NUM_UPDATES, history=history
    )


class Built:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.net = Net().eval()
        repo = ModelRepository(root)
        # TorchScript exports in a fraction of a second; the streaming models are ONNX and TorchScript
        net = repo.add("net", platform=Platform.TORCHSCRIPT)
        net.config.add_input("INPUT__0", [BATCH, 3, K])
        net.config.add_input("INPUT__1", [BATCH, K])
        net.config.add_output("OUTPUT__0", [BATCH, K])
        net.config.add_instance_group(kind="cpu", count=1)
        net.export_version(self.net, example_inputs=[torch.randn(BATCH, 3, K), torch.randn(BATCH, K)])

        onnx = repo.add("stream_onnx", platform=Platform.ENSEMBLE)
        self.onnx_inputs = onnx.add_streaming_inputs(
            [net.inputs["INPUT__0"], net.inputs["INPUT__1"]], stride=STRIDE, batch_size=BATCH, name="snapshotter",
            instances=2, idle_timeout_s=30,
        )  # fmt: skip
        self.onnx_output = onnx.add_streaming_output(
            net.outputs["OUTPUT__0"], stride=STRIDE, num_updates=NUM_UPDATES, name="averager", instances=2
        )
        onnx.export_version()

        self.history = np.random.randn(3, K).astype(np.float32)
        ts = repo.add("stream_ts", platform=Platform.ENSEMBLE)
        self.ts_strain = ts.add_streaming_inputs(
            net.inputs["INPUT__0"], stride=STRIDE, update_size=STRIDE * BATCH, name="strain_snapshotter",
            key="strain", output_keys=["strain_windows"], platform="torchscript", instances=2,
            initial_state=self.history,
        )  # fmt: skip
        self.ts_aux = ts.add_streaming_inputs(
            net.inputs["INPUT__1"], stride=STRIDE, batch_size=BATCH, name="aux_snapshotter", key="aux",
            output_keys=["aux_windows"], platform="torchscript", instances=2,
        )  # fmt: skip
        self.ts_output = ts.add_streaming_output(
            net.outputs["OUTPUT__0"], stride=STRIDE, num_updates=NUM_UPDATES, name="ts_averager", key="cleaned",
            platform=Platform.TORCHSCRIPT, instances=2,
        )  # fmt: skip
        ts.export_version()

        self.batched_spec = SnapshotterSpec(
            tensors=(StreamingTensor(name="windows", channels=2),), kernel_size=12, stride=3, batch_size=2
        )
        write_snapshotter(
            root / "batched_snapshotter", self.batched_spec,
            sequence=SequenceOptions(sequences_per_instance=4, max_queue_delay_us=1000),
        )  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return Built(tmp_path_factory.mktemp("streaming") / "repo")


@pytest.fixture(scope="module")
def url(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("logs") / "tritonserver.log"
    server = serve(
        built.root,
        models=["stream_onnx", "stream_ts", "batched_snapshotter"], log_file=log, exit_timeout_s=20,
    )  # fmt: skip
    try:
        yield server.grpc_url
    finally:
        server.close()
        assert leftover_resources(server) == []


def _updates(data: np.ndarray, size: int) -> list[np.ndarray]:
    return [data[None, :, u * size : (u + 1) * size] for u in range(data.shape[-1] // size)]


def test_streaming_ensemble_matches_offline_reference_for_two_interleaved_sequences(
    built: Built, url: str
) -> None:
    size = STRIDE * BATCH
    data = {11: np.random.randn(4, size * UPDATES).astype(np.float32),
            22: np.random.randn(4, size * UPDATES).astype(np.float32)}  # fmt: skip
    assert built.onnx_inputs.update_shape == (1, 4, size)
    got = stream_sequences(
        url, "stream_onnx", built.onnx_output.output.name,  # 2 sequences <= 2 slots per stateful model
        {sid: [{built.onnx_inputs.input.name: u} for u in _updates(x, size)] for sid, x in data.items()},
    )  # fmt: skip
    for sid, x in data.items():
        served = np.concatenate(got[sid], axis=-1)
        assert served.shape == (1, size * UPDATES)
        np.testing.assert_allclose(served[0], _reference(built.net, x), rtol=1e-5, atol=1e-6)
    # the two sequences do not mix: swapping their data changes every output after warm-up
    assert not np.allclose(np.concatenate(got[11], -1), np.concatenate(got[22], -1))


def test_torchscript_groups_with_initial_history_match_offline_reference(built: Built, url: str) -> None:
    size = STRIDE * BATCH
    data = {5: np.random.randn(4, size * UPDATES).astype(np.float32),
            6: np.random.randn(4, size * UPDATES).astype(np.float32)}  # fmt: skip
    assert built.ts_strain.zero_state_updates == 0
    assert built.ts_aux.zero_state_updates == 2  # ceil((ceil(16 / 2) - 1) / 4)
    assert built.ts_output.delay == (NUM_UPDATES - 1) * STRIDE == 4
    history = np.concatenate([built.history, np.zeros((1, K), np.float32)])
    # one request carries both groups' updates
    responses = stream_sequences(
        url, "stream_ts", "cleaned",
        {sid: [{"strain": u[:, :3], "aux": u[:, 3:]} for u in _updates(x, size)] for sid, x in data.items()},
    )  # fmt: skip
    for sid, x in data.items():
        served = np.concatenate(responses[sid], axis=-1)[0]
        np.testing.assert_allclose(served, _reference(built.net, x, history), rtol=1e-5, atol=1e-6)


def test_batched_snapshotter_serves_several_sequences_per_instance(built: Built, url: str) -> None:
    spec = built.batched_spec
    data = {sid: np.random.randn(2, spec.update_size * 5).astype(np.float32) for sid in (1, 2, 3)}
    got = stream_sequences(
        url, "batched_snapshotter", "windows",
        {sid: [{"update": u} for u in _updates(x, spec.update_size)] for sid, x in data.items()},
    )  # fmt: skip
    for sid, x in data.items():
        windows = np.concatenate([w[0] for w in got[sid]])  # each response is (1, B, C, K)
        np.testing.assert_array_equal(windows, sliding_windows(x, kernel_size=12, stride=3))
