"""The asyncio twin of :class:`~hermes.aeriel.client.InferenceClient` (``tritonclient.grpc.aio``).

```
 coroutines                         event loop                            gRPC (aio)
 await client.infer(x)              _requests(): queue.get() → encode ──▶ stream_infer request stream
   validate, await window            _reader(): async for (result, error) ◀── responses
   queue.put(entry) → Future           pop pending, set_result, window.release()
                                     loop.call_later(timeout) per request → expiry
```

It shares validation, stream-part assembly, padding and shared-memory slots with the
synchronous client. Inputs are encoded when the request stream pulls them, one at a time, so
cached ``InferInput`` objects are reused safely.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import tritonclient.grpc.aio as aiogrpc

from hermes.aeriel.client._client import (
    SequenceId,
    _Pending,
    check_sequence_id,
    decode_outputs,
    version_string,
    warm_up_inputs,
)
from hermes.aeriel.client._errors import is_stream_failure, request_id_of, translate, translated
from hermes.aeriel.client._requests import InputsLike, Prepared, RequestBuilder
from hermes.aeriel.client._result import Callback, LatencyStats, LatencyTracker, Result, Timings
from hermes.aeriel.client._shared_memory import ShmPool
from hermes.aeriel.client._signature import (
    ModelSignature,
    StreamGroup,
    TensorSpec,
    ensemble_steps,
    read_signature,
)
from hermes.aeriel.exceptions import (
    ClientClosedError,
    ClientError,
    ConnectionFailed,
    InferenceFailed,
    InferenceTimeout,
    SequenceError,
)

__all__ = ["AsyncInferenceClient", "AsyncSequence"]

logger = logging.getLogger("hermes.aeriel.client.aio")


class _Outgoing:
    __slots__ = ("end", "prepared", "rid", "sequence_id", "start", "version")

    def __init__(
        self, rid: str, prepared: Prepared, sequence_id: SequenceId, start: bool, end: bool, version: str
    ) -> None:
        self.rid = rid
        self.prepared = prepared
        self.sequence_id = sequence_id
        self.start = start
        self.end = end
        self.version = version


class AsyncInferenceClient:
    """An asyncio streaming client; ``await client.infer(x)`` returns an awaitable future.

    Use ``async with AsyncInferenceClient(...) as client`` (or ``await client.open()``).
    Arguments are those of :class:`~hermes.aeriel.client.InferenceClient`.
    """

    def __init__(
        self,
        url: str,
        model_name: str,
        model_version: int | str = -1,
        *,
        max_in_flight: int = 16,
        timeout_s: float = 60.0,
        shared_memory: str | bool | None = None,
        cuda_device: int = 0,
        pad_batch: bool = False,
        callback: Callback | None = None,
        latency_window: int = 10_000,
        connect_timeout_s: float = 10.0,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if shared_memory is True:
            shared_memory = "system"
        if shared_memory not in (None, False, "system", "cuda"):
            raise ValueError(f"shared_memory must be None, 'system' or 'cuda', got {shared_memory!r}")
        self.url = url
        self.model_name = model_name
        self.model_version = version_string(model_version)
        self.max_in_flight = max_in_flight
        self.timeout_s = float(timeout_s)
        self.shared_memory = shared_memory or None
        self.cuda_device = cuda_device
        self.pad_batch = pad_batch
        self.callback = callback
        self.connect_timeout_s = connect_timeout_s
        self._latency = LatencyTracker(latency_window)
        self._pending: dict[str, _Pending] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._counter = itertools.count(1)
        self._live: set[SequenceId] = set()
        self._broken: ClientError | None = None
        self._opened = False
        self._closing = False
        self._closed = False
        self._pool: ShmPool | None = None
        self._grpc: Any = None
        self._reader_task: asyncio.Task[None] | None = None
        self._drained: asyncio.Event | None = None

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
        self._grpc = aiogrpc.InferenceServerClient(self.url)
        try:
            self.signature = await self._discover()
            self._builder = RequestBuilder(self.signature, pad_batch=self.pad_batch)
            self._names = self.signature.output_names
            self._out_specs = {t.name: t for t in self.signature.outputs}
            self._fixed_batch = self.signature.fixed_batch
            if self.shared_memory is not None:
                self._pool = self._make_pool(self.shared_memory)
            with translated(endpoint=self.url, model=self.model_name):
                responses = self._grpc.stream_infer(inputs_iterator=self._requests())
            self._reader_task = asyncio.get_running_loop().create_task(self._reader(responses))
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def _discover(self) -> ModelSignature:
        endpoint, name, t = self.url, self.model_name, self.connect_timeout_s
        with translated(endpoint=endpoint, model=name):
            try:
                live = await self._grpc.is_server_live(client_timeout=t)
            except Exception as exc:
                raise ConnectionFailed(f"cannot reach the inference server at {endpoint}: {exc}") from exc
            if not live:
                raise ConnectionFailed(f"the inference server at {endpoint} is not live")
            if not await self._grpc.is_model_ready(name, self.model_version, client_timeout=t):
                raise InferenceFailed(
                    f"model '{name}' (version {self.model_version or 'latest'}) is not ready at {endpoint}; load it first"
                )
            config = (await self._grpc.get_model_config(name, self.model_version, client_timeout=t)).config
            steps = {}
            for step, version in ensemble_steps(config):
                steps[step] = (await self._grpc.get_model_config(step, version, client_timeout=t)).config
        return read_signature(name, self.model_version, config, steps)

    def _make_pool(self, kind: str) -> ShmPool:
        # Registration happens from synchronous code (slot creation), so it uses a short-lived
        # synchronous gRPC client: registering is rare (once per slot), requests never do it.
        import tritonclient.grpc as grpcclient

        endpoint, name = self.url, self.model_name

        def register(*args: Any) -> None:
            with translated(endpoint=endpoint, model=name), grpcclient.InferenceServerClient(endpoint) as c:
                if kind == "system":
                    c.register_system_shared_memory(*args, client_timeout=self.timeout_s)
                else:
                    c.register_cuda_shared_memory(*args, client_timeout=self.timeout_s)

        def unregister(region: str) -> None:
            with translated(endpoint=endpoint, model=name), grpcclient.InferenceServerClient(endpoint) as c:
                if kind == "system":
                    c.unregister_system_shared_memory(region, client_timeout=5.0)
                else:
                    c.unregister_cuda_shared_memory(region, client_timeout=5.0)

        return ShmPool(kind, register=register, unregister=unregister, device_id=self.cuda_device)

    async def close(self, timeout_s: float | None = None) -> None:
        """Wait for pending requests (up to ``timeout_s``), stop the stream, free shared memory. Idempotent."""
        if self._closed:
            return
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
        self._fail_all(ClientClosedError(f"the client for '{self.model_name}' at {self.url} was closed"))
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

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ discovery results
    @property
    def inputs(self) -> dict[str, TensorSpec]:
        return {t.name: t for t in self.signature.inputs}

    @property
    def outputs(self) -> dict[str, TensorSpec]:
        return {t.name: t for t in self.signature.outputs}

    @property
    def streams(self) -> tuple[StreamGroup, ...]:
        return self.signature.streams

    @property
    def stateful(self) -> bool:
        return self.signature.stateful

    @property
    def latency(self) -> LatencyStats:
        return self._latency.stats()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def shm_regions(self) -> list[str]:
        return self._pool.regions if self._pool is not None else []

    # ------------------------------------------------------------------ sending
    def _check_open(self) -> None:
        if not self._opened:
            raise ClientClosedError("the client is not open; use 'async with' or await client.open()")
        if self._closed or self._closing:
            raise ClientClosedError(f"the client for '{self.model_name}' at {self.url} is closed")
        if self._broken is not None:
            raise type(self._broken)(str(self._broken))

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
        if self.signature.stateful:
            raise SequenceError(
                f"model '{self.model_name}' is stateful; send its requests through client.sequence(sequence_id)"
            )
        return await self._submit(
            inputs, 0, False, False, self.model_version, request_id, callback, timeout_s
        )

    def sequence(self, sequence_id: SequenceId, *, model_version: int | str | None = None) -> AsyncSequence:
        """Start a stateful sequence; see :class:`AsyncSequence` (same rules as the sync one)."""
        sequence_id = check_sequence_id(sequence_id)
        self._check_open()
        if not self.signature.stateful:
            raise SequenceError(f"model '{self.model_name}' is not stateful; use client.infer()")
        if sequence_id in self._live:
            raise SequenceError(f"sequence {sequence_id!r} is already live on this client")
        self._live.add(sequence_id)
        version = self.model_version if model_version is None else version_string(model_version)
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
        self._check_open()
        prepared = self._builder.prepare(inputs)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            await asyncio.wait_for(self._window.acquire(), timeout)
        except TimeoutError:
            raise InferenceTimeout(
                f"no room in the window of {self.max_in_flight} requests to {self.url} "
                f"(model '{self.model_name}') within {timeout} s"
            ) from None
        try:
            self._check_open()
        except BaseException:
            self._window.release()
            raise
        loop = asyncio.get_running_loop()
        rid = str(next(self._counter))
        future: asyncio.Future[Result] = loop.create_future()
        now = time.perf_counter()
        self._pending[rid] = _Pending(
            future,
            now,
            now + timeout,
            rid if request_id is None else request_id,
            sequence_id or None,
            None,
            prepared.real_batch,
            callback,
        )
        self._timers[rid] = loop.call_later(timeout, self._expire, rid)
        self._queue.put_nowait(_Outgoing(rid, prepared, sequence_id, start, end, version))
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
                with translated(endpoint=self.url, model=self.model_name):
                    if self._pool is not None:
                        inputs, outputs, slot = self._builder.encode_shm(item.prepared, self._pool)
                        entry.slot = slot
                        entry.shapes = tuple(a.shape for a in item.prepared.arrays)
                    else:
                        inputs, outputs = self._builder.encode(item.prepared), None
            except ClientError as exc:
                if self._pending.pop(item.rid, None) is not None:
                    self._finish(item.rid, entry, None, exc)
                continue
            entry.sent_at = time.perf_counter()
            yield {
                "model_name": self.model_name,
                "inputs": inputs,
                "outputs": outputs,
                "model_version": item.version,
                "request_id": item.rid,
                "sequence_id": item.sequence_id,
                "sequence_start": item.start,
                "sequence_end": item.end,
            }

    # ------------------------------------------------------------------ receiving
    async def _reader(self, responses: Any) -> None:
        try:
            async for result, error in responses:
                if error is not None:
                    self._on_error(error)
                    continue
                received = time.perf_counter()
                response = result.get_response()
                rid = response.id
                entry = self._pending.pop(rid, None)
                if entry is None:
                    continue
                try:
                    outputs = decode_outputs(
                        result, self._names, self._out_specs, entry, self._fixed_batch, self._builder
                    )
                except Exception as exc:  # pragma: no cover
                    self._finish(
                        rid, entry, None, InferenceFailed(f"cannot decode a response from {self.url}: {exc}")
                    )
                    continue
                latency = received - entry.sent_at
                self._latency.add(latency)
                res = Result(
                    outputs=outputs,
                    timings=Timings(latency_s=latency, sent_at=entry.sent_at),
                    request_id=entry.request_id,
                    sequence_id=entry.sequence_id,
                    model_version=response.model_version,
                )
                self._finish(rid, entry, res, None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            broken = translate(exc, endpoint=self.url, model=self.model_name)
            if not isinstance(broken, ConnectionFailed):
                broken = ConnectionFailed(
                    f"the stream to {self.url} (model '{self.model_name}') failed: {broken}"
                )
            self._broken = self._broken or broken
            self._fail_all(broken)

    def _on_error(self, error: Any) -> None:
        if is_stream_failure(error):
            broken = translate(error, endpoint=self.url, model=self.model_name)
            self._broken = self._broken or ConnectionFailed(str(broken))
            self._fail_all(self._broken)
            return
        rid = request_id_of(error)
        entry = self._pending.pop(rid, None) if rid is not None else None
        if entry is None:
            rid = next(iter(self._pending), None)
            if rid is None:
                logger.warning("error response with no request pending: %s", error)
                return
            entry = self._pending.pop(rid)
        assert rid is not None  # found by the id Triton quoted, or the oldest pending
        self._finish(rid, entry, None, translate(error, endpoint=self.url, model=self.model_name))

    def _finish(self, rid: str, entry: _Pending, result: Result | None, error: BaseException | None) -> None:
        timer = self._timers.pop(rid, None)
        if timer is not None:
            timer.cancel()
        if entry.slot is not None and self._pool is not None:
            self._pool.release(entry.slot)
        self._window.release()
        if not entry.future.done():
            if error is None:
                entry.future.set_result(result)
            else:
                entry.future.set_exception(error)
        for callback in (self.callback, entry.callback):
            if callback is not None:
                try:
                    callback(result, error)
                except Exception:
                    logger.exception("a client callback raised; the stream goes on")
        if self._closing and not self._pending and self._drained is not None:
            self._drained.set()

    def _expire(self, rid: str) -> None:
        entry = self._pending.pop(rid, None)
        if entry is not None:
            self._finish(
                rid,
                entry,
                None,
                InferenceTimeout(
                    f"request {entry.request_id!r} to {self.url} (model '{self.model_name}') "
                    "got no response within its timeout"
                ),
            )

    def _fail_all(self, error: ClientError) -> None:
        for rid in list(self._pending):
            entry = self._pending.pop(rid, None)
            if entry is not None:
                self._finish(rid, entry, None, type(error)(str(error)))
        if self._drained is not None:
            self._drained.set()

    # ------------------------------------------------------------------ utilities
    async def warm_up(
        self, n: int = 8, inputs: InputsLike | None = None, *, reset_latency: bool = True
    ) -> LatencyStats:
        """As :meth:`InferenceClient.warm_up`."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        example = warm_up_inputs(self.signature) if inputs is None else inputs
        self._latency.reset()
        futures = []
        if self.signature.stateful:
            async with self.sequence(random.getrandbits(62) | (1 << 62)) as seq:
                for i in range(n):
                    futures.append(await seq.send(example, end=i == n - 1))
        else:
            for _ in range(n):
                futures.append(await self.infer(example))
        await asyncio.gather(*futures)
        stats = self._latency.stats()
        if reset_latency:
            self._latency.reset()
        return stats

    async def wait_all(self) -> None:
        """Wait until every request sent so far is answered (or failed)."""
        futures = [e.future for e in list(self._pending.values())]
        if futures:
            await asyncio.gather(*futures, return_exceptions=True)


