"""InferenceStage against a real local Triton (python-backend stateful ensemble)."""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("hermes.aeriel.client")

from hermes.stillwater import ArraySpec, Source
from hermes.stillwater.exceptions import StageFailed
from hermes.stillwater.inference import InferenceRequest, InferenceStage

MODELS = Path(__file__).parent / "models"


def _windows(updates: list[np.ndarray]) -> list[np.ndarray]:
    """The (1, 2, 8) window after each update, by plain numpy."""
    state = np.zeros((1, 2, 8), np.float32)
    out = []
    for update in updates:
        state = np.concatenate([state, update], axis=-1)[..., -8:]
        out.append(state)
    return out


@pytest.fixture
def stream_url(triton_repo: Path, triton_server) -> str:  # type: ignore[no-untyped-def]
    for name in ("sw_window", "sw_scale", "sw_stream"):
        shutil.copytree(MODELS / name, triton_repo / name)
    triton_server.load_model("sw_stream")
    return str(triton_server.grpc_url)


def test_inference_stage_streams_one_sequence_in_order_with_timings(stream_url: str) -> None:
    rng = np.random.default_rng(0)
    updates = [rng.standard_normal((1, 2, 4)).astype(np.float32) for _ in range(10)]
    spec = ArraySpec(shape=(1, 2, 4))
    pipeline = Source(updates, output=spec) >> InferenceStage(
        stream_url, "sw_stream", sequence_id=7, max_pending=3
    )
    results = pipeline.run(timeout_s=60)
    assert len(results) == 10
    for result, window in zip(results, _windows(updates), strict=True):
        np.testing.assert_allclose(result.outputs["scaled"], 3 * window, rtol=1e-6)
        assert result.sequence_id == 7
        assert result.timings.latency_s > 0
    assert [r.request_id for r in results] == [str(i) for i in range(1, 11)]


def test_inference_requests_interleave_sequences_and_emit_arrays_through_shared_memory(
    stream_url: str,
) -> None:
    updates = {sid: [np.full((1, 2, 4), 10 * sid + k, np.float32) for k in range(4)] for sid in (1, 2)}
    requests = [
        InferenceRequest(inputs=updates[sid][k], sequence_id=sid, end=k == 3)
        for k in range(4)
        for sid in (1, 2)
    ]
    out_spec = ArraySpec(shape=(1, 2, 8))
    stage = InferenceStage(stream_url, "sw_stream", emit="output", output=out_spec, max_pending=1)
    outputs = (Source(requests) >> stage).run(timeout_s=60)
    assert len(outputs) == 8
    for sid in (1, 2):
        got = outputs[sid - 1 :: 2]
        for array, window in zip(got, _windows(updates[sid]), strict=True):
            np.testing.assert_allclose(array, 3 * window)


def test_inference_stage_over_a_list_of_endpoints_streams_through_a_cluster_client(stream_url: str) -> None:
    rng = np.random.default_rng(1)
    updates = [rng.standard_normal((1, 2, 4)).astype(np.float32) for _ in range(6)]
    # a window of 8 samples is rebuilt by replaying 2 updates of 4: the stream survives its server
    stage = InferenceStage(
        [stream_url], "sw_stream", sequence_id=9, max_pending=2, client_kwargs={"replay_updates": 2}
    )
    results = (Source(updates, output=ArraySpec(shape=(1, 2, 4))) >> stage).run(timeout_s=60)
    assert [r.sequence_id for r in results] == [9] * 6
    for result, window in zip(results, _windows(updates), strict=True):
        np.testing.assert_allclose(result.outputs["scaled"], 3 * window, rtol=1e-6)


def _served_count(url: str, model: str) -> int:
    """How many requests ``model`` answered on the server at ``url`` (Triton's own statistics)."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics(model, as_json=True)
    return int(stats["model_stats"][0]["inference_stats"]["success"].get("count", 0))


def test_a_pipeline_streams_through_two_servers_with_a_routing_client_factory(
    tmp_path: Path, start_triton: Callable[..., object]
) -> None:
    from hermes.aeriel.routing import Endpoint, HashRing, RoutingClient

    servers = []
    for i in range(2):
        repo = tmp_path / f"repo-{i}"
        for name in ("sw_window", "sw_scale", "sw_stream"):
            shutil.copytree(MODELS / name, repo / name)
        servers.append(start_triton(repo, models=["sw_stream"]))
    endpoints = [Endpoint(name=f"s{i}", grpc=s.grpc_url) for i, s in enumerate(servers)]  # type: ignore[attr-defined]
    ids = [11, 12, 13, 14, 15, 16]
    owners = {sid: HashRing([e.name for e in endpoints]).node_for(sid) for sid in ids}
    assert set(owners.values()) == {"s0", "s1"}, owners  # the ids spread over both servers

    rng = np.random.default_rng(2)
    updates = {sid: [rng.standard_normal((1, 2, 4)).astype(np.float32) for _ in range(5)] for sid in ids}
    requests = [
        InferenceRequest(inputs=updates[sid][k], sequence_id=sid, end=k == 4, request_id=f"{sid}-{k}")
        for k in range(5)
        for sid in ids
    ]
    # the stage opens the client in its own process: it gets the recipe, not a live client
    factory = functools.partial(RoutingClient, endpoints, "sw_stream", replay_updates=2)
    results = (Source(requests) >> InferenceStage(factory, max_pending=4)).run(timeout_s=120)

    assert [r.request_id for r in results] == [q.request_id for q in requests]
    for sid in ids:
        mine = [r for r in results if r.sequence_id == sid]
        for result, window in zip(mine, _windows(updates[sid]), strict=True):
            np.testing.assert_allclose(result.outputs["scaled"], 3 * window, rtol=1e-6)
    for i, server in enumerate(servers):
        owned = sum(1 for owner in owners.values() if owner == f"s{i}")
        assert _served_count(server.grpc_url, "sw_stream") == 5 * owned  # type: ignore[attr-defined]


def test_inference_stage_takes_a_way_to_open_a_client_not_an_open_one(stream_url: str) -> None:
    from hermes.aeriel.client import InferenceClient

    with (
        InferenceClient(stream_url, "sw_stream") as client,
        pytest.raises(TypeError, match="got an open InferenceClient, which cannot cross into the stage"),
    ):
        InferenceStage(client)
    with pytest.raises(ValueError, match="cannot be pickled into the stage process"):
        InferenceStage(lambda: InferenceClient(stream_url, "sw_stream"))
    with pytest.raises(ValueError, match="model_name must be a non-empty str"):
        InferenceStage(stream_url)
    # a factory of something that is not a thread-based client fails in the stage, naming it
    stage = InferenceStage(functools.partial(np.zeros, 3), name="not-a-client")
    with pytest.raises(StageFailed, match=r"returned ndarray, which is not a thread-based .*StreamingClient"):
        (Source([np.zeros((1, 2, 4), np.float32)]) >> stage).run(timeout_s=60)


def test_inference_stage_rejects_bad_options_naming_them() -> None:
    with pytest.raises(ValueError, match=r"emit must be one of .* got 'everything'"):
        InferenceStage("127.0.0.1:1", "m", emit="everything")
    with pytest.raises(ValueError, match="max_pending must be an int >= 1, got 0"):
        InferenceStage("127.0.0.1:1", "m", max_pending=0)
