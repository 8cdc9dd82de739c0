"""Live prices from the Cloud Billing Catalog API (a REST fake): the region's on-demand SKUs only,
every page, the dated table for the rest, and the fallback when the API cannot be read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cloudbreak_fakes.billing import FakeBilling, compute_engine_catalog, start_fake_billing
from google.auth.credentials import AnonymousCredentials
from typer.testing import CliRunner

from hermes.cloudbreak import CloudApiError
from hermes.cloudbreak._catalog import catalog_prices
from hermes.cloudbreak._cli import app
from hermes.cloudbreak._pricing import OFFLINE, PriceTable, machine_price, vm_parts


@pytest.fixture
def billing() -> Iterator[FakeBilling]:
    fake = FakeBilling(skus=compute_engine_catalog())
    server = start_fake_billing(fake)
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def prices(billing: FakeBilling, region: str) -> PriceTable:
    return catalog_prices(region, credentials=AnonymousCredentials(), api_endpoint=billing.endpoint)


def test_the_regions_on_demand_prices_replace_the_tables(billing: FakeBilling) -> None:
    table = prices(billing, "us-central1")
    assert table.gpu_hourly["nvidia-tesla-t4"] == 0.35  # not the Spot 0.14 nor the commitment 0.22
    assert table.gpu_hourly["nvidia-tesla-a100"] == pytest.approx(2.933908)  # not the 80GB card's
    assert table.gpu_hourly["nvidia-a100-80gb"] == 3.5  # the table has none: the catalog fills it in
    assert table.family_hourly["n1"] == pytest.approx((0.031611, 0.004237))
    assert table.family_hourly["n2"] == pytest.approx((0.031611, 0.004237))  # not the custom core's 0.033174
    assert table.family_hourly["e2"] == OFFLINE.family_hourly["e2"]  # no Ram SKU: the table's pair stays
    assert table.bundled_hourly == OFFLINE.bundled_hourly and table.gke_cluster_hourly == 0.10
    assert table.source.startswith("Cloud Billing Catalog API (services/6F81-5844-456A, us-central1, read ")
    assert "4 GPU and 2 machine-family prices; the rest from the price table of 2026-12-03" in table.source
    assert [q["pageToken"][0] for q in billing.requests[1:]] == ["3", "6", "9", "12"]  # every page read
    assert all(q["currencyCode"] == ["USD"] for q in billing.requests)


def test_another_region_gets_its_own_prices(billing: FakeBilling) -> None:
    table = prices(billing, "europe-west4")
    assert table.gpu_hourly["nvidia-tesla-t4"] == 0.3675
    assert machine_price("n1-standard-8", table) == pytest.approx(0.41834, abs=1e-4)
    assert (
        "nvidia-l4" not in table.gpu_hourly
        or table.gpu_hourly["nvidia-l4"] == OFFLINE.gpu_hourly["nvidia-l4"]
    )
    assert sum(
        p or 0 for _, p in vm_parts("x", 2, "n1-standard-8", "nvidia-tesla-t4", 1, 0, table)
    ) == pytest.approx(2 * machine_price("n1-standard-8", table) + 2 * 0.3675)


def test_an_api_that_is_not_enabled_is_a_clear_error(billing: FakeBilling) -> None:
    billing.disabled = True
    with pytest.raises(CloudApiError, match="Cloud Billing API has not been used in project 1234"):
        prices(billing, "us-central1")


def cli(billing: FakeBilling, *args: str) -> Any:
    return CliRunner().invoke(
        app,
        ["--anonymous", "--billing-endpoint", billing.endpoint, "--live-prices", *args],
        catch_exceptions=False,
    )


UP = ["cluster", "up", "--name", "r", "--project", "hermes-p", "--location", "europe-west4-a"]


def test_cli_estimates_with_live_prices_of_the_clusters_region(billing: FakeBilling) -> None:
    result = cli(billing, *UP, "--gpu-type", "nvidia-tesla-t4", "--gpus", "1", "--nodes", "2", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "2 x nvidia-tesla-t4: $0.73/h" in result.stderr  # 2 x 0.3675 (us-central1 would be $0.70)
    assert "2 x n1-standard-8: $0.84/h" in result.stderr  # 2 x 0.41834
    assert "Cloud Billing Catalog API (services/6F81-5844-456A, europe-west4, read " in result.stderr


def test_cli_falls_back_to_the_table_when_the_catalog_cannot_be_read(billing: FakeBilling) -> None:
    billing.disabled = True
    result = cli(billing, *UP, "--gpu-type", "nvidia-tesla-t4", "--gpus", "1", "--nodes", "2", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "warning: live prices unavailable (read the Compute Engine prices of europe-west4" in result.stderr
    assert "2 x nvidia-tesla-t4: $0.70/h" in result.stderr
    assert "price table of 2026-12-03" in result.stderr
