"""Pools of shared-memory slots that carry request inputs and outputs outside the gRPC message.

```
 client thread                      server                     stream thread
 acquire() -> Slot (free list) ──▶ reads inputs, writes  ──▶  read outputs (copied)
 write inputs into the slot         outputs into the slot      release(slot) -> free list
```

A slot is one in-flight request's memory; the client's in-flight window bounds how many
exist. Regions are created and registered with the server once, reused for every later
request, re-created only when a request needs more room, and unregistered and unlinked by
``close()`` — also when the server is gone (unregistering then fails and is skipped; the
segment is still unlinked, so ``/dev/shm`` is left clean). This process is the only owner of
its segments.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hermes.aeriel.exceptions import ClientClosedError, SharedMemoryError

__all__ = ["CudaSlot", "ShmPool", "Slot", "SystemSlot"]

logger = logging.getLogger("hermes.aeriel.client.shm")

_PAGE = 4096


def _round_up(n: int) -> int:
    return max(_PAGE, -(-n // _PAGE) * _PAGE)


class Slot:
    """Memory for one request. Subclasses place inputs and outputs in registered regions."""

    def __init__(self, prefix: str, index: int) -> None:
        self.prefix = prefix
        self.index = index
        self.input_locations: list[tuple[str, int]] = []
        self.output_locations: dict[str, tuple[str, int]] = {}

    def layout(self, input_sizes: Sequence[int], output_sizes: dict[str, int]) -> None:
        """Make room for these inputs and outputs (bytes) and compute where each goes."""
        raise NotImplementedError

    def write(self, index: int, array: np.ndarray) -> None:
        """Copy input ``index`` into its place."""
        raise NotImplementedError

    def read(self, name: str, datatype: np.dtype[Any], shape: Sequence[int]) -> np.ndarray:
        """A copy of output ``name`` from its place."""
        raise NotImplementedError

    def destroy(self, unregister: Callable[[str], None]) -> None:
        """Unregister from the server (best effort) and free the memory."""
        raise NotImplementedError


class SystemSlot(Slot):
    """One POSIX shared-memory segment (``/dev/shm``) holding every tensor of a request at offsets."""

    def __init__(self, prefix: str, index: int, register: Callable[[str, str, int], None]) -> None:
        super().__init__(prefix, index)
        self._register = register
        self._handle: Any = None
        self._generation = 0
        self.size = 0
        self.name = ""

    def _create(self, size: int, unregister: Callable[[str], None]) -> None:
        import tritonclient.utils.shared_memory as shm

        if self._handle is not None:
            self.destroy(unregister)
        self._generation += 1
        self.name = f"{self.prefix}_{self.index}_{self._generation}"
        key = "/" + self.name
        try:
            self._handle = shm.create_shared_memory_region(self.name, key, size, create_only=True)
        except Exception as exc:
            raise SharedMemoryError(
                f"cannot create shared memory region {key} of {size} bytes: {exc}"
            ) from exc
        self.size = size
        try:
            self._register(self.name, key, size)
        except BaseException:
            shm.destroy_shared_memory_region(self._handle)
            self._handle = None
            raise

    def layout(self, input_sizes: Sequence[int], output_sizes: dict[str, int]) -> None:
        need = sum(input_sizes) + sum(output_sizes.values())
        if need > self.size:
            self._create(_round_up(need), self._unregister_for_resize)
        offset = 0
        self.input_locations = []
        for size in input_sizes:
            self.input_locations.append((self.name, offset))
            offset += size
        self.output_locations = {}
        for name, size in output_sizes.items():
            self.output_locations[name] = (self.name, offset)
            offset += size

    _unregister_for_resize: Callable[[str], None] = staticmethod(lambda name: None)

    def write(self, index: int, array: np.ndarray) -> None:
        import tritonclient.utils.shared_memory as shm

        shm.set_shared_memory_region(self._handle, [array], offset=self.input_locations[index][1])

    def read(self, name: str, datatype: np.dtype[Any], shape: Sequence[int]) -> np.ndarray:
        import tritonclient.utils.shared_memory as shm

        view = shm.get_contents_as_numpy(
            self._handle, datatype, list(shape), offset=self.output_locations[name][1]
        )
        out = np.array(view, copy=True)
        del view  # no export of the mapping may outlive the read (close() would fail)
        return out

    def destroy(self, unregister: Callable[[str], None]) -> None:
        import tritonclient.utils.shared_memory as shm

        if self._handle is None:
            return
        try:
            unregister(self.name)
        except Exception as exc:  # the server may be gone; the segment is still ours to unlink
            logger.debug("unregistering %s failed: %s", self.name, exc)
        handle, self._handle = self._handle, None
        try:
            shm.destroy_shared_memory_region(handle)
        except Exception as exc:
            raise SharedMemoryError(f"cannot unlink shared memory region /{self.name}: {exc}") from exc
        self.size = 0


class CudaSlot(Slot):
    """CUDA shared memory on one device: a region per tensor (tritonclient writes CUDA regions whole)."""

    def __init__(
        self, prefix: str, index: int, register: Callable[[str, bytes, int, int], None], device_id: int
    ):
        super().__init__(prefix, index)
        self._register = register
        self._device_id = device_id
        self._regions: dict[str, tuple[Any, int]] = {}  # key -> (handle, size)
        self._unregister: Callable[[str], None] = lambda name: None

    def _ensure(self, key: str, size: int) -> str:
        import tritonclient.utils.cuda_shared_memory as cudashm

        name = f"{self.prefix}_{self.index}_{key}"
        current = self._regions.get(key)
        if current is not None and current[1] >= size:
            return name
        if current is not None:
            self._unregister(name)
            cudashm.destroy_shared_memory_region(current[0])
        try:
            handle = cudashm.create_shared_memory_region(name, _round_up(size), self._device_id)
            self._register(name, cudashm.get_raw_handle(handle), self._device_id, _round_up(size))
        except Exception as exc:
            raise SharedMemoryError(f"cannot create CUDA shared memory region {name}: {exc}") from exc
        self._regions[key] = (handle, _round_up(size))
        return name

    def layout(self, input_sizes: Sequence[int], output_sizes: dict[str, int]) -> None:
        self.input_locations = [(self._ensure(f"in{i}", s), 0) for i, s in enumerate(input_sizes)]
        self.output_locations = {n: (self._ensure(f"out_{n}", s), 0) for n, s in output_sizes.items()}

    def write(self, index: int, array: np.ndarray) -> None:
        import tritonclient.utils.cuda_shared_memory as cudashm

        cudashm.set_shared_memory_region(self._regions[f"in{index}"][0], [np.ascontiguousarray(array)])

    def read(self, name: str, datatype: np.dtype[Any], shape: Sequence[int]) -> np.ndarray:
        import tritonclient.utils.cuda_shared_memory as cudashm

        return np.array(cudashm.get_contents_as_numpy(self._regions[f"out_{name}"][0], datatype, list(shape)))

    def destroy(self, unregister: Callable[[str], None]) -> None:
        import tritonclient.utils.cuda_shared_memory as cudashm

        for key, (handle, _) in list(self._regions.items()):
            try:
                unregister(f"{self.prefix}_{self.index}_{key}")
            except Exception as exc:
                logger.debug("unregistering CUDA region failed: %s", exc)
            cudashm.destroy_shared_memory_region(handle)
        self._regions.clear()


class ShmPool:
    """A free list of slots, created lazily and reused; at most one slot per request in flight.

    Args:
        kind: ``"system"`` or ``"cuda"``.
        register: registers a region with the server (the client's translated call).
        unregister: unregisters a region by name.
        device_id: the CUDA device for ``kind="cuda"``.
    """

    def __init__(
        self,
        kind: str,
        *,
        register: Callable[..., None],
        unregister: Callable[[str], None],
        device_id: int = 0,
    ) -> None:
        if kind not in ("system", "cuda"):
            raise ValueError(f"shared_memory must be 'system' or 'cuda', got {kind!r}")
        if kind == "cuda":
            try:
                import tritonclient.utils.cuda_shared_memory  # noqa: F401
            except (ImportError, RuntimeError) as exc:
                raise SharedMemoryError(
                    f'CUDA shared memory needs cuda-python: pip install "tritonclient[cuda]" ({exc})'
                ) from exc
        self.kind = kind
        self.prefix = f"hermes_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self._register = register
        self._unregister = unregister
        self._device_id = device_id
        self._free: list[Slot] = []
        self._all: list[Slot] = []
        self._lock = threading.Lock()
        self._closed = False

    @property
    def regions(self) -> list[str]:
        """Names of the registered regions (system: one per slot)."""
        names = []
        for slot in self._all:
            names += sorted(
                {n for n, _ in slot.input_locations} | {n for n, _ in slot.output_locations.values()}
            )
        return names

    def acquire(self, input_sizes: Sequence[int], output_sizes: dict[str, int]) -> Slot:
        """A free slot laid out for these sizes (bytes); creates one when none is free."""
        if self._closed:
            raise ClientClosedError("the shared-memory pool is closed")
        try:
            slot = self._free.pop()
        except IndexError:
            with self._lock:
                index = len(self._all)
                if self.kind == "system":
                    system = SystemSlot(self.prefix, index, self._register)
                    system._unregister_for_resize = self._unregister  # type: ignore[method-assign]
                    slot = system
                else:
                    cuda = CudaSlot(self.prefix, index, self._register, self._device_id)
                    cuda._unregister = self._unregister
                    slot = cuda
                self._all.append(slot)
        try:
            slot.layout(input_sizes, output_sizes)
        except BaseException:
            self._free.append(slot)
            raise
        return slot

    def release(self, slot: Slot) -> None:
        """Give a slot back once its request has completed (outputs read)."""
        self._free.append(slot)

    def close(self) -> None:
        """Unregister and unlink every region (best effort unregistering). Idempotent."""
        if self._closed:
            return
        self._closed = True
        errors = []
        for slot in self._all:
            try:
                slot.destroy(self._unregister)
            except SharedMemoryError as exc:
                errors.append(exc)
        self._all.clear()
        self._free.clear()
        if errors:
            raise errors[0]
