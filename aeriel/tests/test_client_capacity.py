"""Sequence capacity and version switching against a real local Triton.

One server holds a quiver streaming ensemble (ONNX snapshotter → network → averager, one slot:
``instances=1``, ``sequences_per_instance=1``) and a stateless model with two versions.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from hermes.aeriel import SequenceError, Server, serve  # noqa: E402
from hermes.aeriel.client import AsyncInferenceClient, InferenceClient  # noqa: E402
from hermes.aeriel.testing import leftover_resources  # noqa: E402
from hermes.quiver import ModelRepository, Platform  # noqa: E402

MODELS = Path(__file__).parent / "client_models"
K, STRIDE, BATCH, NUM_UPDATES = 8, 2, 2, 2
UPDATE = STRIDE * BATCH


class Double(torch.nn.Module):
    """Windows ``(B, 1, K)`` → predictions ``(B, K)``: twice the window."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * x[:, 0]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("client-capacity")
    repo = ModelRepository(base / "repo")
    net = repo.add("net", platform=Platform.ONNX)
    net.config.add_input("x", [BATCH, 1, K])
    net.config.add_output("y", [BATCH, K])
    net.export_version(Double().eval(), example_inputs=[torch.randn(BATCH, 1, K)])
    ensemble = repo.add("stream", platform=Platform.ENSEMBLE)
    ensemble.add_streaming_inputs(net.inputs["x"], stride=STRIDE, batch_size=BATCH, key="update")
    ensemble.add_streaming_output(net.outputs["y"], stride=STRIDE, num_updates=NUM_UPDATES, key="averaged")
    ensemble.export_version()
    # a stateless model serving two versions
    shutil.copytree(MODELS / "identity", base / "repo" / "identity")
    shutil.copytree(MODELS / "identity" / "1", base / "repo" / "identity" / "2")
    config = base / "repo" / "identity" / "config.pbtxt"
    config.write_text(config.read_text() + "version_policy: { all: {} }\n")
    with serve(base / "repo", models=["stream", "identity"], log_file=base / "log", exit_timeout_s=2) as srv:
        yield srv
    assert leftover_resources(srv) == []


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leaked = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
    assert leaked == [], f"threads left behind: {leaked}"


def _run(seq, data: np.ndarray) -> np.ndarray:
    """Send ``data (1, n * UPDATE)`` as n updates (the last with END); the averaged output."""
    n = data.shape[-1] // UPDATE
    futures = [seq.send(data[None, :, u * UPDATE : (u + 1) * UPDATE], end=u == n - 1) for u in range(n)]
    return np.concatenate([f.result(timeout=30).outputs["averaged"] for f in futures], axis=-1)


def test_client_discovers_the_smallest_max_sequences_of_a_quiver_ensemble(server):
    with InferenceClient(server.grpc_url, "stream") as client:
        assert client.max_sequences == 1
        assert client.signature.max_sequences == 1
    with InferenceClient(server.grpc_url, "identity") as client:
        assert client.max_sequences is None


def test_opening_one_sequence_more_than_max_sequences_raises_naming_the_limit_and_the_fix(server):
    data = np.random.rand(1, 3 * UPDATE).astype(np.float32)
    with InferenceClient(server.grpc_url, "stream") as client:
        with client.sequence(1) as first:
            assert client.live_sequences == 1
            with pytest.raises(SequenceError) as info:
                client.sequence(2)
            first_out = _run(first, data)
        message = str(info.value)
        assert "at most 1 live sequence(s) (max_sequences=1)" in message
        assert "instances=N, sequences_per_instance=M" in message
        assert "add_streaming_inputs" in message and "add_streaming_output" in message
        # the refused id was not counted live, and ending the first frees its slot
        assert client.live_sequences == 0
        with client.sequence(2) as second:
            second_out = _run(second, data)
    # the freed slot starts from fresh state: same data, same outputs (2 x the running average)
    np.testing.assert_allclose(second_out, first_out, rtol=1e-6)
    assert first_out.shape == (1, 3 * UPDATE)
    assert first_out[0, -1] == pytest.approx(2.0 * data[0, -1 - (NUM_UPDATES - 1) * STRIDE], rel=1e-5)


def test_a_sequence_closed_without_end_also_frees_its_place(server):
    with InferenceClient(server.grpc_url, "stream") as client:
        seq = client.sequence(7)
        seq.close()
        assert client.live_sequences == 0
        with client.sequence(8) as other:
            out = _run(other, np.ones((1, UPDATE), np.float32))
    assert out.shape == (1, UPDATE)


