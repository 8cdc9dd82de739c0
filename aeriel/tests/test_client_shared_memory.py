"""System (and CUDA) shared memory through the client, against a real local Triton."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hermes.aeriel import ConnectionFailed, InferenceFailed, Server, serve
from hermes.aeriel.client import InferenceClient
from hermes.aeriel.testing import leftover_resources

MODELS = Path(__file__).parent / "client_models"


def _our_segments() -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").glob(f"hermes_{os.getpid()}_*"))


@pytest.fixture(autouse=True)
def _no_leaked_segments() -> Iterator[None]:
    assert _our_segments() == []
    yield
    assert _our_segments() == []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("client-shm")
    shutil.copytree(MODELS, base / "repo")
    with serve(
        base / "repo", models=["identity", "ens_stream"], log_file=base / "log", exit_timeout_s=2
    ) as srv:
        yield srv
    assert leftover_resources(srv) == []


def test_inputs_and_outputs_travel_through_system_shared_memory(server):
    arrays = [np.random.rand(8, 1024).astype(np.float32) for _ in range(12)]
    with InferenceClient(server.grpc_url, "identity", shared_memory="system", max_in_flight=4) as client:
        # identity's output shape is variable: its size is learned from the first response
        # (in-band), then outputs of that shape go to shared memory as well
        first = client.infer(arrays[0]).result(timeout=30).output
        assert not first.flags.writeable  # a view of the gRPC message
        futures = [client.infer(a) for a in arrays]
        results = [f.result(timeout=30).output for f in futures]
        regions = client.shm_regions
        assert 1 <= len(regions) <= 4  # one slot per request in flight, at most the window
        assert sorted(f"/dev/shm/{r}" for r in regions) == sorted(f"/dev/shm/{s}" for s in _our_segments())
        status = _registered(server)
        assert set(regions) <= status
    for got, want in zip(results, arrays, strict=True):
        np.testing.assert_array_equal(got, want)
        assert got.flags.writeable  # copied out of the slot, which is then reused
    assert not set(regions) & _registered(server)  # unregistered on close


def _registered(server: Server) -> set[str]:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(server.grpc_url) as c:
        status = c.get_system_shared_memory_status(as_json=True)
    return set(status.get("regions", {}))


def test_regions_are_reused_across_requests_and_grown_when_needed(server):
    with InferenceClient(server.grpc_url, "identity", shared_memory="system", max_in_flight=1) as client:
        for _ in range(5):
            client.infer(np.ones((1, 16), np.float32)).result(timeout=30)
        small = client.shm_regions
        for _ in range(3):
            client.infer(np.ones((1, 16), np.float32)).result(timeout=30)
        assert client.shm_regions == small  # same registered region, reused
        big = np.random.rand(256, 1024).astype(np.float32)  # 1 MiB: the slot grows
        np.testing.assert_array_equal(client.infer(big).result(timeout=30).output, big)
        assert len(client.shm_regions) == 1
        assert client.shm_regions != small
        assert len(_our_segments()) == 1  # the old segment was unlinked


def test_streaming_sequence_over_shared_memory(server):
    with InferenceClient(server.grpc_url, "ens_stream", shared_memory="system") as client:
        with client.sequence(77) as seq:
            futures = [seq.send(np.full((1, 3, 2), i, np.float32), end=i == 3) for i in range(4)]
        last = futures[-1].result(timeout=30)
    np.testing.assert_array_equal(last.outputs["out_b"], [[0, 0, 2, 2, 4, 4, 6, 6]])


def test_regions_are_released_after_an_error_response(server):
    with InferenceClient(server.grpc_url, "identity", shared_memory="system") as client:
        with pytest.raises(InferenceFailed, match="refuses -999"):
            client.infer(np.full((1, 4), -999, np.float32)).result(timeout=30)
        np.testing.assert_array_equal(client.infer(np.ones((1, 4), np.float32)).result(timeout=30).output, 1)


def test_regions_are_unlinked_when_the_server_was_killed(tmp_path):
    shutil.copytree(MODELS / "identity", tmp_path / "repo" / "identity")
    srv = serve(tmp_path / "repo", models=["identity"], log_file=tmp_path / "log", exit_timeout_s=2)
    try:
        client = InferenceClient(srv.grpc_url, "identity", shared_memory="system", timeout_s=10)
        client.infer(np.ones((4, 4), np.float32)).result(timeout=30)
        assert len(_our_segments()) == 1
        os.kill(srv.pid, signal.SIGKILL)
        srv.process.wait(timeout=10)
        with pytest.raises(ConnectionFailed):
            client.infer(np.ones((4, 4), np.float32)).result(timeout=15)
        client.close()
        assert _our_segments() == []
    finally:
        srv.close()


@pytest.mark.gpu
def test_cuda_shared_memory_round_trip(server):
    try:
        import tritonclient.utils.cuda_shared_memory as cudashm

        cudashm.destroy_shared_memory_region(cudashm.create_shared_memory_region("probe", 8, 0))
    except Exception as exc:  # no cuda-python, no driver or no device
        pytest.skip(f"no usable CUDA device: {exc}")
    x = np.random.rand(4, 4).astype(np.float32)
    with InferenceClient(server.grpc_url, "identity", shared_memory="cuda") as client:
        np.testing.assert_array_equal(client.infer(x).result(timeout=30).output, x)
