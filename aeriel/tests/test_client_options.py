"""Client settings are validated once, before anything connects (no server needed)."""

from __future__ import annotations

import numpy as np
import pytest

from hermes.aeriel.client import AsyncInferenceClient, InferenceClient
from hermes.aeriel.client._options import ClientOptions, version_string


def test_options_normalise_version_and_shared_memory():
    options = ClientOptions(url="127.0.0.1:8001", model_name="m", model_version=-1, shared_memory=True)
    assert (options.model_version, options.shared_memory, options.timeout_s) == ("", "system", 60.0)
    options = ClientOptions(url="127.0.0.1:8001", model_name="m", model_version="3", shared_memory=False)
    assert (options.model_version, options.shared_memory) == ("3", None)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_in_flight", 0, "max_in_flight must be >= 1, got 0"),
        ("timeout_s", 0, "timeout_s must be > 0, got 0"),
        ("connect_timeout_s", -1.0, r"connect_timeout_s must be > 0, got -1.0"),
        ("latency_window", 0, "latency_window must be >= 1, got 0"),
        ("shared_memory", "gpu", "shared_memory must be None, 'system' or 'cuda', got 'gpu'"),
        ("model_version", 0, r"model_version must be -1 \(latest\) or >= 1, got 0"),
        ("callback", 3, "callback must be callable"),
    ],
)
def test_both_clients_reject_a_bad_setting_naming_it(field, value, message):
    for client_type in (InferenceClient, AsyncInferenceClient):
        with pytest.raises(ValueError, match=message):
            client_type("127.0.0.1:1", "m", **{field: value})


def test_model_version_setter_validates_and_stores_the_wire_form():
    client = AsyncInferenceClient("127.0.0.1:1", "m", model_version=2)  # connects only on open()
    assert client.model_version == "2"
    client.model_version = 5
    assert client.model_version == "5"
    client.model_version = None
    assert client.model_version == ""
    for bad, message in [
        (0, "got 0"),
        ("latest", "got 'latest'"),
        (1.5, "got float 1.5"),
        (True, "got bool"),
    ]:
        with pytest.raises(ValueError, match=message):
            client.model_version = bad
    assert client.model_version == ""  # unchanged by the rejected values
    assert version_string("12") == "12"


class _PredecessorSequence:
    """aframe's callback object as written for ml4gw-hermes: ``(y, request_id, sequence_id)``."""

    def __call__(self, y, request_id, sequence_id):
        return None


class _PortedSequence:
    def __call__(self, result, error=None, *extra):
        return None


def test_a_predecessor_style_callback_is_refused_before_connecting():
    for client_type in (InferenceClient, AsyncInferenceClient):
        with pytest.raises(
            TypeError, match=r"takes \(y, request_id, sequence_id\).*callback\(result, error\)"
        ):
            client_type("127.0.0.1:1", "m", callback=_PredecessorSequence())
    options = ClientOptions(url="127.0.0.1:1", model_name="m", callback=_PortedSequence())
    assert isinstance(options.callback, _PortedSequence)
    assert ClientOptions(url="127.0.0.1:1", model_name="m", callback=print).callback is print


def test_the_predecessors_infer_with_sequence_keywords_names_the_sequence_api(
    triton_repo, write_add_sub, start_triton
):
    write_add_sub(triton_repo)
    server = start_triton(triton_repo, models=["add_sub"])
    a = np.ones(4, dtype=np.float32)
    with InferenceClient(server.grpc_url, "add_sub") as client:
        with pytest.raises(
            TypeError, match=r"client\.sequence\(sequence_id\) as seq: seq\.send\(x, end=last\)"
        ):
            client.infer({"INPUT0": a, "INPUT1": a}, request_id=0, sequence_id=1001, sequence_start=True)
        with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['profile'\]"):
            client.infer({"INPUT0": a, "INPUT1": a}, profile=True)
        result = client.infer({"INPUT0": a, "INPUT1": a}, request_id=7).result(timeout=60)
    assert result.request_id == 7 and result.outputs["OUTPUT0"].tolist() == [2.0] * 4
