"""InferenceStage against a real local Triton (python-backend stateful ensemble)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("hermes.aeriel.client")

from hermes.stillwater import ArraySpec, Source
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


def test_inference_stage_rejects_bad_options_naming_them() -> None:
    with pytest.raises(ValueError, match=r"emit must be one of .* got 'everything'"):
        InferenceStage("127.0.0.1:1", "m", emit="everything")
    with pytest.raises(ValueError, match="max_pending must be an int >= 1, got 0"):
        InferenceStage("127.0.0.1:1", "m", max_pending=0)
