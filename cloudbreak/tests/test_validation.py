"""Project ids, locations, counts and GPU types are checked before any request or plan (issue 16)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hermes.cloudbreak import CloudConfigError
from hermes.cloudbreak._cli import app
from hermes.cloudbreak._validation import (
    ACCELERATORS_ENV,
    check_accelerator,
    check_count,
    check_location,
    check_project,
    check_zone,
)
from hermes.cloudbreak.compute import VMSpec, insert_requests
from hermes.cloudbreak.gke import ClusterSpec, NodePoolSpec, create_cluster_request
from hermes.cloudbreak.kubernetes import TritonSpec

runner = CliRunner()


@pytest.mark.parametrize(
    "project",
    ["my-project", "abcdef", "a" + "b" * 29, "hermes-p1", "example.com:my-project", "project-123"],
)
def test_valid_project_ids_pass(project: str) -> None:
    assert check_project("x", project) == project


@pytest.mark.parametrize(
    "project",
    ["My Project!", "p1", "abcde", "a" * 31, "1project", "project-", "my_project", "", None, "proj;rm -rf /"],
)
def test_invalid_project_ids_name_the_rule(project: object) -> None:
    with pytest.raises(CloudConfigError) as info:
        check_project("ClusterManager", project)
    assert f"project {project!r} is not a GCP project id" in str(info.value)
    assert (
        "6 to 30 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen"
        in str(info.value)
    )


@pytest.mark.parametrize(
    "location", ["us-central1-a", "us-central1", "europe-west4-b", "northamerica-northeast1"]
)
def test_zones_and_regions_pass(location: str) -> None:
    assert check_location("x", location) == location


@pytest.mark.parametrize(
    "location", ["us-central1-zz9; rm -rf /", "US-CENTRAL1", "us central1", "-", "", "central1"]
)
def test_bad_locations_are_refused_with_examples(location: str) -> None:
    with pytest.raises(CloudConfigError, match=r"is not a GCP zone or region: expected e.g. 'us-central1-a'"):
        check_location("x", location)


def test_every_location_is_allowed_only_where_listing_takes_it() -> None:
    assert check_location("x", "-", allow_all=True) == "-"
    with pytest.raises(CloudConfigError, match="not a Compute Engine zone"):
        check_zone("x", "us-central1")


@pytest.mark.parametrize("count", [-3, 0, 1.5, True, "2"])
def test_counts_must_be_positive_integers(count: object) -> None:
    with pytest.raises(CloudConfigError, match=rf"count must be an integer >= 1, got {count!r}"):
        check_count("Swarm", "count", count)


def test_an_undocumented_gpu_type_is_refused_with_the_documented_list_and_the_override(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ACCELERATORS_ENV, raising=False)
    with pytest.raises(CloudConfigError) as info:
        NodePoolSpec(name="gpus", accelerator_type="nvidia-tesla-h9000", accelerator_count=1)
    message = str(info.value)
    assert "accelerator_type 'nvidia-tesla-h9000' is not a GPU type GKE documents" in message
    assert "'nvidia-tesla-t4'" in message and "'nvidia-l4'" in message
    assert f"{ACCELERATORS_ENV}=nvidia-tesla-h9000" in message
    with pytest.raises(CloudConfigError, match="not a GPU type GKE documents"):
        VMSpec(name="vm", accelerator_type="nvidia-tesla-h9000", accelerator_count=1)
    with pytest.raises(CloudConfigError, match="not a GPU type GKE documents"):
        TritonSpec(name="t", model_repository="gs://b/r", accelerator_type="nvidia-tesla-h9000")
    monkeypatch.setenv(ACCELERATORS_ENV, "nvidia-next, nvidia-tesla-h9000")
    pool = NodePoolSpec(name="gpus", accelerator_type="nvidia-tesla-h9000", accelerator_count=1)
    assert pool.to_proto().config.accelerators[0].accelerator_type == "nvidia-tesla-h9000"
    check_accelerator("x", "nvidia-next")


def test_request_builders_refuse_bad_projects_locations_and_counts() -> None:
    spec = ClusterSpec(name="c1", node_pools=(NodePoolSpec(name="cpu"),))
    with pytest.raises(CloudConfigError, match="'My Project!' is not a GCP project id"):
        create_cluster_request("My Project!", "us-central1-a", spec)
    with pytest.raises(CloudConfigError, match="is not a GCP zone or region"):
        create_cluster_request("my-project", "us-central1-zz9; rm -rf /", spec)
    with pytest.raises(CloudConfigError, match="count must be an integer >= 1, got -3"):
        insert_requests(VMSpec(name="vm"), -3, project="my-project", zone="us-central1-a")


def _cli(*args: str) -> object:
    return runner.invoke(app, ["--anonymous", *args], catch_exceptions=False)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            [
                "swarm",
                "up",
                "--name",
                "w",
                "--count",
                "-3",
                "--project",
                "my-project",
                "--zone",
                "us-central1-a",
            ],
            "--count: the number of VMs must be an integer >= 1, got -3",
        ),
        (
            ["cluster", "up", "--name", "c", "--project", "My Project!", "--location", "us-central1-a"],
            "--project: project 'My Project!' is not a GCP project id",
        ),
        (
            [
                "cluster",
                "up",
                "--name",
                "c",
                "--project",
                "my-project",
                "--location",
                "us-central1-zz9; rm -rf /",
            ],
            "--location: location 'us-central1-zz9; rm -rf /' is not a GCP zone or region",
        ),
        (
            ["cluster", "down", "--name", "c", "--project", "my-project", "--location", "us-central1-zz9"],
            "is not a GCP zone or region",
        ),
        (["cluster", "list", "--project", "p1"], "project 'p1' is not a GCP project id"),
        (
            ["swarm", "down", "--name", "w", "--project", "my-project", "--zone", "us-central1"],
            "not a Compute Engine zone",
        ),
        (
            ["swarm", "run", "true", "--name", "w", "--project", "x!", "--zone", "us-central1-a"],
            "not a GCP project id",
        ),
        (
            [
                "cluster",
                "up",
                "--name",
                "c",
                "--project",
                "my-project",
                "--location",
                "us-central1-a",
                "--gpu-type",
                "nvidia-tesla-h9000",
                "--gpus",
                "1",
            ],
            "'nvidia-tesla-h9000' is not a GPU type GKE documents",
        ),
    ],
)
def test_dry_runs_refuse_what_google_would_refuse_and_print_no_plan(args: list[str], expected: str) -> None:
    result = _cli(*args, "--dry-run")
    assert result.exit_code == 1
    assert expected in result.stderr
    assert result.stdout == ""  # no plan printed


def test_a_string_where_a_list_is_expected_is_refused() -> None:
    from hermes.cloudbreak._leftovers import find_leftovers

    with pytest.raises(
        CloudConfigError,
        match=r"locations must be a list of zones or regions, got the string 'us-central1-a'",
    ):
        find_leftovers(project="my-project", locations="us-central1-a")
    with pytest.raises(
        CloudConfigError, match=r"server_args must be a tuple of '--flag=value' strings, got the string"
    ):
        TritonSpec(name="t", model_repository="gs://b/r", server_args="--log-verbose=1")  # type: ignore[arg-type]
