"""Drive stateful models on a real server with raw tritonclient gRPC streams (test helper)."""

from __future__ import annotations

import queue
from collections.abc import Mapping, Sequence

import numpy as np
import tritonclient.grpc as grpcclient


def stream_sequences(
    url: str,
    model: str,
    output_name: str,
    updates: Mapping[int, Sequence[Mapping[str, np.ndarray]]],
    *,
    timeout_s: float = 60.0,
) -> dict[int, list[np.ndarray]]:
    """Stream several sequences at once on one gRPC stream, one request per sequence in flight.

    Requests of different sequences interleave; a sequence's next update is sent when its
    previous response has arrived, because an ensemble whose stateless members run several
    instances may otherwise deliver one sequence's requests to the averager out of order.

    Args:
        url: the server's gRPC address.
        model: the model (or ensemble) name.
        output_name: the output to collect.
        updates: ``{sequence id: [{input name: array} per update]}``; every sequence starts
            with its first update and ends with its last.
        timeout_s: how long to wait for each response.

    Returns:
        ``{sequence id: [output per update, in order]}``.
    """
    responses: queue.Queue[tuple[object, object]] = queue.Queue()

    def callback(result: object, error: object) -> None:
        responses.put((result, error))

    client = grpcclient.InferenceServerClient(url)

    def send(sequence_id: int, step: int) -> None:
        items = updates[sequence_id]
        tensors = []
        for name, value in items[step].items():
            data = np.ascontiguousarray(value, dtype=np.float32)
            tensors.append(grpcclient.InferInput(name, list(data.shape), "FP32"))
            tensors[-1].set_data_from_numpy(data)
        client.async_stream_infer(
            model,
            tensors,
            request_id=f"{sequence_id}:{step}",
            sequence_id=sequence_id,
            sequence_start=step == 0,
            sequence_end=step == len(items) - 1,
        )

    outputs: dict[int, list[np.ndarray]] = {sequence_id: [] for sequence_id in updates}
    try:
        client.start_stream(callback=callback)
        for sequence_id in updates:
            send(sequence_id, 0)
        pending = sum(len(items) for items in updates.values())
        while pending:
            result, error = responses.get(timeout=timeout_s)
            if error is not None:
                raise AssertionError(f"inference failed: {error}")
            request_id = result.get_response().id  # type: ignore[attr-defined]
            sequence_id, step = (int(p) for p in request_id.split(":"))
            assert step == len(outputs[sequence_id]), f"response {request_id} out of order"
            outputs[sequence_id].append(result.as_numpy(output_name))  # type: ignore[attr-defined]
            pending -= 1
            if step + 1 < len(updates[sequence_id]):
                send(sequence_id, step + 1)
        client.stop_stream()
    finally:
        client.close()
    return outputs


def compute_ns_per_request(url: str, model: str) -> tuple[int, float]:
    """``(successful requests, mean server-side ns per request)`` from the statistics API."""
    client = grpcclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(model_name=model).model_stats[0]
    finally:
        client.close()
    count = stats.inference_stats.success.count
    return count, stats.inference_stats.success.ns / max(count, 1)
