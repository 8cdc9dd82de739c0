"""Channel: a bounded, ordered link from one process to the next, through shared memory.

```
 producer process                                                   consumer process
 ┌──────────────┐ 1. free.acquire()          (blocks while full)    ┌──────────────┐
 │    Sender    │ 2. message → slot[n % slots] of the ring:         │   Receiver   │
 │              │      int / float → written as is into the slot    │              │
 │              │      ndarray of the spec → its array slot         │              │
 │              │      other small object → pickled into the slot   │              │
 │              │      large object → "L" + length in the slot, ─┐  │              │
 │              │ 3. filled.release() ───────────────────────────┼─▶│ filled.acq() │
 │              │ 4. (large only) pickled bytes ─────── pipe ────┴─▶│ slot → item  │
 └──────────────┘                                                   │ free.release │
        ▲                                                           └──────────────┘
        └──────────────── free.release() once the slot is done with ───────┘

 shared-memory segment (created and unlinked by the owner, the parent):
 ┌ header (2 lines) ────┐┌ message slots ───────────────┐┌ array slots ─────────────┐
 │ closed flag │ fan-in ││ (capacity + writers) x 4 KiB ││ capacity x spec.nbytes   │
 │  written, arrays     ││ length, tag, inline payload  ││ (only with a spec)       │
 └──────────────────────┘└──────────────────────────────┘└──────────────────────────┘
```

* **Ordering**: every message, whatever its kind, takes the next slot of the ring, so the
  consumer sees items in the order they were sent. Payloads too large for a slot are
  announced by their slot and follow on the pipe, which carries only those, in that same
  order.
* **Backpressure**: the ``free`` semaphore holds ``capacity`` credits. The sender takes one
  per item and the receiver gives it back when it is done with the slot, so at most
  ``capacity`` items are in flight and a full channel blocks the producer in ``sem_wait``
  (a futex: no CPU). The receiver waits on ``filled`` the same way.
* **Hot path**: one ``sem_post`` wakes the next process; no pipe, no syscall besides it.
  A single writer and the receiver count messages in their own memory, so the header's
  cache lines do not bounce between cores on every message.
* **Wake-ups**: a stage blocked in ``sem_wait`` wakes on SIGTERM (the pipeline's stop).
  :meth:`Receiver.interrupt` wakes a ``recv`` of another thread of the same process (the
  pipeline's parent). :meth:`Channel.abort` (the owner) sets the header's ``closed`` flag
  and releases both semaphores, for any process; a woken end sees the flag, passes the
  wake-up on to the next waiter and raises :class:`ChannelClosed`.
* **Shared memory ownership**: the owner (the pipeline, in the parent) creates the segment
  and alone unlinks it. Stages started by the owner through :mod:`multiprocessing` share its
  resource tracker, so attaching in them does not unlink anything when they exit.
* **Fan-in**: with ``writers > 1`` each writer claims the next slot (the header's
  ``written`` counter), fills it and announces it under one lock, so each writer's own order
  is kept; the receiver ends after one end-of-stream message per writer.
* **End of stream**: an ``E`` message. It takes no credit: each writer has one spare slot
  for it, so ending never blocks. A writer vanishing in the middle of a large item reads as
  :class:`ChannelClosed`.
"""

from __future__ import annotations

import logging
import os
import pickle
import secrets
import struct
from contextlib import AbstractContextManager, nullcontext
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.shared_memory import SharedMemory
from multiprocessing.synchronize import Lock, Semaphore
from typing import Any, cast

import numpy as np

from hermes.stillwater._semaphores import unlink_name
from hermes.stillwater.array_spec import ArraySpec
from hermes.stillwater.exceptions import ChannelClosed, PipelineStateError

__all__ = ["SHM_PREFIX", "SLOT_BYTES", "Channel", "EndOfStream", "Receiver", "Sender"]

logger = logging.getLogger("hermes.stillwater.channel")

#: Every shared-memory segment stillwater creates is named ``/dev/shm/<SHM_PREFIX>…``.
SHM_PREFIX = "hermes-sw-"

