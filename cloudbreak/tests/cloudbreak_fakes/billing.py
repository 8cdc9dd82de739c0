"""A loopback REST fake of the Cloud Billing Catalog API's ``GET /v1/services/{id}/skus``.

SKUs are google-cloud-billing's own ``Sku`` type serialised, so every field has the API's JSON name
(``skuId``, ``category.usageType``, ``serviceRegions``, ``pricingInfo[].pricingExpression.usageUnit``,
``tieredRates[].unitPrice.units``/``nanos``: cloud.google.com/billing/docs/reference/rest/v1/services.skus).
Descriptions are the catalog's (``"Nvidia Tesla T4 GPU running in Americas"``, ``"N1 Predefined Instance
Core running in Americas"``, ``"Spot Preemptible ..."``, ``"Commitment v1: ..."``), as they appear in
billing exports and Google's Cloud Billing docs. Pages of ``page_size`` with ``nextPageToken``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from google.cloud import billing_v1 as b

from cloudbreak_fakes._http import JsonHandler, serve_on_loopback

COMPUTE_ENGINE_ID = "6F81-5844-456A"


def sku(
    sku_id: str, description: str, regions: list[str], usd: float, *, unit: str = "h", usage: str = "OnDemand"
) -> b.Sku:
    units, nanos = int(usd), round((usd - int(usd)) * 1e9)
    group = "GPU" if "GPU" in description else ("RAM" if "Ram" in description else "CPU")
    return b.Sku(
        name=f"services/{COMPUTE_ENGINE_ID}/skus/{sku_id}",
        sku_id=sku_id,
        description=description,
        category=b.Category(
            service_display_name="Compute Engine",
            resource_family="Compute",
            resource_group=group,
            usage_type=usage,
        ),
        service_regions=regions,
        pricing_info=[
            b.PricingInfo(
                summary="",
                pricing_expression=b.PricingExpression(
                    usage_unit=unit,
                    usage_unit_description="hour" if unit == "h" else "gibibyte hour",
                    base_unit="s" if unit == "h" else "By.s",
                    base_unit_description="second" if unit == "h" else "byte second",
                    base_unit_conversion_factor=3600 if unit == "h" else 3865470566400,
                    display_quantity=1,
                    tiered_rates=[
                        b.PricingExpression.TierRate(
                            start_usage_amount=0,
                            unit_price={"currency_code": "USD", "units": units, "nanos": nanos},
                        )
                    ],
                ),
                currency_conversion_rate=1,
            )
        ],
        service_provider_name="Google",
    )


@dataclass
class FakeBilling:
    skus: list[b.Sku] = field(default_factory=list)
    page_size: int = 3
    disabled: bool = False  # the API is not enabled in the project: Google's 403 SERVICE_DISABLED
    requests: list[dict[str, list[str]]] = field(default_factory=list)
    port: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_fake_billing(fake: FakeBilling) -> ThreadingHTTPServer:
    class Handler(JsonHandler):
        def _handle(self, method: str) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            fake.requests.append(query)
            if method != "GET" or url.path != f"/v1/services/{COMPUTE_ENGINE_ID}/skus":
                return self._send(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": url.path}})
            if (
                fake.disabled
            ):  # Google's answer for an API not enabled in the project (reason SERVICE_DISABLED)
                message = (
                    "Cloud Billing API has not been used in project 1234 before or it is disabled. Enable it by "
                    "visiting https://console.developers.google.com/apis/api/cloudbilling.googleapis.com/overview"
                    "?project=1234 then retry."
                )
                return self._send(
                    403, {"error": {"code": 403, "status": "PERMISSION_DENIED", "message": message}}
                )
            start = int(query.get("pageToken", ["0"])[0])
            page = b.ListSkusResponse(skus=fake.skus[start : start + fake.page_size])
            if start + fake.page_size < len(fake.skus):
                page.next_page_token = str(start + fake.page_size)
            return self._send(200, json.loads(b.ListSkusResponse.to_json(page)))

    server = serve_on_loopback(Handler, "fake-billing")
    fake.port = server.server_address[1]
    return server


def compute_engine_catalog() -> list[b.Sku]:
    """us-central1 and europe-west4 SKUs, with the look-alikes a parser must not take."""
    us, eu = ["us-central1", "us-east1"], ["europe-west4"]
    return [
        sku("C7D8-0001", "Nvidia Tesla T4 GPU running in Americas", us, 0.35),
        sku(
            "C7D8-0002",
            "Spot Preemptible Nvidia Tesla T4 GPU running in Americas",
            us,
            0.14,
            usage="Preemptible",
        ),
        sku(
            "C7D8-0003",
            "Commitment v1: Nvidia Tesla T4 GPU in Americas for 1 Year",
            us,
            0.22,
            usage="Commit1Yr",
        ),
        sku("C7D8-0004", "Nvidia Tesla T4 GPU running in Netherlands", eu, 0.3675),
        sku("C7D8-0005", "Nvidia L4 GPU running in Americas", us, 0.560040),
        # a made-up price: only that the 80GB card is kept apart from the 40GB one is tested
        sku("C7D8-0006", "Nvidia Tesla A100 80GB GPU running in Americas", us, 3.5),
        sku("C7D8-0007", "Nvidia Tesla A100 GPU running in Americas", us, 2.933908),
        sku("C7D8-0008", "N1 Predefined Instance Core running in Americas", us, 0.031611),
        sku("C7D8-0009", "N1 Predefined Instance Ram running in Americas", us, 0.004237, unit="GiBy.h"),
        sku("C7D8-0010", "N2 Custom Instance Core running in Americas", us, 0.033174),
        sku("C7D8-0011", "N2 Instance Core running in Americas", us, 0.031611),
        sku("C7D8-0012", "N2 Instance Ram running in Americas", us, 0.004237, unit="GiBy.h"),
        # chosen so that n1-standard-8 costs 0.41834, SkyPilot's europe-west4 row
        sku("C7D8-0013", "N1 Predefined Instance Core running in Netherlands", eu, 0.034802),
        sku("C7D8-0014", "N1 Predefined Instance Ram running in Netherlands", eu, 0.004664, unit="GiBy.h"),
        sku("C7D8-0015", "E2 Instance Core running in Americas", us, 0.021811),  # its Ram SKU is missing
    ]
