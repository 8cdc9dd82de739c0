"""A server killed mid-stream: every pending future fails, nothing is left behind, a new client works."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from hermes.aeriel import ClientError, ConnectionFailed, InferenceFailed, ServerExitedError, serve
from hermes.aeriel._errors import translate
from hermes.aeriel.client import InferenceClient
from hermes.aeriel.testing import leftover_resources

MODELS = Path(__file__).parent / "client_models"


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(MODELS, repo)
    return repo


def test_server_killed_mid_stream_fails_every_pending_future_naming_the_endpoint(tmp_path):
    repo = _repo(tmp_path)
    threads_before = set(threading.enumerate())
    # the server context reports the kill when it exits
    with (
        pytest.raises(ServerExitedError, match="killed by signal 9"),
        serve(repo, models=["ens_stream"], log_file=tmp_path / "log", exit_timeout_s=2) as server,
    ):
        endpoint = server.grpc_url
        client = InferenceClient(endpoint, "ens_stream", max_in_flight=64, timeout_s=20)
        seq = client.sequence(1)
        futures = [seq.send(np.ones((1, 3, 2), np.float32))]
        futures[0].result(timeout=30)
        os.kill(server.pid, signal.SIGSTOP)  # freeze it so requests are surely pending
        futures += [seq.send(np.ones((1, 3, 2), np.float32)) for _ in range(20)]
        assert client.in_flight == 20
        os.kill(server.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
        errors = []
        for future in futures[1:]:
            with pytest.raises(ConnectionFailed) as info:
                future.result(timeout=15)  # well within the client's 20 s timeout
            errors.append(str(info.value))
        assert all(endpoint in e for e in errors)
        assert client.in_flight == 0
        with pytest.raises(ConnectionFailed, match=endpoint):
            seq.send(np.ones((1, 3, 2), np.float32))
        client.close()
        client.close()
    left = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    assert [(t.name, getattr(t, "_target", None)) for t in left] == []
    assert leftover_resources(server) == []

    # a fresh server on the same repository and a new client work as before
    with (
        serve(repo, models=["ens_stream"], log_file=tmp_path / "log2", exit_timeout_s=2) as server,
        InferenceClient(server.grpc_url, "ens_stream") as client,
        client.sequence(1) as seq,
    ):
        result = seq.send(np.ones((1, 3, 2), np.float32), end=True).result(timeout=30)
    np.testing.assert_array_equal(result.outputs["out_b"], [[0, 0, 0, 0, 0, 0, 2, 2]])


def test_unreachable_endpoint_raises_connection_failed_with_the_address():
    from hermes.aeriel.testing import refusing_port

    with refusing_port() as port, pytest.raises(ConnectionFailed, match=f"127.0.0.1:{port}"):
        InferenceClient(f"127.0.0.1:{port}", "identity", connect_timeout_s=1.0)


def test_every_client_error_is_a_hermes_error(tmp_path):
    repo = _repo(tmp_path)
    with (
        serve(repo, models=["identity"], log_file=tmp_path / "log", exit_timeout_s=2) as server,
        InferenceClient(server.grpc_url, "identity") as client,
    ):
        error = client.infer(np.full((1, 2), -999, np.float32)).exception(timeout=30)
    assert isinstance(error, ClientError)
    assert "tritonclient" not in type(error).__module__


def test_a_model_that_is_not_loaded_is_a_model_error_not_a_lost_server(tmp_path):
    # the real server answers a request for a model it has not loaded with NOT_FOUND, "Request for
    # unknown model: 'identity' is not found" (unary), or an error response without a status (stream)
    repo = _repo(tmp_path)
    x = np.zeros((1, 64), np.float32)
    with serve(repo, models=[], log_file=tmp_path / "log", exit_timeout_s=2) as server:
        raw = grpcclient.InferenceServerClient(server.grpc_url)
        tensor = grpcclient.InferInput("INPUT0", [1, 64], "FP32")
        tensor.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as unary:
            raw.infer("identity", [tensor])
        answers: queue.Queue = queue.Queue()
        raw.start_stream(callback=lambda result, error: answers.put(error))
        raw.async_stream_infer("identity", [tensor], request_id="3")
        streamed = answers.get(timeout=30)
        raw.stop_stream()
        raw.close()
    for exc in (unary.value, streamed):
        error = translate(exc, endpoint=server.grpc_url, model="identity")
        assert isinstance(error, InferenceFailed) and not isinstance(error, ConnectionFailed)
        assert "Request for unknown model: 'identity' is not found" in str(error)
        assert server.grpc_url in str(error)
