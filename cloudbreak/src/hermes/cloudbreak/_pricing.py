"""A rough $/hour estimate of what ``cluster up``, ``deploy`` and ``swarm up`` start. An ESTIMATE only.

The table is small and dated on purpose: list prices change, differ by region (these are
us-central1; most other regions cost the same to about 30 % more), and sustained-use,
committed-use and Spot discounts are not applied (Spot VMs and GPUs typically cost 60-91 % less,
and vary). Check the Google Cloud Pricing Calculator before a large run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["PRICES_DATE", "PRICES_SOURCE", "Estimate", "gpu_price", "machine_price"]

PRICES_DATE = "2026-12-03"
PRICES_SOURCE = (
    "Google Cloud on-demand list prices for us-central1 (cloud.google.com/compute/gpus-pricing, "
    "/compute/vm-instance-pricing, /compute/disks-image-pricing, /kubernetes-engine/pricing) as the "
    "author knew them when writing the table; not fetched at run time (the build machine has no "
    "network to them)"
)

#: USD per GPU-hour, on demand, us-central1.
GPU_HOURLY = {
    "nvidia-tesla-t4": 0.35,
    "nvidia-tesla-p4": 0.60,
    "nvidia-tesla-v100": 2.48,
    "nvidia-tesla-p100": 1.46,
    "nvidia-l4": 0.56,
    "nvidia-tesla-a100": 2.93,
    "nvidia-a100-80gb": 3.93,
    "nvidia-h100-80gb": 11.06,
}
#: USD per vCPU-hour and per GB-hour of memory of predefined machine families, us-central1.
FAMILY_HOURLY = {
    "n1": (0.031611, 0.004237),
    "n2": (0.031611, 0.004237),
    "n2d": (0.027502, 0.003686),
    "e2": (0.021811, 0.002923),
    "c2": (0.03398, 0.00455),
}
_GB_PER_VCPU = {"standard": 3.75, "highmem": 6.5, "highcpu": 0.9}
_E2_GB_PER_VCPU = {"standard": 4.0, "highmem": 8.0, "highcpu": 1.0}
#: machine types that include their GPUs (USD per hour, the GPUs included).
BUNDLED_HOURLY = {"g2-standard-4": 0.70683, "g2-standard-8": 0.85362, "a2-highgpu-1g": 3.673385}
DISK_GB_HOURLY = 0.04 / 730  # pd-standard, per GB-month / hours in a month
GKE_CLUSTER_HOURLY = 0.10  # the cluster management fee (a monthly credit covers one zonal cluster)
FORWARDING_RULE_HOURLY = 0.025  # each load balancer's forwarding rule
_MACHINE = re.compile(r"^([a-z0-9]+)-(standard|highmem|highcpu)-([0-9]+)$")


def machine_price(machine_type: str) -> float | None:
    """USD per hour of ``machine_type`` (GPUs of bundled types included), or ``None`` when unknown."""
    if machine_type in BUNDLED_HOURLY:
        return BUNDLED_HOURLY[machine_type]
    match = _MACHINE.match(machine_type)
    if not match or match.group(1) not in FAMILY_HOURLY:
        return None
    family, shape, vcpus = match.group(1), match.group(2), int(match.group(3))
    per_cpu, per_gb = FAMILY_HOURLY[family]
    gb = vcpus * (_E2_GB_PER_VCPU if family == "e2" else _GB_PER_VCPU)[shape]
    return vcpus * per_cpu + gb * per_gb


def gpu_price(accelerator_type: str, machine_type: str = "") -> float | None:
    """USD per GPU-hour, 0 for GPUs bundled in the machine type, ``None`` when unknown."""
    if machine_type in BUNDLED_HOURLY:
        return 0.0
    return GPU_HOURLY.get(accelerator_type)


@dataclass
class Estimate:
    """Lines of ``what: $x/h`` and a total; unknown prices are named and left out of the total."""

    title: str
    lines: list[str]
    total: float
    unknown: list[str]

    @classmethod
    def of(cls, title: str, parts: Iterable[tuple[str, float | None]]) -> Estimate:
        lines, unknown, total = [], [], 0.0
        for what, price in parts:
            if price is None:
                unknown.append(what)
                continue
            lines.append(f"{what}: ${price:.2f}/h")
            total += price
        return cls(title, lines, total, unknown)

    def render(self) -> str:
        """The text printed by the CLI (to stderr), labelled as an estimate, with the table's date and source."""
        out = [f"ESTIMATE (not a quote) of {self.title}: about ${self.total:.2f}/hour"]
        out += [f"  {line}" for line in self.lines]
        if self.unknown:
            out.append(f"  no price known for: {', '.join(self.unknown)} (left out of the total)")
        out.append(f"  price table of {PRICES_DATE}: {PRICES_SOURCE}; no Spot or committed-use discounts")
        return "\n".join(out)


def vm_parts(
    label: str, count: int, machine_type: str, accelerator_type: str | None, gpus: int, disk_gb: int
) -> list[tuple[str, float | None]]:
    """The priced parts of ``count`` identical VMs (or nodes)."""
    machine = machine_price(machine_type)
    parts: list[tuple[str, float | None]] = [
        (f"{label}: {count} x {machine_type}", None if machine is None else count * machine),
        (f"{label}: {count} x {disk_gb} GB boot disk", count * disk_gb * DISK_GB_HOURLY),
    ]
    if accelerator_type and gpus:
        price = gpu_price(accelerator_type, machine_type)
        parts.append(
            (f"{label}: {count * gpus} x {accelerator_type}", None if price is None else count * gpus * price)
        )
    return parts
