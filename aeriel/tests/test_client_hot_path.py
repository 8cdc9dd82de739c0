"""The client's per-request path after its speed-ups, against the real local Triton.

The builder reuses the last shape's validation and one ``InferInput`` per (input, shape); the
window is a queue of tokens; in-band outputs are decoded in one pass. Each must keep what
the slower path did: every new shape validated and sent with its own values, bad input
refused before sending, a full window timing out without losing a token, outputs equal to
tritonclient's ``as_numpy`` for every datatype.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import service_pb2
from tritonclient.grpc._infer_result import InferResult
from tritonclient.utils import serialize_byte_tensor

from hermes.aeriel import InferenceTimeout, InputValidationError, Server, serve
from hermes.aeriel.client import InferenceClient
from hermes.aeriel.client._core import inband_outputs

MODELS = Path(__file__).parent / "client_models"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("client-hot-path")
    shutil.copytree(MODELS / "identity", base / "repo" / "identity")
    with serve(base / "repo", models=["identity"], log_file=base / "server.log", exit_timeout_s=2) as srv:
        yield srv


def test_changed_shapes_are_validated_and_sent_with_their_own_values(server: Server) -> None:
    rng = np.random.default_rng(1)
    with InferenceClient(server.grpc_url, "identity") as client:
        for shape in [(1, 4), (3, 4), (1, 4), (2, 7), (3, 4), (3, 4)]:
            x = rng.standard_normal(shape, dtype=np.float32)
            result = client.infer(x).result(timeout=30)
            np.testing.assert_array_equal(result.output, x)  # not the cached shape's last bytes
            assert result.output.dtype == np.float32 and not result.output.flags.writeable
        sent = client.server_stats()["count"]
        with pytest.raises(InputValidationError, match=r"'INPUT0' has dtype float64, expected float32"):
            client.infer(np.zeros((3, 4), np.float64))  # the cached shape, another dtype
        with pytest.raises(InputValidationError, match=r"'INPUT0' has shape \[12\], expected \[-1, -1\]"):
            client.infer(np.zeros(12, np.float32))
        with pytest.raises(InputValidationError, match="must be a numpy array, got list"):
            client.infer({"INPUT0": [[1.0]]})  # type: ignore[dict-item]
        assert client.in_flight == 0 and client.server_stats()["count"] == sent  # nothing reached the server
        y = np.arange(12, dtype=np.float32).reshape(3, 4)
        np.testing.assert_array_equal(client.infer(y).result(timeout=30).output, y)


def test_a_full_window_times_out_and_gives_back_no_token_twice(server: Server) -> None:
    with InferenceClient(server.grpc_url, "identity", max_in_flight=1, timeout_s=30) as client:
        client.infer(np.zeros((1, 2), np.float32)).result(timeout=30)
        os.kill(server.pid, signal.SIGSTOP)
        try:
            first = client.infer(np.ones((1, 2), np.float32))
            with pytest.raises(
                InferenceTimeout, match=r"no room in the window of 1 requests .* within 0.3 s"
            ):
                client.infer(np.zeros((1, 2), np.float32), timeout_s=0.3)
            assert client.in_flight == 1
        finally:
            os.kill(server.pid, signal.SIGCONT)
        np.testing.assert_array_equal(first.result(timeout=30).output, [[1, 1]])
        futures = [client.infer(np.full((1, 2), i, np.float32)) for i in range(5)]
        assert [f.result(timeout=30).output[0, 0] for f in futures] == [0, 1, 2, 3, 4]
        assert client.in_flight == 0


def _response(outputs: dict[str, np.ndarray], raw: bool = True) -> service_pb2.ModelInferResponse:
    response = service_pb2.ModelInferResponse(id="7", model_name="m")
    for name, array in outputs.items():
        tensor = response.outputs.add()
        tensor.name = name
        tensor.shape.extend(array.shape)
        if array.dtype.kind == "O":
            tensor.datatype = "BYTES"
            content = serialize_byte_tensor(array).item()
        else:
            tensor.datatype = {np.dtype(np.bool_): "BOOL", np.dtype(np.float16): "FP16"}.get(
                array.dtype, array.dtype.name.replace("float", "FP").upper()
            )
            content = array.tobytes()
        if raw:
            response.raw_output_contents.append(content)
    return response


@pytest.mark.parametrize(
    "dtype", [np.bool_, np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64,
              np.float16, np.float32, np.float64],
)  # fmt: skip
def test_one_pass_decoding_equals_as_numpy_for_every_fixed_size_datatype(dtype: type) -> None:
    rng = np.random.default_rng(0)
    outputs = {"b": (rng.standard_normal((2, 3)) * 50).astype(dtype), "a": rng.random((4,)).astype(dtype)}
    response = _response(outputs)
    result = InferResult(response)
    decoded = inband_outputs(result, response, ("a", "b"))
    assert list(decoded) == ["a", "b"]  # the signature's order, not the response's
    for name, array in outputs.items():
        expected = result.as_numpy(name)
        assert decoded[name].dtype == expected.dtype == array.dtype
        assert decoded[name].shape == expected.shape and not decoded[name].flags.writeable
        np.testing.assert_array_equal(decoded[name], array)


def test_bytes_and_missing_outputs_go_through_as_numpy() -> None:
    words = np.array([[b"ab", b""], [b"xyz", b"q"]], dtype=np.object_)
    floats = np.ones((2, 2), np.float32)
    response = _response({"x": floats, "s": words})
    decoded = inband_outputs(InferResult(response), response, ("x", "s"))
    assert decoded["s"].tolist() == words.tolist()
    np.testing.assert_array_equal(decoded["x"], floats)
    partial = inband_outputs(InferResult(response), response, ("x", "gone"))
    assert partial["gone"] is None and np.array_equal(partial["x"], floats)  # as as_numpy answers
    no_raw = _response({"x": floats}, raw=False)  # not as raw bytes: whatever tritonclient makes of it
    with pytest.raises(ValueError, match=r"cannot reshape array of size 0 into shape \(2,2\)"):
        InferResult(no_raw).as_numpy("x")
    with pytest.raises(ValueError, match=r"cannot reshape array of size 0 into shape \(2,2\)"):
        inband_outputs(InferResult(no_raw), no_raw, ("x",))


def test_a_cached_input_is_refilled_with_the_bytes_set_data_from_numpy_stores() -> None:
    from hermes.aeriel.client import _requests

    assert _requests._REFILL  # this tritonclient sends _raw_content: the fast refill is what runs
    x = np.arange(6, dtype=np.float32).reshape(2, 3)[:, ::-1]  # not contiguous: tobytes() is C order
    cached = _requests._CachedInput("INPUT0", [2, 3], "FP32")
    cached.refill(x)
    reference = _requests._CachedInput("INPUT0", [2, 3], "FP32")
    reference.set_data_from_numpy(x)
    assert cached._get_content() == reference._get_content() == np.ascontiguousarray(x).tobytes()
