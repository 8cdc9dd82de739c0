"""Checks of project ids, locations, counts and GPU types, made before any request or plan.

Google refuses these inputs only after a request is sent (or never sees them: a dry run
printed ``--location "us-central1-zz9; rm -rf /"`` verbatim into a request path), so they are
checked here against Google's documented rules, each quoted beside its check.
"""

from __future__ import annotations

import os
import re

from hermes.cloudbreak.exceptions import CloudConfigError

__all__ = [
    "ACCELERATORS_ENV",
    "GKE_ACCELERATORS",
    "check_accelerator",
    "check_count",
    "check_location",
    "check_project",
    "check_zone",
]

# "A project ID ... must be 6 to 30 characters in length; can only contain lowercase letters,
# numbers, and hyphens; must start with a letter; cannot end with a hyphen."
# (cloud.google.com/resource-manager/docs/creating-managing-projects, "Project ID").
# Older projects may be domain-scoped, "example.com:my-project" (same page, and
# cloud.google.com/architecture/best-practices-for-enterprise-organizations).
_PROJECT = re.compile(r"^(?:[a-z][-a-z0-9.]*[a-z0-9]:)?[a-z][-a-z0-9]{4,28}[a-z0-9]$")

# Regions and zones: "A region ... such as us-central1"; "zones have names such as
# us-central1-a" (cloud.google.com/compute/docs/regions-zones): <geography>-<area><n>[-<letter>].
_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")

#: GPU types GKE documents for ``acceleratorType`` / ``--accelerator type=...``
#: (cloud.google.com/kubernetes-engine/docs/how-to/gpus, "Available GPU models", and
#: cloud.google.com/compute/docs/gpus). New models appear there before they appear here:
#: add names through :data:`ACCELERATORS_ENV`.
GKE_ACCELERATORS = frozenset(
    {
        "nvidia-b200",
        "nvidia-gb200",
        "nvidia-h100-80gb",
        "nvidia-h100-mega-80gb",
        "nvidia-h200-141gb",
        "nvidia-l4",
        "nvidia-a100-80gb",
        "nvidia-rtx-pro-6000",
        "nvidia-tesla-a100",
        "nvidia-tesla-k80",
        "nvidia-tesla-p100",
        "nvidia-tesla-p4",
        "nvidia-tesla-t4",
        "nvidia-tesla-v100",
    }
)

#: Comma-separated GPU type names accepted besides :data:`GKE_ACCELERATORS` (an override for
#: types newer than this list).
ACCELERATORS_ENV = "HERMES_CLOUDBREAK_EXTRA_ACCELERATORS"


def check_project(owner: str, project: object) -> str:
    """Return ``project`` if it is a valid GCP project id; raise :class:`CloudConfigError` otherwise."""
    if not isinstance(project, str) or not _PROJECT.match(project):
        raise CloudConfigError(
            f"{owner}: project {project!r} is not a GCP project id: expected 6 to 30 lowercase letters, "
            "digits and hyphens, starting with a letter and not ending with a hyphen (e.g. 'my-project-123'); "
            "the id is not the project's display name"
        )
    return project


def check_zone(owner: str, zone: object) -> str:
    """Return ``zone`` if it is shaped like a Compute Engine zone (``us-central1-a``)."""
    if not isinstance(zone, str) or not _ZONE.match(zone):
        raise CloudConfigError(
            f"{owner}: zone {zone!r} is not a Compute Engine zone: expected <region>-<letter>, "
            "e.g. 'us-central1-a' or 'europe-west4-b'"
        )
    return zone


def check_location(owner: str, location: object, *, allow_all: bool = False) -> str:
    """Return ``location`` if it is a zone (``us-central1-a``) or a region (``us-central1``).

    With ``allow_all``, ``"-"`` (every location, as the GKE and Compute list calls accept it) passes too.
    """
    if allow_all and location == "-":
        return location
    if not isinstance(location, str) or not (_ZONE.match(location) or _REGION.match(location)):
        every = " or '-' (every location)" if allow_all else ""
        raise CloudConfigError(
            f"{owner}: location {location!r} is not a GCP zone or region: expected e.g. 'us-central1-a' "
            f"(a zone) or 'us-central1' (a region){every}"
        )
    return location


def check_count(owner: str, field: str, count: object, *, minimum: int = 1) -> int:
    """Return ``count`` if it is an int >= ``minimum``."""
    if isinstance(count, bool) or not isinstance(count, int) or count < minimum:
        raise CloudConfigError(f"{owner}: {field} must be an integer >= {minimum}, got {count!r}")
    return count


def check_accelerator(owner: str, accelerator: str | None) -> None:
    """Refuse a GPU type GKE does not document (names in :data:`ACCELERATORS_ENV` are accepted)."""
    if accelerator is None:
        return
    extra = {n.strip() for n in os.environ.get(ACCELERATORS_ENV, "").split(",") if n.strip()}
    if accelerator in GKE_ACCELERATORS or accelerator in extra:
        return
    raise CloudConfigError(
        f"{owner}: accelerator_type {accelerator!r} is not a GPU type GKE documents; expected one of "
        f"{sorted(GKE_ACCELERATORS)}. A newer type can be allowed with "
        f"{ACCELERATORS_ENV}={accelerator}"
    )
