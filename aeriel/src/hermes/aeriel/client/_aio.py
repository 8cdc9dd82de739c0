"""The asyncio twin of :class:`~hermes.aeriel.client.InferenceClient` (``tritonclient.grpc.aio``).

```
 coroutines                         event loop                            gRPC (aio)
 await client.infer(x)              _requests(): queue.get() → encode ──▶ stream_infer request stream
   validate, await window            _reader(): async for (result, error) ◀── responses
   queue.put(entry) → Future           pop pending, set_result, window.release()
                                     loop.call_later(timeout) per request → expiry
```

Options, discovery, validation, sequences, result building, error handling and shared-memory
slots are the synchronous client's own code (:mod:`hermes.aeriel.client._core`); this module
holds only the asyncio plumbing. Inputs are encoded when the request stream pulls them, one
at a time, so cached ``InferInput`` objects are reused safely.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpc

from hermes.aeriel._errors import translated
from hermes.aeriel.client._core import AbandonRequest, ClientCore, SequenceCore, _Pending
from hermes.aeriel.client._discovery import discover_async
from hermes.aeriel.client._options import SequenceId
from hermes.aeriel.client._requests import InputsLike, Prepared
from hermes.aeriel.client._result import Callback, LatencyStats, Result
from hermes.aeriel.control.client import channel_args
from hermes.aeriel.exceptions import ClientClosedError, ClientError

__all__ = ["AsyncInferenceClient", "AsyncSequence"]

logger = logging.getLogger("hermes.aeriel.client.aio")


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """A request waiting in the queue for the request stream to pull it."""

    rid: str
    prepared: Prepared
    sequence_id: SequenceId
    start: bool
    end: bool
    version: str


class AsyncInferenceClient(ClientCore):
    """An asyncio streaming client; ``await client.infer(x)`` returns an awaitable future.

    Use ``async with AsyncInferenceClient(...) as client`` (or ``await client.open()``).
    Arguments, properties (``model_version`` setter and ``max_sequences`` included) and
    errors are those of :class:`~hermes.aeriel.client.InferenceClient`.

    It answers the same protocol (:class:`~hermes.aeriel.client.StreamingClient`, with the
    names and arguments of the thread-based clients) with one difference: ``infer``,
    ``sequence(id).send`` and ``close`` are coroutines. Awaiting ``infer``/``send`` waits for
    room in the window (backpressure) and gives an ``asyncio.Future`` of the
    :class:`Result`, not the result: ``future = await client.infer(x)``, then
    ``result = await future`` (so many requests can be in flight from one task).
    """

    def _start(self) -> None:
        """Nothing connects before :meth:`open`; set up the asyncio-side state."""
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._opened = False
        self._grpc: Any = None
        self._reader_task: asyncio.Task[None] | None = None
        self._drained: asyncio.Event | None = None
        self._background: set[asyncio.Task[None]] = set()  # END requests of abandoned sequences

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> AsyncInferenceClient:
        """Connect, read the signature, start the stream. Idempotent."""
        if self._opened:
            return self
        if self._closed:
            raise ClientClosedError("this client was closed; make a new one")
        self._opened = True
        self._window = asyncio.Semaphore(self.max_in_flight)
        self._queue: asyncio.Queue[_Outgoing | None] = asyncio.Queue()
        self._drained = asyncio.Event()
        self._grpc = aiogrpc.InferenceServerClient(self.url, channel_args=channel_args(self.url))
        try:
            self._use(
                await discover_async(
                    self._grpc, self.url, self.model_name, self.model_version, self.connect_timeout_s
                )
            )
            if self.shared_memory is not None:
                # Slots register from synchronous code (slot creation), so through a short-lived
                # synchronous gRPC client: registering is rare (once per slot), requests never do it.
                self._pool = self._make_pool(
                    lambda: grpcclient.InferenceServerClient(self.url, channel_args=channel_args(self.url))
                )
            with translated(endpoint=self.url, model=self.model_name):
                responses = self._grpc.stream_infer(inputs_iterator=self._requests())
            self._reader_task = asyncio.get_running_loop().create_task(self._reader(responses))
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def close(self, timeout_s: float | None = None) -> None:
        """Wait for pending requests (up to ``timeout_s``), stop the stream, free shared memory. Idempotent."""
        if self._closed:
            return
        if self._background:  # END requests of abandoned sequences go out before the drain
            await asyncio.gather(*self._background, return_exceptions=True)
        self._closing = True
        if self._opened and self._pending and self._broken is None and self._drained is not None:
            self._drained.clear()
            try:
                await asyncio.wait_for(
                    self._drained.wait(), self.timeout_s if timeout_s is None else timeout_s
                )
            except TimeoutError:
                pass
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._closing = True
        if self._opened:
            self._queue.put_nowait(None)
        if self._reader_task is not None:
            if self._pending:
                self._reader_task.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(self._reader_task), 5.0)
            except (asyncio.CancelledError, TimeoutError, Exception):
                self._reader_task.cancel()
                try:
                    await self._reader_task
                except BaseException:
                    pass
        self._fail_all(self._closed_error())
        self._closed = True
        self._live.clear()
        try:
            if self._pool is not None:
                await asyncio.get_running_loop().run_in_executor(None, self._pool.close)
        finally:
            if self._grpc is not None:
                try:
                    await self._grpc.close()
                except Exception as exc:  # pragma: no cover
                    logger.debug("closing the aio client failed: %s", exc)

    async def __aenter__(self) -> AsyncInferenceClient:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ sending
    def _check_open(self) -> None:
        if not self._opened:
            raise ClientClosedError("the client is not open; use 'async with' or await client.open()")
        super()._check_open()

    async def infer(
        self,
        inputs: InputsLike,
        *,
        request_id: Any = None,
        callback: Callback | None = None,
        timeout_s: float | None = None,
    ) -> asyncio.Future[Result]:
        """Send one request to a stateless model; waits for room in the window.

        Returns:
            An asyncio future resolving to a :class:`Result` (``result = await (await client.infer(x))``).
        """
        self._check_open()
        self._check_stateless()
        return await self._submit(
            inputs, 0, False, False, self.model_version, request_id, callback, timeout_s
        )

    def sequence(self, sequence_id: SequenceId, *, model_version: int | str | None = None) -> AsyncSequence:
        """Start a stateful sequence; see :class:`AsyncSequence` (same rules and limits as the sync one)."""
        sequence_id, version = self._open_sequence(sequence_id, model_version)
        return AsyncSequence(self, sequence_id, version)

    async def _submit(
        self,
        inputs: InputsLike,
        sequence_id: SequenceId,
        start: bool,
        end: bool,
        version: str,
        request_id: Any,
        callback: Callback | None,
        timeout_s: float | None,
    ) -> asyncio.Future[Result]:
        prepared, timeout = self._prepare(inputs, timeout_s)
        try:
            await asyncio.wait_for(self._window.acquire(), timeout)
        except TimeoutError:
            raise self._window_full(timeout) from None
        try:
            self._check_open()
        except BaseException:
            self._window.release()
            raise
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        entry = self._entry(future, timeout, request_id, sequence_id, prepared, callback)
        self._pending[entry.rid] = entry
        self._timers[entry.rid] = loop.call_later(timeout, self._expire, entry.rid)
        self._queue.put_nowait(_Outgoing(entry.rid, prepared, sequence_id, start, end, version))
        return future

    async def _requests(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            entry = self._pending.get(item.rid)
            if entry is None:  # expired before it could be sent
                continue
            try:
                inputs, outputs, slot = self._encode(item.prepared)
            except ClientError as exc:
                if self._pending.pop(item.rid, None) is not None:
                    self._finish(entry, None, exc)
                continue
            entry.attach(slot, item.prepared)
            entry.sent_at = time.perf_counter()
            yield self._request(
                item.rid, inputs, outputs, item.sequence_id, item.start, item.end, item.version
            )

    # ------------------------------------------------------------------ receiving
    async def _reader(self, responses: Any) -> None:
        try:
            async for result, error in responses:
                if error is not None:
                    self._on_error(error)
                else:
                    self._on_result(result)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._break(exc)

    def _settled(self, entry: _Pending) -> None:
        timer = self._timers.pop(entry.rid, None)
        if timer is not None:
            timer.cancel()
        if self._closing and not self._pending and self._drained is not None:
            self._drained.set()

    def _wake_waiters(self) -> None:
        if self._drained is not None:
            self._drained.set()

    def _expire(self, rid: str) -> None:
        entry = self._pending.pop(rid, None)
        if entry is not None:
            self._finish(entry, None, self._expired(entry))

    # ------------------------------------------------------------------ utilities
    async def warm_up(
        self, n: int = 8, inputs: InputsLike | None = None, *, reset_latency: bool = True
    ) -> LatencyStats:
        """As :meth:`InferenceClient.warm_up`."""
        example = self._warm_up_inputs(n, inputs)
        futures = []
        if self.signature.stateful:
            async with self.sequence(self._warm_up_sequence_id()) as seq:
                for i in range(n):
                    futures.append(await seq.send(example, end=i == n - 1))
        else:
            for _ in range(n):
                futures.append(await self.infer(example))
        await asyncio.gather(*futures)
        return self._warm_up_stats(reset_latency)

    async def wait_all(self) -> None:
        """Wait until every request sent so far is answered (or failed)."""
        futures = [e.future for e in list(self._pending.values())]
        if futures:
            await asyncio.gather(*futures, return_exceptions=True)


class AsyncSequence(SequenceCore):
    """A stateful sequence on an :class:`AsyncInferenceClient`; same rules as :class:`Sequence`."""

    client: AsyncInferenceClient

    def __init__(self, client: AsyncInferenceClient, sequence_id: SequenceId, model_version: str) -> None:
        super().__init__(client, sequence_id, model_version)
        self._lock = asyncio.Lock()

    async def send(
        self,
        inputs: InputsLike,
        *,
        end: bool = False,
        request_id: Any = None,
        callback: Callback | None = None,
        timeout_s: float | None = None,
    ) -> asyncio.Future[Result]:
        """Send the next request (START on the first, END with ``end=True``); returns a future."""
        async with self._lock:
            self._check_sendable()
            future = await self.client._submit(inputs, *self._next(end), request_id, callback, timeout_s)
            self._sent_one(end)
            return future

    def close(self, *, send_end: bool = True) -> None:
        """End the sequence (idempotent); a started one without END gets an END of zeros, scheduled.

        ``send_end=False`` only forgets it here (for a server that is gone).
        """
        request = self._abandon_request() if send_end else None
        if request is not None:
            task = asyncio.get_running_loop().create_task(self._send_end(request))
            self.client._background.add(task)
            task.add_done_callback(self.client._background.discard)
        self._close()

    async def _send_end(self, request: AbandonRequest) -> None:
        try:
            await self.client._submit(*request, None, None)
        except Exception as exc:  # the original error matters more; the slot idles out
            self._abandon_failed(exc)

    async def __aenter__(self) -> AsyncSequence:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        unfinished = self._unfinished
        if exc_type is not None:
            request = self._abandon_request()
            if request is not None:
                await self._send_end(request)
        self._release()
        if unfinished and exc_type is None:
            raise self._left_without_end("await seq.send(x, end=True)")
