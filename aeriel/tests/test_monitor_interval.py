"""Parsing Triton's metrics and the statistics API, and turning readings into interval rows."""

from __future__ import annotations

import pytest

from hermes.aeriel.monitor import (
    SERVER_ROW,
    ModelCounters,
    ServerSnapshot,
    counters_from_statistics,
    interval_rows,
    parse_metrics,
)

# What a GPU server exports (names as in Triton 2.51), trimmed to two models and one GPU.
METRICS = """\
# HELP nv_inference_request_success Number of successful inference requests
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="mlp",version="1"} 50
nv_inference_request_success{model="snap",version="2"} 7
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="mlp",reason="OTHER",version="1"} 1
nv_inference_request_failure{model="mlp",reason="BACKEND",version="1"} 2
# TYPE nv_inference_count counter
nv_inference_count{model="mlp",version="1"} 200
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="mlp",version="1"} 25
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{model="mlp",version="1"} 75881
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="mlp",version="1"} 30143
# TYPE nv_inference_compute_input_duration_us counter
nv_inference_compute_input_duration_us{model="mlp",version="1"} 732
# TYPE nv_inference_compute_infer_duration_us counter
nv_inference_compute_infer_duration_us{model="mlp",version="1"} 36879
# TYPE nv_inference_compute_output_duration_us counter
nv_inference_compute_output_duration_us{model="mlp",version="1"} 8002
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="GPU-aa"} 0.75
# TYPE nv_gpu_memory_total_bytes gauge
nv_gpu_memory_total_bytes{gpu_uuid="GPU-aa"} 16000000000
# TYPE nv_gpu_memory_used_bytes gauge
nv_gpu_memory_used_bytes{gpu_uuid="GPU-aa"} 4000000000
# TYPE nv_cpu_utilization gauge
nv_cpu_utilization 0.52
"""


def test_parse_metrics_reads_counters_per_model_and_gpu_gauges():
    models, gpus, cpu = parse_metrics(METRICS)
    assert models[("mlp", "1")] == ModelCounters(
        success=50,
        failure=3,
        inferences=200,
        executions=25,
        request_us=75881,
        queue_us=30143,
        compute_input_us=732,
        compute_infer_us=36879,
        compute_output_us=8002,
    )
    assert models[("snap", "2")].success == 7
    assert gpus["GPU-aa"].utilization == 0.75
    assert gpus["GPU-aa"].memory_used_bytes == 4e9
    assert cpu == 0.52


def test_counters_from_statistics_convert_nanoseconds_to_microseconds():
    stats = {
        "model_stats": [
            {
                "name": "mlp",
                "version": "1",
                "inference_count": "8",
                "execution_count": "2",
                "inference_stats": {
                    "success": {"count": "4", "ns": "4000000"},
                    "fail": {},
                    "queue": {"count": "4", "ns": "1000000"},
                    "compute_input": {"count": "4", "ns": "4000"},
                    "compute_infer": {"count": "4", "ns": "2000000"},
                    "compute_output": {"count": "4", "ns": "8000"},
                },
            }
        ]
    }
    assert counters_from_statistics(stats) == {
        ("mlp", "1"): ModelCounters(
            success=4,
            failure=0,
            inferences=8,
            executions=2,
            request_us=4000,
            queue_us=1000,
            compute_input_us=4,
            compute_infer_us=2000,
            compute_output_us=8,
        )
    }


def snapshot(t: float, success: float, queue_us: float, **extra) -> ServerSnapshot:
    counters = ModelCounters(
        success=success,
        inferences=2 * success,
        executions=success,
        queue_us=queue_us,
        request_us=2 * queue_us,
    )
    return ServerSnapshot(endpoint="n", time=t, models={("mlp", "1"): counters}, **extra)


def test_interval_rows_hold_deltas_and_per_request_means():
    _, gpus, _ = parse_metrics(METRICS)
    total, row = interval_rows(snapshot(10, 5, 100), snapshot(12, 9, 500, gpus=gpus, cpu_utilization=0.5))
    assert (row.model, row.version, row.status, row.interval_s) == ("mlp", "1", "ok", 2)
    assert (row.requests, row.inferences, row.executions, row.avg_batch_size) == (4, 8, 4, 2.0)
    assert (row.queue_us, row.request_us, row.compute_infer_us) == (100.0, 200.0, 0.0)
    assert (total.model, total.requests, total.gpu_utilization, total.gpu_memory_used_bytes) == (
        SERVER_ROW,
        4,
        0.75,
        4e9,
    )
    assert total.cpu_utilization == 0.5
    assert row.gpu_utilization is None  # gauges belong to the server row


def test_interval_rows_count_from_zero_when_counters_fall_after_a_restart():
    total, row = interval_rows(snapshot(10, 50, 1000), snapshot(12, 3, 30))
    assert (row.status, row.requests, row.queue_us) == ("restarted", 3, 10.0)
    assert total.status == "restarted"


def test_interval_rows_of_a_down_server_and_idle_models():
    down = ServerSnapshot(endpoint="n", time=20, error="connection refused")
    (row,) = interval_rows(snapshot(10, 5, 100), down)
    assert (row.model, row.status, row.requests, row.interval_s) == (
        SERVER_ROW,
        "down: connection refused",
        0,
        10,
    )
    assert [r.model for r in interval_rows(snapshot(10, 5, 100), snapshot(11, 5, 100))] == [SERVER_ROW]
    idle = interval_rows(snapshot(10, 5, 100), snapshot(11, 5, 100), include_idle=True)
    assert [(r.model, r.requests, r.avg_batch_size) for r in idle] == [
        (SERVER_ROW, 0, None),
        ("mlp", 0, None),
    ]
    assert interval_rows(None, snapshot(11, 5, 100))[0].requests == 0  # the first reading is the baseline
    assert (
        interval_rows(snapshot(10, 5, 100), snapshot(11, 6, 100), models=frozenset({"other"}))[0].requests
        == 0
    )


def test_monitor_rejects_bad_settings_naming_them():
    from hermes.aeriel import EndpointError
    from hermes.aeriel.monitor import Monitor

    with pytest.raises(ValueError, match="interval_s must be > 0 seconds, got 0"):
        Monitor(["h"], interval_s=0)
    with pytest.raises(ValueError, match="source must be 'metrics' or 'statistics', got 'snmp'"):
        Monitor(["h"], source="snmp")  # type: ignore[arg-type]
    with pytest.raises(EndpointError, match=r"needs a metrics address .* missing for h:1"):
        Monitor(["h:1"])
