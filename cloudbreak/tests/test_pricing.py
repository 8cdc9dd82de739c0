"""The $/hour estimate: the table's arithmetic, unknown prices named, labelled as an estimate with its date."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hermes.cloudbreak._cli import app
from hermes.cloudbreak._pricing import PRICES_DATE, Estimate, gpu_price, machine_price, vm_parts


def test_machine_prices_follow_the_family_rates() -> None:
    assert machine_price("n1-standard-8") == pytest.approx(8 * 0.031611 + 30 * 0.004237)
    assert machine_price("e2-standard-4") == pytest.approx(4 * 0.021811 + 16 * 0.002923)
    assert machine_price("g2-standard-4") == pytest.approx(0.70683)  # includes its L4
    assert gpu_price("nvidia-l4", "g2-standard-4") == 0.0
    assert machine_price("x9-mega-4") is None and gpu_price("nvidia-b300") is None


def test_unknown_prices_are_named_and_left_out() -> None:
    estimate = Estimate.of("swarm s", vm_parts("VMs", 2, "x9-mega-4", "nvidia-tesla-t4", 1, 50))
    assert estimate.total == pytest.approx(2 * 0.35 + 2 * 50 * 0.04 / 730)
    text = estimate.render()
    assert text.startswith("ESTIMATE (not a quote) of swarm s: about $0.71/hour")
    assert "no price known for: VMs: 2 x x9-mega-4 (left out of the total)" in text
    assert f"price table of {PRICES_DATE}" in text


def test_regional_cluster_estimate_counts_every_zone() -> None:
    args = ["cluster", "up", "--name", "r", "--project", "hermes-p", "--location", "us-central1"]
    result = CliRunner().invoke(
        app, [*args, "--gpu-type", "nvidia-tesla-t4", "--gpus", "1", "--nodes", "2", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert "gpus: 2 node(s)/zone x 3 zone(s) x 1 nvidia-tesla-t4 = 6 GPUs" in result.stderr
    assert "6 x nvidia-tesla-t4: $2.10/h" in result.stderr


def test_swarm_up_prints_an_estimate() -> None:
    args = ["swarm", "up", "--name", "s", "--count", "4", "--project", "hermes-p", "--zone", "us-central1-a"]
    result = CliRunner().invoke(
        app, [*args, "--gpu-type", "nvidia-l4", "--gpus", "1", "--machine-type", "g2-standard-4", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert "ESTIMATE (not a quote) of VM swarm s: about $2.84/hour" in result.stderr  # 4 x (0.70683 + disk)
    assert "4 x nvidia-l4: $0.00/h" in result.stderr  # bundled in g2


@pytest.mark.parametrize(
    ("machine_type", "hourly"),
    [  # SkyPilot's GCP catalog (catalogs/v8/gcp/vms.csv), us-central1 on-demand rows, read 2026-12-03
        ("n1-standard-8", 0.38),
        ("n2-highcpu-96", 3.44141),
        ("n2d-highcpu-16", 0.49901),
        ("a2-highgpu-1g", 0.73948 + 2.93391),
    ],
)
def test_machine_prices_match_the_checked_source(machine_type: str, hourly: float) -> None:
    assert machine_price(machine_type) == pytest.approx(hourly, abs=1e-4)


def test_later_families_have_four_gb_per_vcpu_not_n1s_three_and_three_quarters() -> None:
    assert machine_price("n2-standard-8") == pytest.approx(8 * 0.031611 + 32 * 0.004237)
    assert machine_price("n1-standard-8") == pytest.approx(8 * 0.031611 + 30 * 0.004237)


@pytest.mark.parametrize(
    ("gpu", "hourly"),
    [
        ("nvidia-tesla-t4", 0.35),
        ("nvidia-tesla-p4", 0.6),
        ("nvidia-tesla-p100", 1.46),
        ("nvidia-tesla-v100", 2.48),
        ("nvidia-l4", 0.56004),
        ("nvidia-tesla-a100", 2.93391),
    ],
)
def test_gpu_prices_match_the_checked_source(gpu: str, hourly: float) -> None:
    assert gpu_price(gpu) == hourly


def test_gpus_without_a_checked_price_are_unknown_not_guessed() -> None:
    assert gpu_price("nvidia-h100-80gb") is None and gpu_price("nvidia-a100-80gb") is None
    assert "GKE fee from cloud.google.com/kubernetes-engine/pricing" in Estimate.of("x", []).render()