_ALIGN = 64
_HEADER_BYTES = 128
# Header words (uint64). The closed flag has a cache line of its own (read on every message,
# written once); the writers' shared counters (fan-in only) sit on the next line. A single
# writer and the receiver keep their counters in process memory, so no line bounces per hop.
_CLOSED, _WRITTEN, _ARRAYS = 0, 8, 9
#: Bytes of one message slot; a pickled item up to ``SLOT_BYTES - 16`` travels inside it.
SLOT_BYTES = 4096
_SLOT_META = struct.Struct("<IB")  # payload length (bytes), tag
_PAYLOAD_OFFSET = 16
_INLINE_MAX = SLOT_BYTES - _PAYLOAD_OFFSET
_ARRAY = ord("A")  # the item is in the slot's array slot
_PICKLE = ord("P")  # pickled bytes inside the slot
_LARGE = ord("L")  # pickled bytes follow on the pipe
_END = ord("E")  # the writer finished its stream
_INT = ord("I")  # an int in [-2**63, 2**63) inside the slot (no pickle: the commonest small item)
_FLOAT = ord("F")  # a float inside the slot
_INT64 = struct.Struct("<q")
_FLOAT64 = struct.Struct("<d")
_INT_SLOT = struct.Struct("<IB11xq")  # length, tag and the value: one write
_FLOAT_SLOT = struct.Struct("<IB11xd")
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_CLOSED_BY_OWNER = "the channel was closed by its owner (the pipeline is stopping)"
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_dumps = pickle.dumps
_loads = pickle.loads


class EndOfStream(Exception):
    """Raised by :meth:`Receiver.recv` when the producer finished its stream."""


