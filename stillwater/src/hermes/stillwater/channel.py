"""Channel: a bounded, ordered link from one process to the next.

```
 producer process                                              consumer process
 ┌──────────────┐  1. credits.acquire()   (blocks when full)   ┌──────────────┐
 │    Sender    │  2. array → ring slot[w % capacity]           │   Receiver   │
 │              │     other objects → pickle                    │              │
 │              │  3. pipe ── b"A" | b"P"+pickle | b"E" ──────▶ │ recv_bytes() │
 └──────────────┘                                               │ slot → view  │
        ▲                                                       │   or 1 copy  │
        └──────────── credits.release() when the slot is free ──┴──────────────┘
   shared memory ring: capacity x ArraySpec.nbytes, created and unlinked by the owner
```

* **Ordering**: every item, array or pickled, travels as one message on one pipe, so the
  consumer sees items in the order they were sent. Ring slots are used round-robin by both
  ends, in that same order.
* **Backpressure**: a semaphore holds ``capacity`` credits. The sender takes one per item
  and the receiver gives it back when it is done with the item, so at most ``capacity``
  items are in flight and a full channel blocks the producer in ``sem_wait`` (no CPU).
* **Shared memory ownership**: the owner (the pipeline, in the parent) creates the segment
  and alone unlinks it. Stages started by the owner through :mod:`multiprocessing` share its
  resource tracker, so attaching in them does not unlink anything when they exit.
* **Fan-in**: with ``writers > 1`` every writer claims a slot (a counter in the ring's
  header), fills it and writes its frame under one lock, so each writer's own order is kept;
  the receiver ends after one ``b"E"`` per writer.
* **End of stream**: ``b"E"``; a vanished producer reads as :class:`ChannelClosed`.
* **Framing**: ``uint32 length + tag + payload`` written and read straight on the pipe's
  file descriptor (one ``write``, usually one ``read``: the hot path of a hop); the
  :class:`multiprocessing.connection.Connection` objects only carry the descriptors into
  the stage processes and own them.
"""

from __future__ import annotations

import logging
import os
import pickle
import secrets
import struct
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.shared_memory import SharedMemory
from multiprocessing.synchronize import Lock, Semaphore
from typing import Any

import numpy as np

from hermes.stillwater.array_spec import ArraySpec
from hermes.stillwater.exceptions import ChannelClosed, PipelineStateError

__all__ = ["SHM_PREFIX", "Channel", "EndOfStream", "Receiver", "Sender"]

logger = logging.getLogger("hermes.stillwater.channel")

#: Every shared-memory segment stillwater creates is named ``/dev/shm/<SHM_PREFIX>…``.
SHM_PREFIX = "hermes-sw-"

_ARRAY = b"A"
_PICKLE = b"P"
_END = b"E"
_ALIGN = 64
_READ_SIZE = 65536
# Frames on the pipe: a little-endian uint32 length, then the tag byte and its payload.
_HEADER = struct.Struct("<I")
_ARRAY_FRAME = _HEADER.pack(1) + _ARRAY
_END_FRAME = _HEADER.pack(1) + _END


class EndOfStream(Exception):
    """Raised by :meth:`Receiver.recv` when the producer finished its stream."""


