"""ArraySpec: the fixed shape and dtype of the arrays a stage sends through shared memory."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["ArraySpec"]


@dataclass(frozen=True, kw_only=True)
class ArraySpec:
    """The shape and dtype of the numpy arrays that travel through a shared-memory ring.

    Arrays that match exactly are copied into a ring slot (no pickling); anything else a
    stage emits is pickled over the same ordered channel.

    Args:
        shape: the array shape, e.g. ``(1, 2, 65536)`` for one update of 2 channels.
        dtype: anything :func:`numpy.dtype` accepts, e.g. ``"float32"``. Object dtypes are refused.
    """

    shape: tuple[int, ...]
    dtype: Any = "float32"

    def __post_init__(self) -> None:
        try:
            shape = tuple(int(n) for n in self.shape)
        except (TypeError, ValueError):
            raise ValueError(f"ArraySpec.shape must be a tuple of ints, got {self.shape!r}") from None
        if any(n < 0 for n in shape):
            raise ValueError(f"ArraySpec.shape must not hold negative sizes, got {self.shape!r}")
        try:
            dtype = np.dtype(self.dtype)
        except TypeError:
            raise ValueError(f"ArraySpec.dtype must be a numpy dtype, got {self.dtype!r}") from None
        if dtype.hasobject:
            raise ValueError(f"ArraySpec.dtype must be a plain (non-object) dtype, got {dtype}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dtype", dtype)

    @property
    def nbytes(self) -> int:
        """Bytes of one array of this spec."""
        return math.prod(self.shape) * self.dtype.itemsize

    def matches(self, item: object) -> bool:
        """Whether ``item`` is an ndarray of exactly this shape and dtype."""
        return isinstance(item, np.ndarray) and item.shape == self.shape and item.dtype == self.dtype

    @classmethod
    def like(cls, array: npt.ArrayLike) -> ArraySpec:
        """The spec of an example array."""
        arr = np.asarray(array)
        return cls(shape=arr.shape, dtype=arr.dtype)
