"""Validation of the names and labels that GCP and Kubernetes accept."""

from __future__ import annotations

import re
from collections.abc import Mapping

from hermes.cloudbreak.exceptions import CloudConfigError

__all__ = ["MANAGED_BY", "MANAGED_BY_LABEL", "check_labels", "check_name"]

#: The GCP label hermes puts on every cluster and VM it creates, and its value (``hermes cloud gc`` finds them by it).
MANAGED_BY_LABEL = "managed-by"
MANAGED_BY = "hermes-cloudbreak"

_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_KEY = re.compile(r"^[a-z][-_a-z0-9]{0,62}$")
_LABEL_VALUE = re.compile(r"^[-_a-z0-9]{0,63}$")


def check_name(owner: str, field: str, value: str, *, max_length: int) -> None:
    """Raise :class:`CloudConfigError` unless ``value`` is a lowercase DNS-style name of at most ``max_length``."""
    if not isinstance(value, str) or not _NAME.match(value) or len(value) > max_length:
        raise CloudConfigError(
            f"{owner}.{field} must be lowercase letters, digits and '-', start with a letter, end with a "
            f"letter or digit, and be at most {max_length} characters; got {value!r}"
        )


def check_labels(owner: str, field: str, labels: Mapping[str, str]) -> None:
    """Raise :class:`CloudConfigError` unless every key and value is a valid GCP label."""
    for key, value in labels.items():
        if not _LABEL_KEY.match(key) or not isinstance(value, str) or not _LABEL_VALUE.match(value):
            raise CloudConfigError(
                f"{owner}.{field} has an invalid label {key!r}: {value!r}; GCP labels are lowercase letters, "
                "digits, '-' and '_', keys start with a letter, both at most 63 characters"
            )
