"""A rough $/hour estimate of what ``cluster up``, ``deploy`` and ``swarm up`` start. An ESTIMATE only.

The table is small and dated on purpose: list prices change, differ by region (these are
us-central1; most other regions cost the same to about 30 % more), and sustained-use,
committed-use and Spot discounts are not applied (Spot VMs and GPUs typically cost 60-91 % less,
and vary). Check the Google Cloud Pricing Calculator before a large run.

Where each number comes from (checked 2026-12-03; the table is not fetched at run time, but
:func:`hermes.cloudbreak._catalog.catalog_prices` — ``hermes cloud --live-prices`` — reads a region's
current GPU and machine-family prices from the Cloud Billing Catalog API over it):

* GKE cluster management fee, $0.10 per cluster per hour: Google's "Google Kubernetes Engine pricing"
  page (cloud.google.com/kubernetes-engine/pricing, stored copy): "A flat cluster management fee of
  $0.10 per cluster per hour (charged in 1 second increments) applies to all GKE clusters", with a
  free tier of "$74.40 in monthly credits per billing account" (one zonal or Autopilot cluster).
* GPUs (T4, P4, P100, V100, L4, A100 40GB) and the N1, N2, N2D vCPU/memory rates: SkyPilot's GCP
  catalog, github.com/skypilot-org/skypilot-catalog ``catalogs/v8/gcp/vms.csv`` (made from Google's
  Cloud Billing Catalog API), us-central1 on-demand rows: T4 0.35, P4 0.6, P100 1.46, V100 2.48,
  L4 0.56004, A100 2.93391 per GPU-hour; a2-highgpu-1g host 0.73948 (so 3.67339 with its A100);
  n1-standard-8 0.38, n2-highcpu-96 3.44141, n2-highmem-128 7.70698, n2d-highcpu-16 0.49901 per hour,
  which the per-vCPU/per-GB rates below reproduce. Google's own sole-tenant pricing page quotes the
  same N1 base rates ("$0.031611 for 1 vCPU", "$0.004237 for 1 GB of memory"). Google's GPU and VM
  pricing pages render their tables with JavaScript: their stored copies hold no numbers.
* NOT verified against a source (kept from the first table, marked below): E2 and C2 rates, the G2
  bundles, the pd-standard disk rate and the forwarding-rule rate. H100 and A100 80GB are left out:
  the one source read disagrees with itself across regions for them (an estimate says "no price
  known" rather than guess).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["OFFLINE", "PRICES_DATE", "PRICES_SOURCE", "Estimate", "PriceTable", "gpu_price", "machine_price"]

PRICES_DATE = "2026-12-03"
PRICES_SOURCE = (
    "us-central1 on-demand list prices: GKE fee from cloud.google.com/kubernetes-engine/pricing; GPU and "
    "N1/N2/N2D rates from SkyPilot's GCP catalog (built from the Cloud Billing Catalog API); E2, C2, G2, "
    "disk and forwarding-rule rates unverified"
)

#: USD per GPU-hour, on demand, us-central1 (SkyPilot catalog v8, checked 2026-12-03).
GPU_HOURLY = {
    "nvidia-tesla-t4": 0.35,
    "nvidia-tesla-p4": 0.60,
    "nvidia-tesla-v100": 2.48,
    "nvidia-tesla-p100": 1.46,
    "nvidia-l4": 0.56004,
    "nvidia-tesla-a100": 2.93391,
}
#: USD per vCPU-hour and per GB-hour of memory of predefined machine families, us-central1.
FAMILY_HOURLY = {
    "n1": (0.031611, 0.004237),  # verified: n1-standard-8 = 0.38/h
    "n2": (0.031611, 0.004237),  # verified: n2-highcpu-96 = 3.44141/h, n2-highmem-128 = 7.70698/h
    "n2d": (0.027502, 0.003686),  # verified: n2d-highcpu-16 = 0.49901/h
    "e2": (0.021811, 0.002923),  # not verified
    "c2": (0.03398, 0.00455),  # not verified
}
#: GB of memory per vCPU: N1's shapes, and those of the later families (n2-standard-8: 32 GB,
#: n2-highmem-16: 128 GB, n2d-highcpu-16: 16 GB). n2-highmem above 80 vCPUs has less (6.75).
_N1_GB_PER_VCPU = {"standard": 3.75, "highmem": 6.5, "highcpu": 0.9}
_GB_PER_VCPU = {"standard": 4.0, "highmem": 8.0, "highcpu": 1.0}
#: machine types that include their GPUs (USD per hour, the GPUs included).
BUNDLED_HOURLY = {
    "g2-standard-4": 0.70683,  # not verified (its L4 alone is 0.56004)
    "g2-standard-8": 0.85362,  # not verified
    "a2-highgpu-1g": 0.73948 + 2.93391,  # verified: host + one A100 40GB
}
DISK_GB_HOURLY = 0.04 / 730  # pd-standard, per GB-month / hours in a month (not verified)
GKE_CLUSTER_HOURLY = 0.10  # the cluster management fee (verified; a monthly credit covers one zonal cluster)
FORWARDING_RULE_HOURLY = 0.025  # each load balancer's forwarding rule (not verified)
_MACHINE = re.compile(r"^([a-z0-9]+)-(standard|highmem|highcpu)-([0-9]+)$")


@dataclass(frozen=True)
class PriceTable:
    """USD prices an estimate uses; :data:`OFFLINE` is the dated table above, :func:`catalog_prices`
    (``hermes.cloudbreak._catalog``) reads a region's from the Cloud Billing Catalog API.

    Args:
        gpu_hourly: per GPU-hour, by accelerator type.
        family_hourly: ``(per vCPU-hour, per GB-hour)`` by machine family.
        bundled_hourly: per hour of machine types that include their GPUs.
        disk_gb_hourly: per GB-hour of pd-standard.
        gke_cluster_hourly: the GKE cluster management fee per hour.
        forwarding_rule_hourly: per forwarding rule-hour.
        source: where the prices come from (printed under every estimate).
    """

    gpu_hourly: Mapping[str, float]
    family_hourly: Mapping[str, tuple[float, float]]
    bundled_hourly: Mapping[str, float]
    disk_gb_hourly: float
    gke_cluster_hourly: float
    forwarding_rule_hourly: float
    source: str


OFFLINE = PriceTable(
    gpu_hourly=GPU_HOURLY,
    family_hourly=FAMILY_HOURLY,
    bundled_hourly=BUNDLED_HOURLY,
    disk_gb_hourly=DISK_GB_HOURLY,
    gke_cluster_hourly=GKE_CLUSTER_HOURLY,
    forwarding_rule_hourly=FORWARDING_RULE_HOURLY,
    source=f"price table of {PRICES_DATE}: {PRICES_SOURCE}",
)


def machine_price(machine_type: str, table: PriceTable = OFFLINE) -> float | None:
    """USD per hour of ``machine_type`` (GPUs of bundled types included), or ``None`` when unknown."""
    if machine_type in table.bundled_hourly:
        return table.bundled_hourly[machine_type]
    match = _MACHINE.match(machine_type)
    if not match or match.group(1) not in table.family_hourly:
        return None
    family, shape, vcpus = match.group(1), match.group(2), int(match.group(3))
    per_cpu, per_gb = table.family_hourly[family]
    gb = vcpus * (_N1_GB_PER_VCPU if family == "n1" else _GB_PER_VCPU)[shape]
    return vcpus * per_cpu + gb * per_gb


def gpu_price(accelerator_type: str, machine_type: str = "", table: PriceTable = OFFLINE) -> float | None:
    """USD per GPU-hour, 0 for GPUs bundled in the machine type, ``None`` when unknown."""
    if machine_type in table.bundled_hourly:
        return 0.0
    return table.gpu_hourly.get(accelerator_type)


@dataclass
class Estimate:
    """Lines of ``what: $x/h`` and a total; unknown prices are named and left out of the total."""

    title: str
    lines: list[str]
    total: float
    unknown: list[str]
    source: str = OFFLINE.source

    @classmethod
    def of(
        cls, title: str, parts: Iterable[tuple[str, float | None]], source: str = OFFLINE.source
    ) -> Estimate:
        lines, unknown, total = [], [], 0.0
        for what, price in parts:
            if price is None:
                unknown.append(what)
                continue
            lines.append(f"{what}: ${price:.2f}/h")
            total += price
        return cls(title, lines, total, unknown, source)

    def render(self) -> str:
        """The text printed by the CLI (to stderr), labelled as an estimate, with the table's date and source."""
        out = [f"ESTIMATE (not a quote) of {self.title}: about ${self.total:.2f}/hour"]
        out += [f"  {line}" for line in self.lines]
        if self.unknown:
            out.append(f"  no price known for: {', '.join(self.unknown)} (left out of the total)")
        out.append(f"  {self.source}; no Spot or committed-use discounts")
        return "\n".join(out)


def vm_parts(
    label: str,
    count: int,
    machine_type: str,
    accelerator_type: str | None,
    gpus: int,
    disk_gb: int,
    table: PriceTable = OFFLINE,
) -> list[tuple[str, float | None]]:
    """The priced parts of ``count`` identical VMs (or nodes)."""
    machine = machine_price(machine_type, table)
    parts: list[tuple[str, float | None]] = [
        (f"{label}: {count} x {machine_type}", None if machine is None else count * machine),
        (f"{label}: {count} x {disk_gb} GB boot disk", count * disk_gb * table.disk_gb_hourly),
    ]
    if accelerator_type and gpus:
        price = gpu_price(accelerator_type, machine_type, table)
        parts.append(
            (f"{label}: {count * gpus} x {accelerator_type}", None if price is None else count * gpus * price)
        )
    return parts
