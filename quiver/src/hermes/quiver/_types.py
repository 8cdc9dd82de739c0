"""Shared type aliases of hermes.quiver.

Shapes: a *shape* is what a request sees, one entry per axis, ``None`` for a variable axis
(the batch axis of a batched model included). *Dims* are what ``config.pbtxt`` says: ints,
``-1`` for a variable axis, and without the batch axis when ``max_batch_size > 0``.
"""

from __future__ import annotations

from collections.abc import Sequence

from hermes.quiver.exceptions import ModelConfigError

__all__ = ["Dims", "Shape", "dims_to_shape", "normalize_dims", "shape_to_dims"]

Shape = tuple[int | None, ...]
"""A tensor shape as a request sees it; ``None`` marks a variable axis."""

Dims = tuple[int, ...]
"""Config dims; ``-1`` marks a variable axis."""


def normalize_dims(dims: Sequence[int | None], field: str) -> Dims:
    """Validate dims given as ints (``-1`` or ``None`` for variable axes).

    Raises:
        ModelConfigError: an entry is not a positive int, -1 or None (names ``field``).
    """
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence):
        raise ModelConfigError(f"{field}: expected a sequence of ints, got {dims!r}")
    out = []
    for d in dims:
        if d is None or d == -1:
            out.append(-1)
        elif isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ModelConfigError(
                f"{field}: {list(dims)} has {d!r}; expected positive ints, or -1/None for variable"
            )
        else:
            out.append(int(d))
    return tuple(out)


def shape_to_dims(shape: Sequence[int | None], batched: bool, field: str) -> Dims:
    """Config dims of a request shape: drops the batch axis when the model is ``batched``."""
    dims = normalize_dims(shape, field)
    if batched:
        if not dims:
            raise ModelConfigError(f"{field}: a batched model needs a batch axis, got shape ()")
        return dims[1:]
    return dims


def dims_to_shape(dims: Sequence[int], batched: bool) -> Shape:
    """The request shape of config dims (a leading ``None`` batch axis when ``batched``)."""
    shape = tuple(None if d < 0 else int(d) for d in dims)
    return ((None, *shape)) if batched else shape
