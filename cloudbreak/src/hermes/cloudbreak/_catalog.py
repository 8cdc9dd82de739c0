"""A region's current prices from the Cloud Billing Catalog API, the dated table as the fallback.

``CloudCatalogClient.list_skus(parent="services/6F81-5844-456A")`` (Compute Engine's service id)
returns every Compute Engine SKU. Each has a ``description`` such as ``"Nvidia Tesla T4 GPU running in
Americas"`` or ``"N1 Predefined Instance Core running in Americas"``, a ``category.usageType``
(``OnDemand``, ``Preemptible``, ``Commit1Yr``...), the ``serviceRegions`` it applies to, and
``pricingInfo[].pricingExpression`` with a ``usageUnit`` (``h`` for a core or GPU hour, ``GiBy.h``
for a GiB of memory an hour) and ``tieredRates[].unitPrice`` (a ``Money``: ``units`` + ``nanos``).
Only ``OnDemand`` SKUs of the region whose description is exactly one of ours count: the Spot,
commitment, custom and sole-tenancy SKUs (and "A100 80GB" next to "A100") are different prices.
Needs ``google-cloud-billing`` (``pip install "hermes-cloudbreak[pricing]"``).
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import Any

from hermes.cloudbreak._credentials import load_credentials
from hermes.cloudbreak._errors import GOOGLE_ERRORS, translate_error
from hermes.cloudbreak._pricing import OFFLINE, PRICES_DATE, PriceTable
from hermes.cloudbreak.exceptions import CloudConfigError

__all__ = ["COMPUTE_ENGINE", "catalog_prices"]

logger = logging.getLogger("hermes.cloudbreak.pricing")

#: Compute Engine's service in the Cloud Billing Catalog
COMPUTE_ENGINE = "services/6F81-5844-456A"
#: accelerator type -> the SKU description before " running in <place>"
GPU_SKUS = {
    "nvidia-tesla-t4": "Nvidia Tesla T4 GPU",
    "nvidia-tesla-p4": "Nvidia Tesla P4 GPU",
    "nvidia-tesla-p100": "Nvidia Tesla P100 GPU",
    "nvidia-tesla-v100": "Nvidia Tesla V100 GPU",
    "nvidia-l4": "Nvidia L4 GPU",
    "nvidia-tesla-a100": "Nvidia Tesla A100 GPU",
    "nvidia-a100-80gb": "Nvidia Tesla A100 80GB GPU",
}
#: machine family -> (core SKU, RAM SKU) descriptions before " running in <place>"
FAMILY_SKUS = {
    "n1": ("N1 Predefined Instance Core", "N1 Predefined Instance Ram"),
    "n2": ("N2 Instance Core", "N2 Instance Ram"),
    "n2d": ("N2D AMD Instance Core", "N2D AMD Instance Ram"),
    "e2": ("E2 Instance Core", "E2 Instance Ram"),
    "c2": ("Compute optimized Core", "Compute optimized Ram"),
}
_UNITS = {"h", "GiBy.h"}


def _catalog_client(credentials_file: str | Path | None, api_endpoint: str | None, credentials: Any) -> Any:
    from google.api_core.client_options import ClientOptions
    from google.cloud import billing_v1

    if credentials is None:
        credentials, _ = load_credentials(credentials_file)
    options = ClientOptions(api_endpoint=api_endpoint) if api_endpoint else None
    return billing_v1.CloudCatalogClient(transport="rest", credentials=credentials, client_options=options)


def _hourly(sku: Any) -> float | None:
    """The on-demand USD price per unit-hour of ``sku`` (its first tier), or ``None`` when not per hour."""
    for info in sku.pricing_info[:1]:
        expression = info.pricing_expression
        if expression.usage_unit not in _UNITS or not expression.tiered_rates:
            return None
        price = expression.tiered_rates[-1].unit_price  # a single tier from 0 for these SKUs
        return int(price.units) + price.nanos / 1e9
    return None


def _prices_by_description(skus: Any, region: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for sku in skus:
        if sku.category.usage_type != "OnDemand" or region not in sku.service_regions:
            continue
        head = sku.description.split(" running in ", 1)[0]
        price = _hourly(sku)
        if price is not None:
            found.setdefault(head, price)
    return found


def catalog_prices(
    region: str = "us-central1",
    *,
    client: Any = None,
    credentials: Any = None,
    credentials_file: str | Path | None = None,
    api_endpoint: str | None = None,
) -> PriceTable:
    """The on-demand prices of ``region`` from the Cloud Billing Catalog API, over the offline table.

    GPU prices and the per-vCPU / per-GB rates of the N1, N2, N2D, E2 and C2 families come from the
    catalog; what it does not answer (bundled machine types, disks, the GKE fee, forwarding rules)
    stays the table's, and :attr:`PriceTable.source` says which is which.

    Args:
        region: e.g. ``"us-central1"``.
        client: a ``billing_v1.CloudCatalogClient``; ``None`` builds one (REST) from the credentials.
        credentials: Google credentials; ``None`` loads ``credentials_file`` or ADC.
        credentials_file: a credentials JSON of any type.
        api_endpoint: another endpoint than cloudbilling.googleapis.com (a fake).

    Raises:
        CloudConfigError: google-cloud-billing is not installed.
        CloudbreakError: the catalog could not be read (the caller may fall back to ``OFFLINE``).
    """
    try:
        from google.cloud import billing_v1
    except ImportError as exc:
        raise CloudConfigError(
            'live prices need google-cloud-billing: pip install "hermes-cloudbreak[pricing]"'
        ) from exc
    catalog = client or _catalog_client(credentials_file, api_endpoint, credentials)
    request = billing_v1.ListSkusRequest(parent=COMPUTE_ENGINE, currency_code="USD")
    try:
        prices = _prices_by_description(catalog.list_skus(request=request), region)
    except GOOGLE_ERRORS as exc:
        raise translate_error(
            exc, f"read the Compute Engine prices of {region} from the Cloud Billing Catalog"
        ) from exc
    gpus = {gpu: prices[name] for gpu, name in GPU_SKUS.items() if name in prices}
    families = {
        family: (prices[core], prices[ram])
        for family, (core, ram) in FAMILY_SKUS.items()
        if core in prices and ram in prices
    }
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    source = (
        f"Cloud Billing Catalog API ({COMPUTE_ENGINE}, {region}, read {when}): {len(gpus)} GPU and "
        f"{len(families)} machine-family prices; the rest from the price table of {PRICES_DATE} (us-central1)"
    )
    logger.info("live prices of %s: GPUs %s, families %s", region, sorted(gpus), sorted(families))
    return PriceTable(
        gpu_hourly={**OFFLINE.gpu_hourly, **gpus},
        family_hourly={**OFFLINE.family_hourly, **families},
        bundled_hourly=OFFLINE.bundled_hourly,
        disk_gb_hourly=OFFLINE.disk_gb_hourly,
        gke_cluster_hourly=OFFLINE.gke_cluster_hourly,
        forwarding_rule_hourly=OFFLINE.forwarding_rule_hourly,
        source=source,
    )