class AsyncSequence:
    """A stateful sequence on an :class:`AsyncInferenceClient`; same rules as :class:`Sequence`."""

    def __init__(self, client: AsyncInferenceClient, sequence_id: SequenceId, model_version: str) -> None:
        self.client = client
        self.sequence_id = sequence_id
        self.model_version = model_version
        self.sent = 0
        self._started = False
        self._ended = False
        self._released = False
        self._lock = asyncio.Lock()

    @property
    def ended(self) -> bool:
        return self._ended

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
            if self._ended:
                raise SequenceError(f"sequence {self.sequence_id!r} already ended; no request may follow END")
            if self._released:
                raise SequenceError(f"sequence {self.sequence_id!r} was closed without END")
            future = await self.client._submit(
                inputs,
                self.sequence_id,
                not self._started,
                end,
                self.model_version,
                request_id,
                callback,
                timeout_s,
            )
            self._started = True
            self.sent += 1
            if end:
                self._ended = True
                self._release()
            return future

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self.client._live.discard(self.sequence_id)

    def close(self) -> None:
        """Forget the sequence locally (idempotent)."""
        self._release()

    async def __aenter__(self) -> AsyncSequence:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        unfinished = self._started and not self._ended
        self._release()
        if unfinished and exc_type is None:
            raise SequenceError(
                f"sequence {self.sequence_id!r} left its block without END; "
                "send the last update with await seq.send(x, end=True)"
            )