async def test_async_client_refuses_one_sequence_more_than_max_sequences(server):
    async with AsyncInferenceClient(server.grpc_url, "stream") as client:
        assert client.max_sequences == 1
        async with client.sequence(1) as seq:
            with pytest.raises(SequenceError, match=r"at most 1 live sequence\(s\) \(max_sequences=1\)"):
                client.sequence(2)
            future = await seq.send(np.ones((1, 1, UPDATE), np.float32), end=True)
        assert (await future).outputs["averaged"].shape == (1, UPDATE)
        async with client.sequence(2) as seq:
            await (await seq.send(np.ones((1, 1, UPDATE), np.float32), end=True))
        assert client.live_sequences == 0


def test_setting_model_version_moves_new_requests_and_keeps_live_sequences(server):
    x = np.ones((1, 2), np.float32)
    with InferenceClient(server.grpc_url, "identity", model_version=1) as client:
        assert client.model_version == "1"
        assert client.infer(x).result(timeout=30).model_version == "1"
        client.model_version = 2
        assert client.model_version == "2"
        assert client.infer(x).result(timeout=30).model_version == "2"
        client.model_version = -1
        assert client.model_version == ""
        assert client.infer(x).result(timeout=30).model_version == "2"  # the latest
    with InferenceClient(server.grpc_url, "stream") as client, client.sequence(3) as seq:
        client.model_version = "1"
        assert (seq.model_version, client.model_version) == ("", "1")
        result = seq.send(np.ones((1, 1, UPDATE), np.float32), end=True).result(timeout=30)
        assert result.model_version == "1"


class _Boom(Exception):
    pass


def test_an_exception_inside_a_sequence_ends_it_on_the_server_so_the_next_one_does_not_stall(server):
    # Issue 16 item 1: the abandoned sequence held the ensemble's only slot until the idle
    # timeout (60 s), and the next sequence's first request waited that long without an error.
    data = np.random.rand(1, 3 * UPDATE).astype(np.float32)
    with InferenceClient(server.grpc_url, "stream") as client:
        with pytest.raises(_Boom), client.sequence(1) as seq:
            seq.send(data[None, :, :UPDATE]).result(timeout=30)
            raise _Boom
        assert client.live_sequences == 0
        with client.sequence(2) as second:
            second_out = _run(second, data)  # each result(timeout=30), far below the 60 s idle timeout
        with client.sequence(3) as third:
            third_out = _run(third, data)
    # the fresh sequence started from fresh state: the same data gives the same outputs
    np.testing.assert_allclose(second_out, third_out, rtol=1e-6)


def test_a_duplicate_sequence_id_error_ends_the_outer_sequence_on_the_server(server):
    data = np.ones((1, 1, UPDATE), np.float32)
    with InferenceClient(server.grpc_url, "stream") as client:
        with pytest.raises(SequenceError, match="already live"), client.sequence(4) as seq:
            seq.send(data)
            client.sequence(4)
        with client.sequence(5) as other:
            result = other.send(data, end=True).result(timeout=30)
    assert result.outputs["averaged"].shape == (1, UPDATE)


def test_closing_a_started_sequence_early_sends_end_to_free_its_slot(server):
    seen: list[object] = []
    data = np.ones((1, 1, UPDATE), np.float32)
    with InferenceClient(server.grpc_url, "stream", callback=lambda r, e: seen.append(r or e)) as client:
        seq = client.sequence(6)
        seq.send(data).result(timeout=30)
        seq.close()
        with client.sequence(7) as other:
            other.send(data, end=True).result(timeout=30)
        client.wait_all(timeout_s=30)
    ids = [getattr(r, "request_id", None) for r in seen]
    assert "end-of-abandoned-sequence-6" in ids


async def test_async_sequence_left_on_an_exception_sends_end(server):
    data = np.ones((1, 1, UPDATE), np.float32)
    async with AsyncInferenceClient(server.grpc_url, "stream") as client:
        with pytest.raises(_Boom):
            async with client.sequence(1) as seq:
                await (await seq.send(data))
                raise _Boom
        async with client.sequence(2) as seq:
            future = await seq.send(data, end=True)
        result = await asyncio.wait_for(future, 30)
    assert result.outputs["averaged"].shape == (1, UPDATE)