def _slot_stride(spec: ArraySpec) -> int:
    return max(_ALIGN, -(-spec.nbytes // _ALIGN) * _ALIGN)


class _RingView:
    """A process's mapping of a ring segment: a header (the writers' shared slot counter),
    then ``capacity`` numpy slots."""

    def __init__(self, name: str, spec: ArraySpec, capacity: int) -> None:
        self._shm = SharedMemory(name=name)
        assert self._shm.buf is not None
        stride = _slot_stride(spec)
        self.counter: memoryview | None = self._shm.buf[:8].cast("Q")
        self.slots: list[np.ndarray] | None = [
            np.ndarray(spec.shape, dtype=spec.dtype, buffer=self._shm.buf, offset=_ALIGN + i * stride)
            for i in range(capacity)
        ]

    def close(self) -> None:
        self.slots = None
        if self.counter is not None:
            self.counter.release()
            self.counter = None
        try:
            self._shm.close()
        except BufferError:  # a caller still holds a view; the mapping goes with the process
            logger.debug("ring %s still has views exported; leaving it mapped", self._shm.name)


class Sender:
    """The producing end of a :class:`Channel` (picklable into a child while spawning).

    With several writers (``lock`` given), a writer claims the next ring slot, fills it and
    writes its frame while holding the lock, so slots and frames stay in the same order.
    """

    def __init__(self, conn: Connection, credits: Semaphore, shm_name: str | None, spec: ArraySpec | None,
                 capacity: int, lock: Lock | None = None) -> None:  # fmt: skip
        self._conn = conn
        self._credits = credits
        self._shm_name = shm_name
        self.spec = spec
        self.capacity = capacity
        self._lock = lock
        self._ring: _RingView | None = None
        self._index = 0
        self._closed = False

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_ring"] = None
        return state

    def send(self, item: object) -> None:
        """Send one item, blocking while the channel is full.

        Args:
            item: an ndarray matching the channel's :class:`ArraySpec` goes through shared
                memory; anything else is pickled.

        Raises:
            ChannelClosed: the receiving process went away.
        """
        if self._closed:
            raise PipelineStateError("this channel end is closed")
        self._credits.acquire()
        try:
            if self.spec is not None and self.spec.matches(item):
                if self._ring is None:
                    assert self._shm_name is not None
                    self._ring = _RingView(self._shm_name, self.spec, self.capacity)
                if self._lock is None:
                    self._put_array(self._ring, item, self._index)
                    self._index += 1
                else:
                    with self._lock:
                        assert self._ring.counter is not None
                        index = self._ring.counter[0]
                        self._put_array(self._ring, item, index)
                        self._ring.counter[0] = index + 1
            else:
                payload = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
                frame = _HEADER.pack(len(payload) + 1) + _PICKLE + payload
                if self._lock is None:
                    self._write(frame)
                else:
                    with self._lock:
                        self._write(frame)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ChannelClosed("the receiving stage went away") from exc

    def _put_array(self, ring: _RingView, item: Any, index: int) -> None:
        assert ring.slots is not None
        np.copyto(ring.slots[index % self.capacity], item, casting="no")
        self._write(_ARRAY_FRAME)

    def _write(self, frame: bytes) -> None:
        # One writer at a time (alone, or under the lock), so frames never interleave; a
        # blocking pipe write may still return early (large frames), hence the loop.
        fd = self._conn.fileno()
        view = memoryview(frame)
        while view:
            view = view[os.write(fd, view) :]

    def send_end(self) -> None:
        """Tell the receiver the stream is over (no credit needed)."""
        if self._closed:
            return
        try:
            if self._lock is None:
                self._write(_END_FRAME)
            else:
                with self._lock:
                    self._write(_END_FRAME)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ChannelClosed("the receiving stage went away") from exc

    def close(self) -> None:
        """Close this end (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        self._conn.close()


class Receiver:
    """The consuming end of a :class:`Channel` (picklable into a child while spawning).

    Args:
        copy: if true, arrays are copied out of the ring and their slot is freed at once;
            if false, :meth:`recv` returns a read-only view into shared memory that stays
            valid until :meth:`release` or the next :meth:`recv`.
    """

    def __init__(self, conn: Connection, credits: Semaphore, shm_name: str | None, spec: ArraySpec | None,
                 capacity: int, copy: bool = True, writers: int = 1) -> None:  # fmt: skip
        self._writers_left = writers
        self._conn = conn
        self._credits = credits
        self._shm_name = shm_name
        self.spec = spec
        self.capacity = capacity
        self.copy = copy
        self._ring: _RingView | None = None
        self._index = 0
        self._held = False
        self._closed = False
        self._buf = bytearray()
        self._pos = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_ring"] = None
        return state

    @property
    def connection(self) -> Connection:
        """The pipe end, for :func:`multiprocessing.connection.wait`."""
        return self._conn

    def recv(self) -> Any:
        """Receive the next item, blocking until one arrives.

        Returns:
            the item; an array of the channel's spec is a copy or a read-only view (see ``copy``).

        Raises:
            EndOfStream: the producer finished.
            ChannelClosed: the producer went away without finishing.
        """
        if self._closed:
            raise PipelineStateError("this channel end is closed")
        self.release()
        data = self._read_frame()
        tag = data[:1]
        while tag == _END and self._writers_left > 1:  # another writer is still going
            self._writers_left -= 1
            data = self._read_frame()
            tag = data[:1]
        if tag == _ARRAY:
            if self._ring is None:
                assert self._shm_name is not None and self.spec is not None
                self._ring = _RingView(self._shm_name, self.spec, self.capacity)
            assert self._ring.slots is not None
            slot = self._ring.slots[self._index % self.capacity]
            self._index += 1
            if self.copy:
                out = slot.copy()
                self._credits.release()
                return out
            view = slot.view()
            view.flags.writeable = False
            self._held = True
            return view
        if tag == _PICKLE:
            try:
                return pickle.loads(memoryview(data)[1:])
            finally:
                self._credits.release()
        if tag == _END:
            self._writers_left = 0
            raise EndOfStream
        raise ChannelClosed(f"corrupt channel message tag {tag!r}")

    def buffered(self) -> bool:
        """Whether a whole message is already read from the pipe (so ``recv`` will not block)."""
        avail = len(self._buf) - self._pos
        return avail >= 4 and avail >= 4 + _HEADER.unpack_from(self._buf, self._pos)[0]

    def _read_frame(self) -> bytes | bytearray:
        buf = self._buf
        while True:
            avail = len(buf) - self._pos
            need = 4
            if avail >= 4:
                need = 4 + _HEADER.unpack_from(buf, self._pos)[0]
                if avail >= need:
                    start = self._pos + 4
                    frame = buf[start : self._pos + need]
                    self._pos += need
                    if self._pos == len(buf):
                        buf.clear()
                        self._pos = 0
                    return frame
            if self._pos:
                del buf[: self._pos]
                self._pos = 0
            try:
                chunk = os.read(self._conn.fileno(), max(_READ_SIZE, need - avail))
            except OSError as exc:
                raise ChannelClosed(f"the channel's pipe failed: {exc}") from exc
            if not chunk:
                raise ChannelClosed("the sending stage went away before the end of its stream")
            buf += chunk

    def release(self) -> None:
        """Free the slot of the view returned by the last :meth:`recv` (no-op otherwise)."""
        if self._held:
            self._held = False
            self._credits.release()

    def close(self) -> None:
        """Close this end (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._held = False
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        self._conn.close()


class Channel:
    """Owner of one link: the pipe, the credit semaphore and the shared-memory ring.

    Created in the parent before the stages start. It creates the segment (if ``spec`` is
    given) and is the only one to unlink it, in :meth:`close`.

    Args:
        ctx: the multiprocessing context the stages are started with.
        capacity: items in flight at most (also the number of ring slots); ≥ 1.
        spec: shape and dtype of the arrays that use the ring; ``None`` pickles everything.
        copy: the receiver's mode (see :class:`Receiver`).
        writers: how many processes send on it (fan-in); each keeps its own order, and the
            receiver sees the end of the stream after every writer ended.
    """

    def __init__(self, ctx: BaseContext, *, capacity: int, spec: ArraySpec | None = None,
                 copy: bool = True, writers: int = 1) -> None:  # fmt: skip
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
        if not isinstance(writers, int) or writers < 1:
            raise ValueError(f"writers must be an int >= 1, got {writers!r}")
        self.capacity = capacity
        self.spec = spec
        self._shm: SharedMemory | None = None
        if spec is not None:
            name = f"{SHM_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
            self._shm = SharedMemory(name=name, create=True, size=_ALIGN + capacity * _slot_stride(spec))
            self._shm.close()  # the owner keeps the name, not a mapping
            logger.debug("created ring %s: %d x %s %s", name, capacity, spec.shape, spec.dtype)
        reader, writer = ctx.Pipe(duplex=False)
        credits = ctx.Semaphore(capacity)
        shm_name = self._shm.name if self._shm is not None else None
        lock = ctx.Lock() if writers > 1 else None
        self.sender = Sender(writer, credits, shm_name, spec, capacity, lock)
        self.receiver = Receiver(reader, credits, shm_name, spec, capacity, copy=copy, writers=writers)
        self._closed = False

    @property
    def shm_name(self) -> str | None:
        """The ring's segment name, or ``None`` without a ring."""
        return self._shm.name if self._shm is not None else None

    def close(self) -> None:
        """Close the owner's ends and unlink the segment (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.sender.close()
        self.receiver.close()
        if self._shm is not None:
            try:
                self._shm.unlink()
            except FileNotFoundError:  # pragma: no cover - removed behind our back
                logger.warning("ring %s was already gone", self._shm.name)
