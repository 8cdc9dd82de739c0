"""The asyncio client against a real local Triton."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hermes.aeriel import (
    ClientClosedError,
    ConnectionFailed,
    InputValidationError,
    SequenceError,
    Server,
    serve,
)
from hermes.aeriel.client import AsyncInferenceClient
from hermes.aeriel.testing import leftover_resources

MODELS = Path(__file__).parent / "client_models"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("client-aio")
    shutil.copytree(MODELS, base / "repo")
    with serve(
        base / "repo", models=["identity", "ens_stream"], log_file=base / "log", exit_timeout_s=2
    ) as srv:
        yield srv
    assert leftover_resources(srv) == []


async def test_async_sequences_run_concurrently_and_keep_order(server):
    async with AsyncInferenceClient(server.grpc_url, "ens_stream", max_in_flight=4) as client:
        assert client.streams[0].snapshotter == "snapshotter"

        async def run(sid: int) -> list[np.ndarray]:
            futures = []
            async with client.sequence(sid) as seq:
                for i in range(5):
                    futures.append(await seq.send(np.full((1, 3, 2), sid + i, np.float32), end=i == 4))
            return [(await f).outputs["out_b"] for f in futures]

        got = await asyncio.gather(*(run(sid) for sid in (10, 20, 30)))
        assert client.latency.count == 15
    for sid, outs in zip((10, 20, 30), got, strict=True):
        values = [sid + i for i in range(5)]
        np.testing.assert_array_equal(outs[-1][0, -2:], [2 * values[-1]] * 2)
        np.testing.assert_array_equal(outs[-1][0, :2], [2 * values[1]] * 2)


async def test_async_stateless_requests_with_shared_memory(server):
    segments = f"hermes_{os.getpid()}_*"
    async with AsyncInferenceClient(server.grpc_url, "identity", shared_memory="system") as client:
        arrays = [np.random.rand(4, 256).astype(np.float32) for _ in range(10)]
        futures = [await client.infer(a) for a in arrays]
        for array, future in zip(arrays, futures, strict=True):
            np.testing.assert_array_equal((await future).output, array)
        assert len(client.shm_regions) >= 1
    assert list(Path("/dev/shm").glob(segments)) == []


async def test_async_validation_and_misuse(server):
    async with AsyncInferenceClient(server.grpc_url, "ens_stream") as client:
        with pytest.raises(InputValidationError, match=r"expected \[-1, 3, 2\]"):
            async with client.sequence(1) as seq:
                await seq.send(np.zeros((1, 2, 2), np.float32))
        seq = client.sequence(2)
        await (await seq.send(np.zeros((1, 3, 2), np.float32), end=True))
        with pytest.raises(SequenceError, match="already ended"):
            await seq.send(np.zeros((1, 3, 2), np.float32))
        stats = await client.warm_up(n=3)
        assert stats.count == 3
    with pytest.raises(ClientClosedError):
        await client.infer(np.zeros((1, 3, 2), np.float32))


async def test_async_client_fails_pending_requests_when_the_server_dies(tmp_path):
    shutil.copytree(MODELS / "identity", tmp_path / "repo" / "identity")
    srv = serve(tmp_path / "repo", models=["identity"], log_file=tmp_path / "log", exit_timeout_s=2)
    try:
        async with AsyncInferenceClient(srv.grpc_url, "identity", timeout_s=20) as client:
            await (await client.infer(np.ones((1, 2), np.float32)))
            os.kill(srv.pid, signal.SIGSTOP)
            futures = [await client.infer(np.ones((1, 2), np.float32)) for _ in range(5)]
            os.kill(srv.pid, signal.SIGKILL)
            for future in futures:
                with pytest.raises(ConnectionFailed, match=srv.grpc_url):
                    await asyncio.wait_for(future, 15)
            assert client.in_flight == 0
    finally:
        srv.close()