def _array_stride(spec: ArraySpec) -> int:
    return max(_ALIGN, -(-spec.nbytes // _ALIGN) * _ALIGN)


def _segment_size(capacity: int, writers: int, spec: ArraySpec | None) -> int:
    arrays = capacity * _array_stride(spec) if spec is not None else 0
    return _HEADER_BYTES + (capacity + writers) * SLOT_BYTES + arrays


class _RingView:
    """A process's mapping of a channel segment: the header, the message slots and (with a
    spec) the array slots."""

    def __init__(self, name: str, spec: ArraySpec | None, capacity: int, slots: int) -> None:
        self._shm = SharedMemory(name=name)
        assert self._shm.buf is not None
        self.buf: memoryview | None = self._shm.buf
        self.header: memoryview | None = self._shm.buf[:_HEADER_BYTES].cast("Q")
        self.arrays: list[np.ndarray] | None = None
        if spec is not None:
            base = _HEADER_BYTES + slots * SLOT_BYTES
            stride = _array_stride(spec)
            self.arrays = [
                np.ndarray(spec.shape, dtype=spec.dtype, buffer=self._shm.buf, offset=base + i * stride)
                for i in range(capacity)
            ]

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Drop this process's mapping (idempotent)."""
        self.arrays = None
        self.buf = None
        if self.header is not None:
            self.header.release()
            self.header = None
        try:
            self._shm.close()
        except BufferError:  # a caller still holds a view; the mapping goes with the process
            logger.debug("ring %s still has views exported; leaving it mapped", self._shm.name)


class Sender:
    """The producing end of a :class:`Channel` (picklable into a child while spawning).

    With several writers (``lock`` given), a writer claims the next slot (the header's
    ``written`` counter), fills it and announces it while holding the lock, so slots are
    announced in the order they were claimed and large payloads never interleave on the pipe.
    """

    def __init__(self, conn: Connection, free: Semaphore, filled: Semaphore, shm_name: str,
                 spec: ArraySpec | None, capacity: int, writers: int = 1, lock: Lock | None = None) -> None:  # fmt: skip
        self._conn = conn
        self._free = free
        self._filled = filled
        self._shm_name = shm_name
        self.spec = spec
        self.capacity = capacity
        self._slots = capacity + writers
        self._lock = lock
        self._written = 0  # messages and arrays sent, when this is the only writer
        self._arrays = 0
        self._ring: _RingView | None = None
        self._closed = False

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_ring"] = None
        return state

    def _attach(self) -> _RingView:
        if self._closed:
            raise PipelineStateError("this channel end is closed")
        if self._ring is None:
            self._ring = _RingView(self._shm_name, self.spec, self.capacity, self._slots)
        return self._ring

    def _take_credit(self, header: memoryview) -> None:
        self._free.acquire()
        if header[_CLOSED]:
            self._free.release()  # wake the next waiter too
            raise ChannelClosed(_CLOSED_BY_OWNER)

    def _claim(self, header: memoryview) -> int:
        """The next message index (call with the lock held when there are several writers)."""
        if self._lock is None:
            index = self._written
            self._written = index + 1
        else:
            index = header[_WRITTEN]
            header[_WRITTEN] = index + 1
        return _HEADER_BYTES + (index % self._slots) * SLOT_BYTES

    def send(self, item: object) -> None:
        """Send one item, blocking while the channel is full.

        Args:
            item: an ndarray matching the channel's :class:`ArraySpec` goes through its array
                slot; an ``int`` (64-bit) or ``float`` is written into the message slot as is;
                anything else is pickled, into the message slot if it fits in
                ``SLOT_BYTES - 16`` bytes, else through the pipe.

        Raises:
            ChannelClosed: the owner closed the channel, or the receiving process went away.
            PipelineStateError: this end is closed.
        """
        ring = self._ring
        if ring is None:
            ring = self._attach()
        header, buf = ring.header, ring.buf
        assert header is not None and buf is not None
        # The hot path of a hop: encode first (no credit held), then one slot write and a post.
        kind = type(item)
        if kind is int and _INT_MIN <= item <= _INT_MAX:  # type: ignore[operator]
            packer: struct.Struct | None = _INT_SLOT
        elif kind is float:
            packer = _FLOAT_SLOT
        else:
            packer = None
        if packer is not None:
            self._free.acquire()
            if header[_CLOSED]:
                self._free.release()  # wake the next waiter too
                raise ChannelClosed(_CLOSED_BY_OWNER)
            lock = self._lock
            if lock is None:
                index = self._written
                self._written = index + 1
                packer.pack_into(buf, _HEADER_BYTES + (index % self._slots) * SLOT_BYTES, 8,
                                 _INT if packer is _INT_SLOT else _FLOAT, item)  # fmt: skip
                self._filled.release()
                return
            with lock:
                packer.pack_into(buf, self._claim(header), 8, _INT if packer is _INT_SLOT else _FLOAT, item)
                self._filled.release()
            return
        spec = self.spec
        if spec is not None and spec.matches(item):
            self._take_credit(header)
            with self._guard():
                assert ring.arrays is not None
                if self._lock is None:
                    arrays = self._arrays
                    self._arrays = arrays + 1
                else:
                    arrays = header[_ARRAYS]
                    header[_ARRAYS] = arrays + 1
                np.copyto(ring.arrays[arrays % self.capacity], cast(np.ndarray, item), casting="no")
                _SLOT_META.pack_into(buf, self._claim(header), 0, _ARRAY)
                self._filled.release()
            return
        payload = _dumps(item, _PROTOCOL)
        size = len(payload)
        self._take_credit(header)
        with self._guard():
            offset = self._claim(header)
            if size <= _INLINE_MAX:
                buf[offset + _PAYLOAD_OFFSET : offset + _PAYLOAD_OFFSET + size] = payload
                _SLOT_META.pack_into(buf, offset, size, _PICKLE)
                self._filled.release()
            else:
                _SLOT_META.pack_into(buf, offset, size, _LARGE)
                self._filled.release()
                self._write_pipe(payload)

    def _guard(self) -> AbstractContextManager[Any]:
        return self._lock if self._lock is not None else nullcontext()

    def _write_pipe(self, payload: bytes) -> None:
        # One writer at a time (alone, or under the lock), so payloads never interleave; a
        # blocking pipe write may return early (large payloads), hence the loop.
        fd = self._conn.fileno()
        view = memoryview(payload)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ChannelClosed("the receiving stage went away") from exc

    def send_end(self) -> None:
        """Tell the receiver the stream is over (never blocks: each writer has a spare slot for it).

        Raises:
            ChannelClosed: the owner closed the channel.
        """
        if self._closed:
            return
        ring = self._attach()
        header, buf = ring.header, ring.buf
        assert header is not None and buf is not None
        if header[_CLOSED]:
            raise ChannelClosed(_CLOSED_BY_OWNER)
        with self._guard():
            _SLOT_META.pack_into(buf, self._claim(header), 0, _END)
            self._filled.release()

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
        writers: how many senders end their stream on this channel.
    """

    def __init__(self, conn: Connection, free: Semaphore, filled: Semaphore, shm_name: str,
                 spec: ArraySpec | None, capacity: int, copy: bool = True, writers: int = 1) -> None:  # fmt: skip
        self._writers_left = writers
        self._conn = conn
        self._free = free
        self._filled = filled
        self._shm_name = shm_name
        self.spec = spec
        self.capacity = capacity
        self.copy = copy
        self._slots = capacity + writers
        self._read = 0  # messages taken
        self._arrays_read = 0
        self._ring: _RingView | None = None
        self._held = False
        self._closed = False
        self._interrupted = False

    def interrupt(self) -> None:
        """Wake a :meth:`recv` blocked in another thread of this process (it raises
        :class:`ChannelClosed`); every later ``recv`` raises too. Unlike
        :meth:`Channel.abort`, the other processes on the channel do not see it."""
        self._interrupted = True
        self._filled.release()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_ring"] = None
        state["_interrupted"] = False
        return state

    def recv(self) -> Any:
        """Receive the next item, blocking (without CPU) until one arrives.

        Returns:
            the item; an array of the channel's spec is a copy or a read-only view (see ``copy``).

        Raises:
            EndOfStream: every producer finished.
            ChannelClosed: the owner closed the channel (the pipeline is stopping), or a
                producer went away in the middle of a large item.
            PipelineStateError: this end is closed.
        """
        ring = self._ring
        if ring is None:
            if self._closed:
                raise PipelineStateError("this channel end is closed")
            ring = self._ring = _RingView(self._shm_name, self.spec, self.capacity, self._slots)
        if self._held:
            self.release()
        if self._writers_left <= 0:
            raise EndOfStream
        header, buf = ring.header, ring.buf
        assert header is not None and buf is not None
        while True:
            self._filled.acquire()
            if header[_CLOSED] or self._interrupted:
                self._filled.release()  # wake the next waiter too
                raise ChannelClosed(_CLOSED_BY_OWNER)
            index = self._read
            self._read = index + 1
            offset = _HEADER_BYTES + (index % self._slots) * SLOT_BYTES
            tag = buf[offset + 4]
            if tag == _INT:  # the hot path of a hop
                value = _INT64.unpack_from(buf, offset + _PAYLOAD_OFFSET)[0]
                self._free.release()
                return value
            if tag == _PICKLE:
                start = offset + _PAYLOAD_OFFSET
                try:
                    return _loads(buf[start : start + _SLOT_META.unpack_from(buf, offset)[0]])
                finally:
                    self._free.release()
            if tag == _FLOAT:
                value = _FLOAT64.unpack_from(buf, offset + _PAYLOAD_OFFSET)[0]
                self._free.release()
                return value
            if tag == _ARRAY:
                assert ring.arrays is not None
                array = ring.arrays[self._arrays_read % self.capacity]
                self._arrays_read += 1
                if self.copy:
                    out = array.copy()
                    self._free.release()
                    return out
                out = array.view()
                out.flags.writeable = False
                self._held = True
                return out
            if tag == _LARGE:
                try:
                    data = self._read_pipe(_SLOT_META.unpack_from(buf, offset)[0])
                finally:
                    self._free.release()
                return _loads(data)
            if tag == _END:  # took no credit
                self._writers_left -= 1
                if self._writers_left <= 0:
                    raise EndOfStream
                continue  # another writer is still going
            raise ChannelClosed(f"corrupt channel message tag {tag!r} at message {index}")

    def _read_pipe(self, size: int) -> bytearray:
        data = bytearray(size)
        view = memoryview(data)
        fd = self._conn.fileno()
        got = 0
        try:
            while got < size:
                n = os.readv(fd, [view[got:]])
                if n == 0:
                    raise ChannelClosed("the sending stage went away in the middle of a large item")
                got += n
        except OSError as exc:
            raise ChannelClosed(f"the channel's pipe failed: {exc}") from exc
        finally:
            view.release()
        return data

    def release(self) -> None:
        """Free the slot of the view returned by the last :meth:`recv` (no-op otherwise)."""
        if self._held:
            self._held = False
            self._free.release()

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
    """Owner of one link: the shared-memory ring, its two semaphores and the pipe for large items.

    Created in the parent before the stages start. It creates the segment and is the only
    one to unlink it, in :meth:`close`.

    Args:
        ctx: the multiprocessing context the stages are started with.
        capacity: items in flight at most (the number of message slots); ≥ 1.
        spec: shape and dtype of the arrays that use the array slots; ``None`` pickles everything.
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
        name = f"{SHM_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        self._shm: SharedMemory | None = SharedMemory(
            name=name, create=True, size=_segment_size(capacity, writers, spec)
        )
        self._name = name
        logger.debug("created channel %s: %d slots, arrays %s", name, capacity, spec)
        reader, writer = ctx.Pipe(duplex=False)
        self._free = ctx.Semaphore(capacity)
        self._filled = ctx.Semaphore(0)
        lock = ctx.Lock() if writers > 1 else None
        self._lock = lock
        self.sender = Sender(writer, self._free, self._filled, name, spec, capacity, writers, lock)
        self.receiver = Receiver(
            reader, self._free, self._filled, name, spec, capacity, copy=copy, writers=writers
        )
        self._closed = False

    @property
    def shm_name(self) -> str:
        """The channel's segment name (``/dev/shm/<shm_name>``)."""
        return self._name

    def abort(self) -> None:
        """Mark the channel closed and wake every end blocked on it (idempotent).

        Blocked and later ``send``/``recv`` calls, in any process, raise :class:`ChannelClosed`.
        """
        if self._shm is None or self._shm.buf is None:
            return
        struct.pack_into("<Q", self._shm.buf, _CLOSED * 8, 1)
        # One release each: a woken waiter passes it on to the next one.
        self._filled.release()
        self._free.release()

    def close(self) -> None:
        """Wake any waiter, close the owner's ends and unlink the segment (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.abort()
        self.sender.close()
        self.receiver.close()
        for semaphore in (self._free, self._filled, self._lock):
            unlink_name(semaphore)  # now, not when a traceback holding it is collected
        if self._shm is not None:
            shm, self._shm = self._shm, None
            shm.close()
            try:
                shm.unlink()
            except FileNotFoundError:  # pragma: no cover - removed behind our back
                logger.warning("channel segment %s was already gone", shm.name)
