"""Fixtures of hermes.quiver's tests."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from hermes.quiver import ModelRepository

NETS_SOURCE = textwrap.dedent(
    '''
    """Small torch modules used by hermes.quiver's tests (written to a temporary folder)."""
    import torch


    class Affine(torch.nn.Module):
        def __init__(self, features: int = 4, outputs: int = 3):
            super().__init__()
            self.linear = torch.nn.Linear(features, outputs)

        def forward(self, x):
            return torch.tanh(self.linear(x))


    class TwoHeads(torch.nn.Module):
        def __init__(self, features: int = 4):
            super().__init__()
            self.a = torch.nn.Linear(features, 2)
            self.b = torch.nn.Linear(features, 5)

        def forward(self, x, scale):
            return self.a(x) * scale, torch.relu(self.b(x))


    class SignBranch(torch.nn.Module):
        """Data-dependent control flow: tracing freezes the branch the example took."""

        def forward(self, x):
            if x.sum() > 0:
                return x * 2.0
            return -x
    '''
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    import random

    random.seed(0)
    np.random.seed(0)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(0)


@pytest.fixture
def memory_repo() -> Iterator[ModelRepository]:
    """An empty repository on fsspec's in-memory filesystem (removed afterwards)."""
    repo = ModelRepository(f"memory://quiver-test-{uuid.uuid4().hex[:8]}")
    yield repo
    repo.storage.remove()


@pytest.fixture
def nets(tmp_path: Path) -> Iterator[ModuleType]:
    """An importable module ``quiver_test_nets`` (file at ``nets.__file__``) of test networks."""
    pytest.importorskip("torch")
    folder = tmp_path / "nets"
    folder.mkdir()
    path = folder / "quiver_test_nets.py"
    path.write_text(NETS_SOURCE)
    spec = importlib.util.spec_from_file_location("quiver_test_nets", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["quiver_test_nets"] = module
    spec.loader.exec_module(module)
    try:
        yield module
    finally:
        sys.modules.pop("quiver_test_nets", None)
