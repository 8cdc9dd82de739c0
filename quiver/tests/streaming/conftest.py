"""Fixtures of the streaming tests."""

from __future__ import annotations

import random

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def seed() -> int:
    """Seed numpy, random and torch (when installed) for every test."""
    random.seed(0)
    np.random.seed(0)
    try:
        import torch
    except ImportError:  # pragma: no cover
        return 0
    torch.manual_seed(0)
    return 0
