"""Turning user arrays into Triton requests: validation, stream-part assembly, padding, encoding.

Shared by the synchronous and the asyncio client. Everything here runs before a request is
sent, so a wrong name, shape or dtype never reaches the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from hermes.aeriel.client._shared_memory import ShmPool, Slot
from hermes.aeriel.client._signature import ModelSignature, StreamGroup, TensorSpec
from hermes.aeriel.exceptions import InputValidationError
from hermes.quiver.config import DataType

__all__ = ["Prepared", "RequestBuilder"]

InputsLike = np.ndarray | Mapping[str, np.ndarray]


class _CachedInput(grpcclient.InferInput):  # type: ignore[misc]  # tritonclient is untyped
    """An in-band ``InferInput`` kept per (input, shape) and refilled for each request.

    Its first fill goes through ``set_data_from_numpy`` (tritonclient's own dtype and shape
    checks); later fills of the same shape, already validated by :class:`RequestBuilder`,
    only replace the bytes ``set_data_from_numpy`` would have stored — the same
    ``array.tobytes()`` — without repeating the checks, which cost as much as the rest of
    the client's per-request work. :func:`_refill_supported` checks once that this
    tritonclient sends what ``_raw_content`` holds; otherwise every fill is the full one.
    """

    def refill(self, array: np.ndarray) -> None:
        self._raw_content = array.tobytes()


def _refill_supported() -> bool:
    """Whether tritonclient sends an input's ``_raw_content`` as its bytes (checked on a probe input)."""
    probe = _CachedInput("probe", [1], "FP32")
    probe.set_data_from_numpy(np.zeros(1, np.float32))
    if getattr(probe, "_raw_content", None) != bytes(4):
        return False
    probe.refill(np.ones(1, np.float32))
    return bool(probe._get_content() == np.ones(1, np.float32).tobytes())


_REFILL = _refill_supported()


@dataclass(slots=True)
class Prepared:
    """Validated arrays for one request, in the model's input order.

    Attributes:
        arrays: one array per model input, padded when asked.
        real_batch: rows before padding (None when nothing was padded).
    """

    arrays: list[np.ndarray]
    real_batch: int | None = None


