"""ArraySpec validation and matching."""

from __future__ import annotations

import numpy as np
import pytest

from hermes.stillwater import ArraySpec


def test_array_spec_normalises_shape_and_dtype_and_counts_bytes() -> None:
    spec = ArraySpec(shape=[2, 3], dtype="float64")
    assert spec.shape == (2, 3)
    assert spec.dtype == np.dtype(np.float64)
    assert spec.nbytes == 48


def test_array_spec_matches_only_exact_shape_and_dtype() -> None:
    spec = ArraySpec(shape=(2, 3))
    assert spec.matches(np.zeros((2, 3), np.float32))
    assert not spec.matches(np.zeros((3, 2), np.float32))
    assert not spec.matches(np.zeros((2, 3), np.float64))
    assert not spec.matches([[0.0] * 3] * 2)


def test_array_spec_like_copies_an_example() -> None:
    assert ArraySpec.like(np.zeros((1, 2, 8), np.int16)) == ArraySpec(shape=(1, 2, 8), dtype="int16")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shape": (2, -1)}, r"shape must not hold negative sizes, got \(2, -1\)"),
        ({"shape": "ab"}, "shape must be a tuple of ints, got 'ab'"),
        ({"shape": (2,), "dtype": object}, "plain \\(non-object\\) dtype, got object"),
        ({"shape": (2,), "dtype": "nonsense"}, "dtype must be a numpy dtype, got 'nonsense'"),
    ],
)
def test_array_spec_rejects_bad_fields_naming_them(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ArraySpec(**kwargs)  # type: ignore[arg-type]
