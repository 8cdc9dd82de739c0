"""What one look at a server sees: cumulative counters per model and gauges per server.

Two sources fill a :class:`ServerSnapshot`:

* :func:`parse_metrics` reads Triton's Prometheus text (``:8002/metrics``) with
  prometheus_client's parser: ``nv_inference_request_success``, ``..._failure``,
  ``nv_inference_count``, ``nv_inference_exec_count``, the ``*_duration_us`` counters, and
  the gauges ``nv_gpu_utilization``, ``nv_gpu_memory_{used,total}_bytes``,
  ``nv_cpu_utilization`` where the server exports them.
* :func:`counters_from_statistics` reads the per-model statistics API
  (``get_inference_statistics``), whose times are in nanoseconds.
"""

from __future__ import annotations

import dataclasses
import math
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "GpuGauges",
    "ModelCounters",
    "ModelKey",
    "ServerSnapshot",
    "counters_from_statistics",
    "parse_metrics",
    "read_metrics_text",
]

ModelKey = tuple[str, str]
"""``(model name, version)``."""

# Prometheus sample name -> ModelCounters field
_COUNTERS = {
    "nv_inference_request_success": "success",
    "nv_inference_request_failure": "failure",
    "nv_inference_count": "inferences",
    "nv_inference_exec_count": "executions",
    "nv_inference_request_duration_us": "request_us",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_compute_input_duration_us": "compute_input_us",
    "nv_inference_compute_infer_duration_us": "compute_infer_us",
    "nv_inference_compute_output_duration_us": "compute_output_us",
}
_GPU = {
    "nv_gpu_utilization": "utilization",
    "nv_gpu_memory_used_bytes": "memory_used_bytes",
    "nv_gpu_memory_total_bytes": "memory_total_bytes",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelCounters:
    """Cumulative counters of one model version since its server started.

    Args:
        success: successful requests.
        failure: failed requests (every reason).
        inferences: inferences (a request of batch size ``b`` counts ``b``).
        executions: model executions (batches the backend ran).
        request_us: total end-to-end request time in the server, microseconds.
        queue_us: total time requests waited in the queue, microseconds.
        compute_input_us: total time preparing inputs, microseconds.
        compute_infer_us: total time executing the model, microseconds.
        compute_output_us: total time handling outputs, microseconds.
    """

    success: float = 0.0
    failure: float = 0.0
    inferences: float = 0.0
    executions: float = 0.0
    request_us: float = 0.0
    queue_us: float = 0.0
    compute_input_us: float = 0.0
    compute_infer_us: float = 0.0
    compute_output_us: float = 0.0

    def minus(self, earlier: ModelCounters) -> ModelCounters:
        """The change since ``earlier`` (field by field)."""
        return ModelCounters(
            **{f.name: getattr(self, f.name) - getattr(earlier, f.name) for f in dataclasses.fields(self)}
        )

    def fell_below(self, earlier: ModelCounters) -> bool:
        """True when any counter is lower than in ``earlier``: the server restarted in between."""
        return any(getattr(self, f.name) < getattr(earlier, f.name) for f in dataclasses.fields(self))


@dataclasses.dataclass(frozen=True, kw_only=True)
class GpuGauges:
    """One GPU's gauges (absent on CPU-only servers).

    Args:
        utilization: busy fraction in 0..1 over Triton's metrics interval.
        memory_used_bytes: device memory in use, bytes.
        memory_total_bytes: device memory, bytes.
    """

    utilization: float | None = None
    memory_used_bytes: float | None = None
    memory_total_bytes: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerSnapshot:
    """One reading of one server.

    Args:
        endpoint: the endpoint's name.
        time: when it was taken, seconds since the epoch.
        models: cumulative counters per ``(model, version)``.
        gpus: gauges per GPU UUID.
        cpu_utilization: host CPU busy fraction in 0..1, if exported.
        error: why the server could not be read; ``None`` when it was.
    """

    endpoint: str
    time: float
    models: Mapping[ModelKey, ModelCounters] = dataclasses.field(default_factory=dict)
    gpus: Mapping[str, GpuGauges] = dataclasses.field(default_factory=dict)
    cpu_utilization: float | None = None
    error: str | None = None

    @property
    def up(self) -> bool:
        """Whether the server answered."""
        return self.error is None


def read_metrics_text(url: str, *, timeout_s: float = 2.0) -> str:
    """GET a Prometheus endpoint and return its text.

    Raises:
        OSError: the endpoint did not answer (``urllib.error.URLError`` is an ``OSError``).
    """
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        if resp.status != 200:
            raise urllib.error.URLError(f"HTTP {resp.status} from {url}")
        body: bytes = resp.read()
    return body.decode("utf-8", errors="replace")


def parse_metrics(text: str) -> tuple[dict[ModelKey, ModelCounters], dict[str, GpuGauges], float | None]:
    """Parse Triton's Prometheus text.

    Returns:
        ``(counters per (model, version), gauges per GPU UUID, CPU utilisation or None)``.

    Raises:
        ValueError: the text is not Prometheus exposition format.
    """
    per_model: dict[ModelKey, dict[str, float]] = {}
    per_gpu: dict[str, dict[str, float]] = {}
    cpu: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removesuffix("_total")
            value = float(sample.value)
            if math.isnan(value):
                continue
            if name in _COUNTERS:
                key = (sample.labels.get("model", ""), sample.labels.get("version", ""))
                fields = per_model.setdefault(key, {})
                field = _COUNTERS[name]
                fields[field] = fields.get(field, 0.0) + value  # failures come per reason: sum them
            elif name in _GPU:
                gpu = sample.labels.get("gpu_uuid", "") or sample.labels.get("gpu", "")
                per_gpu.setdefault(gpu, {})[_GPU[name]] = value
            elif name == "nv_cpu_utilization":
                cpu = value
    models = {key: ModelCounters(**fields) for key, fields in per_model.items()}
    gpus = {uuid: GpuGauges(**fields) for uuid, fields in per_gpu.items()}
    return models, gpus, cpu


def _num(value: Any) -> float:
    return float(value) if value not in (None, "") else 0.0


def counters_from_statistics(stats: Mapping[str, Any]) -> dict[ModelKey, ModelCounters]:
    """Counters from the statistics API's JSON (``get_inference_statistics(as_json=True)``).

    Times there are nanoseconds; they become microseconds here, like the metrics.
    """
    out: dict[ModelKey, ModelCounters] = {}
    for entry in stats.get("model_stats", []):
        inference = entry.get("inference_stats", {})

        def part(name: str, field: str, _inference: Mapping[str, Any] = inference) -> float:
            return _num(_inference.get(name, {}).get(field))

        out[(str(entry.get("name", "")), str(entry.get("version", "")))] = ModelCounters(
            success=part("success", "count"),
            failure=part("fail", "count"),
            inferences=_num(entry.get("inference_count")),
            executions=_num(entry.get("execution_count")),
            request_us=part("success", "ns") / 1e3,
            queue_us=part("queue", "ns") / 1e3,
            compute_input_us=part("compute_input", "ns") / 1e3,
            compute_infer_us=part("compute_infer", "ns") / 1e3,
            compute_output_us=part("compute_output", "ns") / 1e3,
        )
    return out