class RequestBuilder:
    """Validates inputs against a :class:`ModelSignature` and encodes them as tritonclient objects.

    In-band ``InferInput`` objects are cached per (input, shape) and refilled for each request:
    tritonclient copies their bytes into the request message when the request is issued, so a
    builder must only be used by one thread at a time (the clients hold their send lock).

    Args:
        signature: what the model expects.
        pad_batch: pad a partial batch to the model's fixed batch (and strip the padding
            from the outputs later).
    """

    def __init__(self, signature: ModelSignature, *, pad_batch: bool = False) -> None:
        self.signature = signature
        self.pad_batch = pad_batch
        self._specs = {t.name: t for t in signature.inputs}
        self._order = signature.input_names
        self._only = self._order[0] if len(self._order) == 1 else None
        self._aliases: dict[str, tuple[StreamGroup, Any]] = {}
        for group in signature.streams:
            for alias, target in group.aliases().items():
                self._aliases[alias] = (group, target)
        self._fixed_batch = signature.fixed_batch
        self._only_dtype = self._specs[self._only].dtype.numpy if self._only is not None else None
        self._last_shape: tuple[int, ...] | None = None
        self._cache: dict[tuple[str, tuple[int, ...]], _CachedInput] = {}
        self._full: set[tuple[str, tuple[int, ...]]] = set()  # refilled through set_data_from_numpy
        self._plain_outputs = [grpcclient.InferRequestedOutput(n) for n in signature.output_names]
        # output bytes seen for a given tuple of input shapes, for outputs whose config shape is
        # variable: the first such request gets them in-band, later ones in shared memory
        self._learned: dict[tuple[tuple[int, ...], ...], dict[str, int]] = {}

    # ------------------------------------------------------------------ validation
    def _error(self, what: str) -> InputValidationError:
        return InputValidationError(f"{what}; {self.signature.describe()}")

    def prepare(self, inputs: InputsLike) -> Prepared:
        """Check names, dtypes and shapes; assemble streaming parts; pad when asked.

        Args:
            inputs: one array (a single-input model or a single streaming group) or
                ``{name: array}``. Names are model inputs, or, for a streaming group, the
                parts of its update named by ``model/input``, the snapshot output or the
                ensemble tensor; parts are concatenated along axis 1 in channel order.

        Raises:
            InputValidationError: naming what was wrong and the expected signature.
        """
        if isinstance(inputs, np.ndarray):
            if inputs.shape == self._last_shape and inputs.dtype == self._only_dtype:
                return Prepared([inputs])  # same shape as the last valid single-input request
            if self._only is None:
                raise self._error(f"got one array but the model has {len(self._order)} inputs; pass a dict")
            named: Mapping[str, np.ndarray] = {self._only: inputs}
        elif isinstance(inputs, Mapping):
            named = inputs
            if any(k not in self._specs for k in named):
                named = self._assemble(named)
        else:
            raise self._error(
                f"inputs must be a numpy array or a dict of arrays, got {type(inputs).__name__}"
            )
        if len(named) != len(self._order):
            missing = [n for n in self._order if n not in named]
            raise self._error(f"missing input(s) {missing}")
        arrays = []
        for name in self._order:
            arrays.append(self._check(self._specs[name], named[name]))
        real = None
        if self.pad_batch and self._fixed_batch is not None:
            arrays, real = self._pad(arrays, self._fixed_batch)
        elif self._only is not None:
            self._last_shape = arrays[0].shape
        return Prepared(arrays, real)

    def _check(self, spec: TensorSpec, array: Any) -> np.ndarray:
        if not isinstance(array, np.ndarray):
            raise self._error(f"input '{spec.name}' must be a numpy array, got {type(array).__name__}")
        if array.dtype != spec.dtype.numpy and not (
            spec.dtype is DataType.BYTES and array.dtype.kind in "OSU"
        ):
            raise self._error(
                f"input '{spec.name}' has dtype {array.dtype}, expected {spec.dtype.numpy} ({spec.dtype.value})"
            )
        shape = array.shape
        expected = spec.shape
        same_rank = len(shape) == len(expected)
        if same_rank and all(e < 0 or e == s for e, s in zip(expected, shape, strict=True)):
            if self.signature.max_batch_size > 0 and not 1 <= shape[0] <= self.signature.max_batch_size:
                raise self._error(
                    f"input '{spec.name}' has batch {shape[0]}, expected 1..{self.signature.max_batch_size}"
                )
            return array
        partial = (
            self._fixed_batch is not None
            and same_rank
            and 0 < shape[0] < expected[0]
            and all(e < 0 or e == s for e, s in zip(expected[1:], shape[1:], strict=True))
        )
        if partial and self.pad_batch:
            return array
        hint = " (pass pad_batch=True to pad a partial batch)" if partial else ""
        raise self._error(f"input '{spec.name}' has shape {list(shape)}, expected {list(expected)}{hint}")
        return array

    def _assemble(self, named: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        direct: dict[str, np.ndarray] = {}
        parts: dict[str, dict[str, np.ndarray]] = {}
        groups: dict[str, StreamGroup] = {}
        for key, value in named.items():
            if key in self._specs:
                direct[key] = value
            elif key in self._aliases:
                group, target = self._aliases[key]
                groups[group.input] = group
                slot = parts.setdefault(group.input, {})
                if target.snapshot_output in slot:
                    raise self._error(f"two arrays given for stream part '{key}'")
                slot[target.snapshot_output] = value
            else:
                known = sorted(set(self._specs) | set(self._aliases))
                raise self._error(f"unknown input '{key}' (known names: {known})")
        for name, group in groups.items():
            if name in direct:
                raise self._error(f"input '{name}' given both whole and as parts")
            given = parts[name]
            missing = [t for t in group.targets if t.snapshot_output not in given]
            if missing:
                names = ["|".join(t.consumers) or t.tensor for t in missing]
                raise self._error(
                    f"streaming input '{name}' is missing its state part(s) {names}; "
                    f"an update needs every part of {group.describe()}"
                )
            pieces = []
            for target in group.targets:
                piece = given[target.snapshot_output]
                if not isinstance(piece, np.ndarray):
                    raise self._error(f"stream part '{target.snapshot_output}' must be a numpy array")
                if len(target.shape) < 3 and piece.ndim == 2:
                    piece = piece[:, None, :]
                if piece.ndim != 3 or piece.shape[1] != target.channels:
                    raise self._error(
                        f"stream part for {'|'.join(target.consumers) or target.tensor} has shape "
                        f"{list(piece.shape)}, expected (batch, {target.channels}, samples)"
                    )
                pieces.append(piece)
            try:
                direct[name] = np.concatenate(pieces, axis=1)
            except ValueError as exc:
                raise self._error(f"parts of streaming input '{name}' do not line up: {exc}") from exc
        return direct

    @staticmethod
    def _pad(arrays: list[np.ndarray], batch: int) -> tuple[list[np.ndarray], int | None]:
        rows = {a.shape[0] for a in arrays}
        if len(rows) != 1:
            raise InputValidationError(f"inputs disagree on their batch size: {sorted(rows)}")
        (real,) = rows
        if real == batch:
            return arrays, None
        padded = []
        for a in arrays:
            out = np.zeros((batch, *a.shape[1:]), dtype=a.dtype)
            out[:real] = a
            padded.append(out)
        return padded, real

    # ------------------------------------------------------------------ encoding
    def encode(self, prepared: Prepared) -> list[grpcclient.InferInput]:
        """In-band ``InferInput`` objects (cached per shape; refilled here, see :class:`_CachedInput`)."""
        out = []
        cache = self._cache
        for name, array in zip(self._order, prepared.arrays, strict=True):
            key = (name, array.shape)
            infer_input = cache.get(key)
            if infer_input is None:
                datatype = self._specs[name].dtype.value
                infer_input = _CachedInput(name, list(array.shape), datatype)
                infer_input.set_data_from_numpy(array)
                if _REFILL and datatype != "BYTES":
                    cache[key] = infer_input
                else:
                    self._full.add(key)
                    cache[key] = infer_input
            elif key in self._full:
                infer_input.set_data_from_numpy(array)
            else:
                infer_input.refill(array)
            out.append(infer_input)
        return out

    def encode_shm(
        self, prepared: Prepared, pool: ShmPool
    ) -> tuple[list[grpcclient.InferInput], list[grpcclient.InferRequestedOutput], Slot]:
        """Write inputs into a pooled shared-memory slot; place outputs of known size there too.

        Returns:
            The inputs, the requested outputs (in-band for outputs of unknown size) and the slot,
            which the caller releases once the response has been read.
        """
        arrays = prepared.arrays
        batch = arrays[0].shape[0] if arrays and arrays[0].ndim else 1
        shapes = tuple(a.shape for a in arrays)
        learned = self._learned.get(shapes, {})
        known = {}
        for spec in self.signature.outputs:
            size = self.output_bytes(spec, batch)
            if size is None:
                size = learned.get(spec.name)
            if size is not None:
                known[spec.name] = size
        slot = pool.acquire([a.nbytes for a in arrays], known)
        try:
            inputs = []
            for index, (name, array) in enumerate(zip(self._order, arrays, strict=True)):
                slot.write(index, array)
                region, offset = slot.input_locations[index]
                infer_input = grpcclient.InferInput(name, list(array.shape), self._specs[name].dtype.value)
                infer_input.set_shared_memory(region, array.nbytes, offset)
                inputs.append(infer_input)
            outputs = []
            for spec in self.signature.outputs:
                requested = grpcclient.InferRequestedOutput(spec.name)
                location = slot.output_locations.get(spec.name)
                if location is not None:
                    requested.set_shared_memory(location[0], known[spec.name], location[1])
                outputs.append(requested)
        except BaseException:
            pool.release(slot)
            raise
        return inputs, outputs, slot

    def learn(self, input_shapes: tuple[tuple[int, ...], ...], name: str, nbytes: int) -> None:
        """Remember an output's size for requests with these input shapes (shared memory placement)."""
        if len(self._learned) < 1024:
            self._learned.setdefault(input_shapes, {})[name] = nbytes

    def output_bytes(self, spec: TensorSpec, batch: int) -> int | None:
        """Bytes of an output for a request of ``batch`` rows, or None when not knowable."""
        if spec.dtype is DataType.BYTES:
            return None
        shape = list(spec.shape)
        if self.signature.max_batch_size > 0 and shape:
            shape[0] = batch
        if any(d < 0 for d in shape):
            return None
        return int(np.prod(shape, dtype=np.int64)) * spec.dtype.numpy.itemsize

    @property
    def plain_outputs(self) -> list[grpcclient.InferRequestedOutput]:
        """In-band requests for every output."""
        return self._plain_outputs
