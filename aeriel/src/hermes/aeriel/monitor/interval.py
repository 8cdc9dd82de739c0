"""Per-interval rows from two snapshots: :class:`IntervalRow` and :func:`interval_rows`.

Counters are cumulative since the server started. A row holds the change between two
readings; per-request times are the change of a duration counter divided by the change of
the request count. A counter that falls means the server restarted in between: the new
value is then the change (counters restart at zero), and the row says ``restarted``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from hermes.aeriel.monitor.snapshot import ModelCounters, ServerSnapshot

__all__ = ["CSV_COLUMNS", "SERVER_ROW", "IntervalRow", "interval_rows"]

SERVER_ROW = "*"
"""The ``model`` of the row that sums every model of a server (and carries its gauges)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class IntervalRow:
    """What one model (or a whole server, ``model == "*"``) did in one interval.

    Args:
        timestamp: end of the interval, seconds since the epoch.
        interval_s: length of the interval, seconds.
        endpoint: the endpoint's name.
        model: model name, or ``"*"`` for the server total.
        version: model version (``""`` for the server total).
        status: ``ok``; ``restarted`` (counters fell); ``down: <reason>``.
        requests: successful requests in the interval.
        failures: failed requests in the interval.
        inferences: inferences (batch elements) in the interval.
        executions: model executions in the interval.
        avg_batch_size: inferences per execution.
        request_us: mean server-side time per request, microseconds.
        queue_us: mean queue time per request, microseconds.
        compute_input_us: mean input time per request, microseconds.
        compute_infer_us: mean execution time per request, microseconds.
        compute_output_us: mean output time per request, microseconds.
        gpu_utilization: mean busy fraction (0..1) over the server's GPUs, if exported.
        gpu_memory_used_bytes: device memory in use over the server's GPUs, bytes.
        gpu_memory_total_bytes: device memory over the server's GPUs, bytes.
        cpu_utilization: host CPU busy fraction (0..1), if exported.
    """

    timestamp: float
    interval_s: float
    endpoint: str
    model: str
    version: str
    status: str = "ok"
    requests: int = 0
    failures: int = 0
    inferences: int = 0
    executions: int = 0
    avg_batch_size: float | None = None
    request_us: float | None = None
    queue_us: float | None = None
    compute_input_us: float | None = None
    compute_infer_us: float | None = None
    compute_output_us: float | None = None
    gpu_utilization: float | None = None
    gpu_memory_used_bytes: float | None = None
    gpu_memory_total_bytes: float | None = None
    cpu_utilization: float | None = None

    def as_dict(self) -> dict[str, object]:
        """The row as ``{column: value}`` (``None`` stays ``None``)."""
        return dataclasses.asdict(self)


CSV_COLUMNS = [f.name for f in dataclasses.fields(IntervalRow)]
"""The CSV header, in order."""


def _per(total: float, count: float) -> float | None:
    return total / count if count > 0 else None


def _row(
    snap: ServerSnapshot, interval_s: float, model: str, version: str, delta: ModelCounters, status: str
) -> IntervalRow:
    return IntervalRow(
        timestamp=snap.time,
        interval_s=interval_s,
        endpoint=snap.endpoint,
        model=model,
        version=version,
        status=status,
        requests=round(delta.success),
        failures=round(delta.failure),
        inferences=round(delta.inferences),
        executions=round(delta.executions),
        avg_batch_size=_per(delta.inferences, delta.executions),
        request_us=_per(delta.request_us, delta.success),
        queue_us=_per(delta.queue_us, delta.success),
        compute_input_us=_per(delta.compute_input_us, delta.success),
        compute_infer_us=_per(delta.compute_infer_us, delta.success),
        compute_output_us=_per(delta.compute_output_us, delta.success),
    )


def _sum(values: list[ModelCounters]) -> ModelCounters:
    fields = [f.name for f in dataclasses.fields(ModelCounters)]
    return ModelCounters(**{name: sum(getattr(v, name) for v in values) for name in fields})


def _gauges(snap: ServerSnapshot) -> dict[str, float | None]:
    utils = [g.utilization for g in snap.gpus.values() if g.utilization is not None]
    used = [g.memory_used_bytes for g in snap.gpus.values() if g.memory_used_bytes is not None]
    total = [g.memory_total_bytes for g in snap.gpus.values() if g.memory_total_bytes is not None]
    return {
        "gpu_utilization": sum(utils) / len(utils) if utils else None,
        "gpu_memory_used_bytes": sum(used) if used else None,
        "gpu_memory_total_bytes": sum(total) if total else None,
        "cpu_utilization": snap.cpu_utilization,
    }


def interval_rows(
    previous: ServerSnapshot | None,
    current: ServerSnapshot,
    *,
    include_idle: bool = False,
    models: frozenset[str] | None = None,
) -> list[IntervalRow]:
    """The rows for the interval between two readings of one server.

    Args:
        previous: the last reading in which the server answered (``None``: none yet).
        current: the new reading.
        include_idle: also write rows for models without requests in the interval.
        models: only these model names (``None``: every model).

    Returns:
        One server row (``model == "*"``, with the gauges) and one row per active model.
        A server that did not answer gives one ``down`` row. The first reading gives a
        server row with zero counts: it is the baseline.
    """
    if not current.up:
        interval = current.time - previous.time if previous is not None else 0.0
        return [
            IntervalRow(
                timestamp=current.time,
                interval_s=interval,
                endpoint=current.endpoint,
                model=SERVER_ROW,
                version="",
                status=f"down: {current.error}",
            )
        ]
    before: Mapping[tuple[str, str], ModelCounters] = (
        previous.models if previous is not None else current.models
    )
    interval = current.time - previous.time if previous is not None else 0.0
    restarted = any(
        key in before and counters.fell_below(before[key]) for key, counters in current.models.items()
    )
    rows: list[IntervalRow] = []
    deltas: list[ModelCounters] = []
    for (model, version), counters in sorted(current.models.items()):
        if models is not None and model not in models:
            continue
        if restarted:
            delta = counters
        elif (model, version) in before:
            delta = counters.minus(before[(model, version)])
        else:
            delta = counters  # loaded since the last reading: its counters started at zero
        deltas.append(delta)
        if include_idle or delta.success > 0 or delta.failure > 0:
            status = "restarted" if restarted else "ok"
            rows.append(_row(current, interval, model, version, delta, status))
    total = _row(current, interval, SERVER_ROW, "", _sum(deltas), "restarted" if restarted else "ok")
    total = dataclasses.replace(total, **_gauges(current))  # type: ignore[arg-type]
    return [total, *rows]
