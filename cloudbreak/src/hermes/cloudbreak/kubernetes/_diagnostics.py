"""What to show when Triton pods do not become ready: their events and the end of the Triton log.

A GPU pod that cannot be scheduled only says why in events: the scheduler's ``FailedScheduling``
("0/3 nodes are available: 3 Insufficient nvidia.com/gpu.") and, on autoscaled GKE pools, the
cluster autoscaler's ``FailedScaleUp`` / ``NotTriggerScaleUp`` ("Node scale up in zones
us-central1-a associated with this pod failed: GCE out of resources. Pod is at risk of not being
scheduled." — the texts of GKE's cluster-autoscaler troubleshooting page). A pod that runs but
never gets ready says why in its log (a model that fails to load).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from hermes.cloudbreak.exceptions import CloudbreakError
from hermes.cloudbreak.kubernetes._apply import _translate

__all__ = ["PodReport", "capacity_event", "pod_reports"]

logger = logging.getLogger("hermes.cloudbreak.kubernetes")

_CAPACITY_EVENT = re.compile(
    r"GCE out of resources|GCE quota exceeded|GCE_STOCKOUT|ZONE_RESOURCE_POOL_EXHAUSTED|"
    r"does not have enough resources available",
    re.IGNORECASE,
)
LOG_LINES = 40


@dataclass(frozen=True)
class PodReport:
    """One pod: its phase, its events (``reason: message``) and the end of its Triton log."""

    name: str
    phase: str
    events: tuple[str, ...]
    log: str

    def render(self) -> str:
        lines = [f"pod {self.name} ({self.phase})"]
        lines += [f"  event {e}" for e in self.events]
        if self.log:
            lines.append("  log (last lines):")
            lines += [f"    {line}" for line in self.log.rstrip().splitlines()[-LOG_LINES:]]
        return "\n".join(lines)


def capacity_event(reports: list[PodReport]) -> tuple[str, str] | None:
    """``(kind, event)`` when an event says GKE had no capacity for a pod, else ``None``."""
    for report in reports:
        for event in report.events:
            if _CAPACITY_EVENT.search(event):
                kind = "quota" if "quota" in event.lower() else "stockout"
                return kind, f"pod {report.name}: {event}"
    return None


def _events(core: client.CoreV1Api, namespace: str, pod: str) -> tuple[str, ...]:
    items = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={pod}").items
    mine = [e for e in items if e.involved_object is not None and e.involved_object.name == pod]
    return tuple(f"{e.type or 'Normal'} {e.reason}: {e.message}" for e in mine)


def _log(core: client.CoreV1Api, namespace: str, pod: Any) -> str:
    statuses = (pod.status.container_statuses if pod.status else None) or []
    if not statuses:  # never started (unschedulable, pulling): there is no log yet
        return ""
    try:
        return str(
            core.read_namespaced_pod_log(
                pod.metadata.name, namespace, container="tritonserver", tail_lines=LOG_LINES
            )
        )
    except client.ApiException as exc:
        return f"(no log: HTTP {exc.status})"


def pod_reports(api_client: client.ApiClient, namespace: str, selector: str) -> list[PodReport]:
    """Events and log of every pod matching the label ``selector``; never raises (a report is best-effort)."""
    core = client.CoreV1Api(api_client)
    try:
        pods: list[Any] = core.list_namespaced_pod(namespace, label_selector=selector).items
        reports = []
        for pod in pods:
            name = str(pod.metadata.name)
            phase = (pod.status.phase if pod.status else None) or "Unknown"
            reports.append(
                PodReport(name, str(phase), _events(core, namespace, name), _log(core, namespace, pod))
            )
        return reports
    except Exception as exc:  # diagnostics must not hide the error they explain
        reason: CloudbreakError = _translate(exc, f"read pods {namespace}/{selector}")
        logger.warning("could not read pod events and logs: %s", reason)
        return []
