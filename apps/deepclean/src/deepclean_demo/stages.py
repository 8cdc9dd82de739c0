"""The demo's pipeline stages; each runs in its own process (module-level classes, so spawn can import them).

```
 WitnessSource ──▶ InferenceStage (aeriel client, one gRPC stream) ──▶ Checker ──▶ parent
 interleaves the          sends each update of each sequence,          keeps every output; at
 streams' updates          START on the first and END on the last       the end runs the network
 (1, 21, s·B)                                                          offline and compares
```
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from deepclean_demo.data import Stream, make_stream
from hermes.quiver.streaming import offline_stream
from hermes.stillwater import InferenceRequest

__all__ = ["Checker", "StreamPlan", "WitnessSource"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class StreamPlan:
    """What every stage agrees on: the streams, their length and the streaming geometry.

    Attributes:
        seeds: one seed per stream; stream ``i`` has sequence id ``i + 1``.
        seconds: length of each stream (s).
        kernel_size: K, samples per window.
        stride: s, samples between windows.
        batch_size: B, windows per request.
        num_updates: N, predictions averaged into each output sample.
        input_name: the ensemble's streaming input.
        output_name: the ensemble's streaming output.
    """

    seeds: tuple[int, ...]
    seconds: float
    kernel_size: int
    stride: int
    batch_size: int
    num_updates: int
    input_name: str
    output_name: str

    @property
    def update_size(self) -> int:
        return self.stride * self.batch_size

    @property
    def samples(self) -> int:
        """Samples per stream, rounded down to whole updates."""
        n = round(self.seconds * 4096)
        return n - n % self.update_size

    @property
    def updates(self) -> int:
        return self.samples // self.update_size

    def stream(self, index: int) -> Stream:
        return make_stream(self.samples / 4096, self.seeds[index])


class WitnessSource:
    """Yields the streams' updates interleaved: update 0 of every stream, then update 1, ..."""

    def __init__(self, plan: StreamPlan):
        self.plan = plan

    def __iter__(self) -> Iterator[Any]:
        plan = self.plan
        streams = [plan.stream(i).witnesses for i in range(len(plan.seeds))]
        size = plan.update_size
        for u in range(plan.updates):
            for i, witnesses in enumerate(streams):
                chunk = np.ascontiguousarray(witnesses[None, :, u * size : (u + 1) * size])
                yield InferenceRequest(
                    inputs={plan.input_name: chunk},
                    sequence_id=i + 1,
                    end=u == plan.updates - 1,
                    request_id=f"{i}:{u}",
                )


class Checker:
    """Collects every served output in order; at the end compares each stream with the offline network.

    Emits ``("progress", stream, update, latency_s)`` per result, then at the end one
    ``("record", {...})`` per stream with the served output, the offline reference and
    the largest difference.
    """

    def __init__(self, plan: StreamPlan, weights: str, network_kwargs: dict[str, Any]):
        self.plan = plan
        self.weights = weights
        self.network_kwargs = network_kwargs
        self.outputs: dict[int, list[np.ndarray]] = {i: [] for i in range(len(plan.seeds))}
        self.latencies: dict[int, list[float]] = {i: [] for i in range(len(plan.seeds))}

    def __call__(self, result: Any) -> Iterator[Any]:
        stream, update = (int(p) for p in str(result.request_id).split(":"))
        if update != len(self.outputs[stream]):
            raise RuntimeError(
                f"stream {stream}: update {update} arrived after {len(self.outputs[stream])} others"
            )
        self.outputs[stream].append(np.asarray(result.outputs[self.plan.output_name]).reshape(-1))
        self.latencies[stream].append(float(result.timings.latency_s))
        yield ("progress", stream, update, float(result.timings.latency_s))

    def flush(self) -> Iterator[Any]:
        import torch

        from deepclean_demo.network import DeepCleanNet

        torch.set_num_threads(os.cpu_count() or 1)  # the stream is over: the server is idle
        net = DeepCleanNet(**self.network_kwargs)
        net.load_state_dict(torch.load(self.weights, weights_only=True))
        net.eval()
        plan = self.plan
        for stream, outputs in self.outputs.items():
            served = np.concatenate(outputs) if outputs else np.zeros(0, np.float32)
            data = plan.stream(stream)
            reference = offline_stream(
                net, data.witnesses, kernel_size=plan.kernel_size, stride=plan.stride,
                batch_size=plan.batch_size, num_updates=plan.num_updates,
            )  # fmt: skip
            complete = served.shape == reference.shape
            error = float(np.max(np.abs(served - reference))) if complete else float("inf")
            scale = float(np.max(np.abs(reference))) if reference.size else 0.0
            yield (
                "record",
                {
                    "stream": stream,
                    "seed": plan.seeds[stream],
                    "served": served,
                    "reference": reference,
                    "max_abs_error": error,
                    "reference_scale": scale,
                    "updates": len(outputs),
                    "latencies_s": self.latencies[stream],
                },
            )
