"""The synchronous InferenceClient against a real local Triton: sequences, results, backpressure."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hermes.aeriel import (
    ClientClosedError,
    InferenceFailed,
    InferenceTimeout,
    InputValidationError,
    SequenceError,
    Server,
    serve,
)
from hermes.aeriel.client import InferenceClient
from hermes.aeriel.testing import leftover_resources

MODELS = Path(__file__).parent / "client_models"
ALL = ["identity", "fixed_batch", "ens_stream", "ens_two_groups"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("client-stream")
    shutil.copytree(MODELS, base / "repo")
    with serve(base / "repo", models=ALL, log_file=base / "server.log", exit_timeout_s=2) as srv:
        yield srv
    assert leftover_resources(srv) == []


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leaked = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
    assert leaked == [], f"threads left behind: {leaked}"


def _expected_windows(updates: list[np.ndarray], kernel: int = 8) -> list[np.ndarray]:
    """The (1, C, K) window after each update, by a plain numpy reference."""
    state = np.zeros((1, updates[0].shape[1], kernel), np.float32)
    out = []
    for update in updates:
        state = np.concatenate([state, update], axis=-1)[..., -kernel:]
        out.append(state)
    return out


def test_sequence_results_follow_the_server_side_state_in_order(server):
    updates = [np.random.rand(1, 3, 2).astype(np.float32) for _ in range(12)]
    with InferenceClient(server.grpc_url, "ens_stream") as client:
        with client.sequence(1001) as seq:
            futures = [seq.send(u, end=i == len(updates) - 1) for i, u in enumerate(updates)]
        results = [f.result(timeout=30) for f in futures]
    for result, window in zip(results, _expected_windows(updates), strict=True):
        np.testing.assert_allclose(result.outputs["out_a"], 2 * window[:, :2])
        np.testing.assert_allclose(result.outputs["out_b"], 2 * window[:, 2])
        assert result.sequence_id == 1001
        assert result.timings.latency_s > 0
    assert [r.request_id for r in results] == [str(i) for i in range(1, 13)]


def test_update_given_as_parts_for_each_downstream_tensor(server):
    with InferenceClient(server.grpc_url, "ens_stream") as client, client.sequence(5) as seq:
        a = np.full((1, 2, 2), 3.0, np.float32)
        b = np.full((1, 2), 4.0, np.float32)
        result = seq.send({"double_a/x": a, "double_b/x": b}, end=True).result(timeout=30)
    np.testing.assert_array_equal(result.outputs["out_a"][0, :, -2:], np.full((2, 2), 6.0))
    np.testing.assert_array_equal(result.outputs["out_b"][0, -2:], [8.0, 8.0])


def test_many_interleaved_sequences_keep_their_own_state(server):
    n_seq, n_steps = 8, 6
    data = {
        sid: [np.random.rand(1, 3, 2).astype(np.float32) for _ in range(n_steps)]
        for sid in range(1, n_seq + 1)
    }
    with InferenceClient(server.grpc_url, "ens_stream", max_in_flight=8) as client:
        sequences = {sid: client.sequence(sid) for sid in data}
        futures: dict[int, list] = {sid: [] for sid in data}
        for step in range(n_steps):
            for sid, seq in sequences.items():
                futures[sid].append(seq.send(data[sid][step], end=step == n_steps - 1))
        for sid in data:
            got = [f.result(timeout=30).outputs["out_b"] for f in futures[sid]]
            want = [2 * w[:, 2] for w in _expected_windows(data[sid])]
            np.testing.assert_allclose(np.stack(got), np.stack(want))


def test_string_sequence_ids_and_two_streaming_groups(server):
    with InferenceClient(server.grpc_url, "ens_two_groups") as client:
        assert [g.input for g in client.streams] == ["snapshot_update", "aux_update"]
        with client.sequence("run-a") as seq:
            for i in range(3):
                update = {
                    "snapshot_update": np.full((1, 3, 2), i + 1, np.float32),
                    "aux_update": np.full((1, 1, 2), 10 * (i + 1), np.float32),
                }
                result = seq.send(update, end=i == 2).result(timeout=30)
    np.testing.assert_array_equal(result.outputs["out_c"], [[[40, 40, 60, 60]]])
    np.testing.assert_array_equal(result.outputs["out_b"], [[0, 0, 2, 2, 4, 4, 6, 6]])
    assert result.sequence_id == "run-a"


def test_sequence_misuse_raises_clear_errors(server):
    with InferenceClient(server.grpc_url, "ens_stream") as client:
        update = np.zeros((1, 3, 2), np.float32)
        seq = client.sequence(42)
        with pytest.raises(SequenceError, match="sequence 42 is already live"):
            client.sequence(42)
        seq.send(update, end=True).result(timeout=30)
        with pytest.raises(SequenceError, match="already ended; no request may follow END"):
            seq.send(update)
        client.sequence(42).send(update, end=True).result(timeout=30)  # an ended id is free again
        with (
            pytest.raises(SequenceError, match="left its block without END"),
            client.sequence(43) as unfinished,
        ):
            unfinished.send(update).result(timeout=30)
        with pytest.raises(SequenceError, match=r"is stateful; send its requests through client\.sequence"):
            client.infer(update)
        with pytest.raises(SequenceError, match="must be a positive int or a non-empty str"):
            client.sequence(1.5)  # type: ignore[arg-type]
        with pytest.raises(InputValidationError, match="missing its state part"):
            client.sequence(44).send({"double_a/x": np.zeros((1, 2, 2), np.float32)})


def test_stateless_infer_callbacks_and_latency(server):
    seen: list[tuple[object, object]] = []
    done = threading.Event()

    def callback(result, error):
        seen.append((result.request_id if result else None, error))
        if len(seen) == 20:
            done.set()

    with InferenceClient(server.grpc_url, "identity", callback=callback) as client:
        assert client.latency.count == 0
        arrays = [np.random.rand(2, 5).astype(np.float32) for _ in range(20)]
        futures = [client.infer(a, request_id=("req", i)) for i, a in enumerate(arrays)]
        for array, future in zip(arrays, futures, strict=True):
            np.testing.assert_array_equal(future.result(timeout=30).output, array)
        assert done.wait(30)
        stats = client.latency
    assert sorted(rid for rid, _ in seen) == [("req", i) for i in range(20)]
    assert all(error is None for _, error in seen)
    assert stats.count == 20
    assert 0 < stats.p50_s <= stats.p99_s


def test_error_response_fails_only_its_own_future(server):
    with InferenceClient(server.grpc_url, "identity") as client:
        good = client.infer(np.ones((1, 3), np.float32))
        bad = client.infer(np.full((1, 3), -999, np.float32))
        after = client.infer(np.full((1, 3), 2, np.float32))
        np.testing.assert_array_equal(good.result(timeout=30).output, np.ones((1, 3)))
        with pytest.raises(InferenceFailed, match="identity refuses -999") as info:
            bad.result(timeout=30)
        assert server.grpc_url in str(info.value)
        np.testing.assert_array_equal(after.result(timeout=30).output, np.full((1, 3), 2))


def test_window_bounds_requests_in_flight(server):
    peak = 0
    lock = threading.Lock()
    with InferenceClient(server.grpc_url, "identity", max_in_flight=3) as client:

        def track(result, error):
            nonlocal peak
            with lock:
                peak = max(peak, client.in_flight + 1)

        futures = [client.infer(np.zeros((1, 64), np.float32), callback=track) for _ in range(60)]
        for future in futures:
            future.result(timeout=30)
    assert 1 <= peak <= 3


def test_partial_batch_is_padded_and_padding_stripped(server):
    with InferenceClient(server.grpc_url, "fixed_batch", pad_batch=True) as client:
        x = np.ones((2, 3), np.float32)
        result = client.infer(x).result(timeout=30)
    np.testing.assert_array_equal(result.outputs["y"], [[2, 2, 2], [3, 3, 3]])


def test_warm_up_sends_a_throwaway_sequence_then_resets_latency(server):
    with InferenceClient(server.grpc_url, "ens_stream") as client:
        stats = client.warm_up(n=5)
        assert stats.count == 5
        assert client.latency.count == 0
        with client.sequence(9) as seq:
            result = seq.send(np.ones((1, 3, 2), np.float32), end=True).result(timeout=30)
    # the warm-up left no state behind: the window starts from zeros
    np.testing.assert_array_equal(result.outputs["out_b"], [[0, 0, 0, 0, 0, 0, 2, 2]])


def test_request_times_out_while_the_server_is_stopped_and_client_recovers(server):
    with InferenceClient(server.grpc_url, "identity", timeout_s=0.5) as client:
        client.infer(np.zeros((1, 2), np.float32)).result(timeout=30)
        os.kill(server.pid, signal.SIGSTOP)
        try:
            future = client.infer(np.zeros((1, 2), np.float32))
            with pytest.raises(InferenceTimeout, match="got no response within its timeout"):
                future.result(timeout=10)
            assert client.in_flight == 0
        finally:
            os.kill(server.pid, signal.SIGCONT)
        np.testing.assert_array_equal(
            client.infer(np.ones((1, 2), np.float32)).result(timeout=30).output, [[1, 1]]
        )


def test_closed_client_refuses_requests_and_close_is_idempotent(server):
    client = InferenceClient(server.grpc_url, "identity")
    client.close()
    client.close()
    assert client.closed
    with pytest.raises(ClientClosedError, match="is closed"):
        client.infer(np.zeros((1, 2), np.float32))


def test_missing_model_is_reported_with_the_endpoint(server):
    with pytest.raises(InferenceFailed, match=f"model 'nope' .* is not ready at {server.grpc_url}"):
        InferenceClient(server.grpc_url, "nope")
