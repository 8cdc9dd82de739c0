"""The one client protocol: InferenceClient, RoutingClient and AsyncInferenceClient against real servers.

The same code, written against ``SyncClient`` only, streams through one server and through
two; the asyncio client answers the same names with coroutines.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator

import numpy as np
import pytest

from hermes.aeriel import SequenceError
from hermes.aeriel.client import (
    AsyncInferenceClient,
    InferenceClient,
    Result,
    SequenceLike,
    StreamingClient,
    SyncClient,
)
from hermes.aeriel.control import ModelManager
from hermes.aeriel.routing import Endpoint, RoutingClient

from .test_routing import ONES, server_group


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list]:
    """Two servers with ``acc`` (stateful running sum) and ``where`` (stateless x + 1)."""
    with server_group(tmp_path_factory.mktemp("protocol"), 2) as servers:
        yield servers


def endpoints_of(servers: list) -> list[Endpoint]:
    return [Endpoint.from_server(s, name=f"server-{i}") for i, s in enumerate(servers)]


def running_sums(client: SyncClient, ids: list[int], steps: int) -> dict[int, list[Result]]:
    """Stream ``steps`` updates per sequence through any thread-based client, interleaved."""
    seqs = {sid: client.sequence(sid) for sid in ids}
    futures: dict[int, list[concurrent.futures.Future[Result]]] = {sid: [] for sid in ids}
    for step in range(steps):
        for sid, seq in seqs.items():
            future = seq.send({"x": ONES * (sid + step)}, end=step == steps - 1, request_id=f"{sid}/{step}")
            assert isinstance(future, concurrent.futures.Future)  # returned at once, not the result
            futures[sid].append(future)
    return {sid: [f.result(60) for f in fs] for sid, fs in futures.items()}


def check_sums(answers: dict[int, list[Result]]) -> None:
    for sid, results in answers.items():
        expected = np.cumsum([sid + step for step in range(len(results))])
        for step, result in enumerate(results):
            np.testing.assert_array_equal(result["y"], ONES * expected[step])
            assert result.request_id == f"{sid}/{step}"


def test_every_client_and_its_sequences_are_streaming_clients(pair) -> None:
    endpoint = pair[0].grpc_url
    with InferenceClient(endpoint, "acc") as one, RoutingClient(endpoints_of(pair), "acc") as many:
        for client in (one, many):
            assert isinstance(client, StreamingClient)
            seq = client.sequence(5)
            assert isinstance(seq, SequenceLike)
            assert seq.sequence_id == 5
            seq.close()

    async def check_async() -> None:
        async with AsyncInferenceClient(endpoint, "acc") as client:
            assert isinstance(client, StreamingClient)
            seq = client.sequence(6)
            assert isinstance(seq, SequenceLike)
            seq.close()

    asyncio.run(check_async())
    # not every object with a close() is a client
    with ModelManager(endpoints_of(pair)) as manager:
        assert not isinstance(manager, StreamingClient)
    assert not isinstance(np.zeros(3), StreamingClient)


def test_the_same_code_streams_through_one_server_and_through_two(pair) -> None:
    ids = [1, 2, 3, 4, 5, 6, 7, 8]
    with InferenceClient(pair[0].grpc_url, "acc") as one:
        check_sums(running_sums(one, ids, steps=4))
    with RoutingClient(endpoints_of(pair), "acc") as many:
        answers = running_sums(many, ids, steps=4)
        check_sums(answers)
        servers = {int(results[0]["server"][0, 0]) for results in answers.values()}
        assert servers == {0, 1}  # the sequences were spread over both servers
        assert dict(many.sequences_per_endpoint) == {
            name: sum(1 for sid in ids if many.ring.node_for(sid) == name) for name in many.live_endpoints
        }


def test_stateless_infer_returns_a_future_with_the_request_id_on_every_client(pair) -> None:
    with (
        InferenceClient(pair[1].grpc_url, "where") as one,
        RoutingClient(endpoints_of(pair), "where") as many,
    ):
        for client in (one, many):
            futures = [client.infer({"x": ONES * k}, request_id=("r", k)) for k in range(6)]
            assert all(isinstance(f, concurrent.futures.Future) for f in futures)
            results = [f.result(60) for f in futures]
            assert [r.request_id for r in results] == [("r", k) for k in range(6)]
            for k, result in enumerate(results):
                np.testing.assert_array_equal(result["y"], ONES * k + 1)
        assert {int(r["server"][0, 0]) for r in [many.infer({"x": ONES}).result(60) for _ in range(4)]} == {
            0,
            1,
        }


def test_the_asyncio_client_answers_the_same_names_with_coroutines(pair) -> None:
    async def stream() -> dict[int, list[Result]]:
        async with AsyncInferenceClient(pair[0].grpc_url, "acc") as client:
            seqs = {sid: client.sequence(sid) for sid in (3, 4)}
            futures: dict[int, list[asyncio.Future[Result]]] = {sid: [] for sid in seqs}
            for step in range(3):
                for sid, seq in seqs.items():
                    future = await seq.send(
                        {"x": ONES * (sid + step)}, end=step == 2, request_id=f"{sid}/{step}"
                    )
                    assert isinstance(future, asyncio.Future)
                    futures[sid].append(future)
            return {sid: list(await asyncio.gather(*fs)) for sid, fs in futures.items()}

    check_sums(asyncio.run(stream()))


def test_a_routing_sequence_has_no_second_verb(pair) -> None:
    with RoutingClient(endpoints_of(pair), "acc") as client:
        seq = client.sequence(9)
        assert not hasattr(seq, "infer") and not hasattr(seq, "end")
        assert not hasattr(client, "submit")
        np.testing.assert_array_equal(seq.send({"x": ONES}, end=True).result(60)["y"], ONES)


def test_leaving_a_sequence_block_without_end_raises_on_every_client(pair) -> None:
    with InferenceClient(pair[0].grpc_url, "acc") as one, RoutingClient(endpoints_of(pair), "acc") as many:
        for client in (one, many):
            with (
                pytest.raises(SequenceError, match="left its block without END; send the last update with"),
                client.sequence(30) as seq,
            ):
                seq.send({"x": ONES}).result(60)
            # the id is free again and its state starts afresh
            with client.sequence(30) as seq:
                np.testing.assert_array_equal(seq.send({"x": ONES * 2}, end=True).result(60)["y"], ONES * 2)
            with pytest.raises(KeyError), client.sequence(31):
                raise KeyError("an error inside the block abandons the sequence")
            with client.sequence(31) as seq:  # and frees its id
                np.testing.assert_array_equal(seq.send({"x": ONES}, end=True).result(60)["y"], ONES)
