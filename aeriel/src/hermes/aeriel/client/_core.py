"""What the synchronous and the asyncio client share: one implementation of everything but I/O.

```
 InferenceClient (threads)          ClientCore                        AsyncInferenceClient (asyncio)
 ─────────────────────────          ──────────                        ──────────────────────────────
 __init__: discover()       ──▶  options, signature, builder,    ◀──  open(): discover_async()
 sequence(): under its lock ──▶  _open_sequence (capacity check)  ◀──  sequence()
 _submit: window, encode    ──▶  _entry / _encode / _request      ◀──  _submit + _requests()
 stream thread callback     ──▶  _on_result / _on_error / _finish ◀──  _reader() task
 watchdog thread            ──▶  _expired                         ◀──  loop.call_later
```

The core keeps the pending table (request id → :class:`_Pending`), the live sequences, the
latency tracker and the shared-memory pool. Each entry leaves ``_pending`` exactly once (by
its response, its expiry or a stream failure); :meth:`ClientCore._finish` then releases its
slot and its window place and settles its future. The subclasses supply the window (a
``threading`` or ``asyncio`` semaphore) and :meth:`ClientCore._settled` /
:meth:`ClientCore._wake_waiters`, which wake whoever waits for the client to drain.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import random
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from hermes.aeriel._errors import is_stream_failure, request_id_of, translate, translated
from hermes.aeriel.client._options import ClientOptions, SequenceId, check_sequence_id, version_string
from hermes.aeriel.client._requests import InputsLike, Prepared, RequestBuilder
from hermes.aeriel.client._result import Callback, LatencyStats, LatencyTracker, Result, Timings
from hermes.aeriel.client._shared_memory import ShmPool, Slot
from hermes.aeriel.client._signature import ModelSignature, StreamGroup, TensorSpec
from hermes.aeriel.exceptions import (
    ClientClosedError,
    ClientError,
    ConnectionFailed,
    InferenceFailed,
    InferenceTimeout,
    InputValidationError,
    SequenceError,
)
from hermes.quiver.config import DataType

__all__ = ["AbandonRequest", "ClientCore", "SequenceCore", "decode_outputs", "warm_up_inputs"]

#: ``(inputs, sequence id, start, end, version, request id)`` of the END sent for an abandoned sequence.
AbandonRequest = tuple[InputsLike, SequenceId, bool, bool, str, str]

logger = logging.getLogger("hermes.aeriel.client")

_SETTLED = (concurrent.futures.InvalidStateError, asyncio.InvalidStateError)


def warm_up_inputs(signature: ModelSignature) -> dict[str, np.ndarray]:
    """Zeros of every input's shape (batch 1); raises when an axis is variable."""
    arrays = {}
    for spec in signature.inputs:
        shape = list(spec.shape)
        if signature.max_batch_size > 0:
            shape[0] = 1
        if any(d < 0 for d in shape):
            raise InputValidationError(
                f"cannot make a warm-up request for {spec.describe()} (variable axis); pass inputs= to warm_up()"
            )
        arrays[spec.name] = np.zeros(shape, dtype=spec.dtype.numpy)
    return arrays


class _Pending:
    """One request between send and response: its future, deadline and shared-memory slot."""

    __slots__ = (
        "callback",
        "deadline",
        "future",
        "real_batch",
        "request_id",
        "rid",
        "sent_at",
        "sequence_id",
        "shapes",
        "slot",
    )

    def __init__(
        self,
        rid: str,
        future: Any,
        sent_at: float,
        deadline: float,
        request_id: Any,
        sequence_id: SequenceId | None,
        real_batch: int | None,
        callback: Callback | None,
    ) -> None:
        self.rid = rid
        self.future = future
        self.sent_at = sent_at
        self.deadline = deadline
        self.request_id = request_id
        self.sequence_id = sequence_id
        self.real_batch = real_batch
        self.callback = callback
        self.slot: Slot | None = None
        self.shapes: tuple[tuple[int, ...], ...] | None = None

    def attach(self, slot: Slot | None, prepared: Prepared) -> None:
        """Record the shared-memory slot holding this request's tensors (None: in-band)."""
        if slot is not None:
            self.slot = slot
            self.shapes = tuple(a.shape for a in prepared.arrays)


def _raw_dtypes() -> dict[str, np.dtype[Any]]:
    """Numpy dtypes of the Triton datatypes decoded here from raw bytes (quiver's one table).

    BYTES (length-prefixed) and BF16 (two bytes on the wire, float32 in numpy) are left to
    tritonclient's ``as_numpy``.
    """
    return {dt.value: np.dtype(dt.numpy) for dt in DataType if dt not in (DataType.BYTES, DataType.BF16)}


_RAW_DTYPES = _raw_dtypes()


def inband_outputs(result: Any, response: Any, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """``{name: array}`` of an in-band response, read-only views as ``result.as_numpy(name)`` gives.

    One pass over the response: output ``i`` is ``raw_output_contents[i]`` (the KServe v2
    protocol's pairing, which tritonclient's ``as_numpy`` follows too), without its search
    by name for every output. BYTES outputs, or a response that does not carry every output
    as raw bytes, go through ``as_numpy``.
    """
    decoded = {}
    for output, raw in zip(response.outputs, response.raw_output_contents, strict=False):
        dtype = _RAW_DTYPES.get(output.datatype)
        if dtype is None:  # BYTES, or a datatype this table does not know
            break
        decoded[output.name] = np.frombuffer(raw, dtype).reshape(tuple(output.shape))
    else:
        try:
            return {name: decoded[name] for name in names}
        except KeyError:
            pass
    return {name: result.as_numpy(name) for name in names}


def decode_outputs(
    result: Any,
    names: tuple[str, ...],
    specs: Mapping[str, TensorSpec],
    entry: _Pending,
    fixed_batch: int | None,
    builder: RequestBuilder,
) -> dict[str, np.ndarray]:
    """Numpy outputs of a response: in-band views, or copies read from the request's slot."""
    slot = entry.slot
    if slot is None:
        outputs = {name: result.as_numpy(name) for name in names}
    else:
        outputs = {}
        for name in names:
            if name in slot.output_locations:
                out = result.get_output(name)
                outputs[name] = slot.read(name, specs[name].dtype.numpy, list(out.shape))
            else:
                array = result.as_numpy(name)
                outputs[name] = array
                if array is not None and entry.shapes is not None:
                    builder.learn(entry.shapes, name, array.nbytes)
    if entry.real_batch is not None:
        real = entry.real_batch
        outputs = {
            n: (a[:real] if a is not None and a.ndim and a.shape[0] == fixed_batch else a)
            for n, a in outputs.items()
        }
    return outputs


class ClientCore:
    """The state and behaviour both clients share; see the module docstring.

    The constructor (one signature for both clients, documented on
    :class:`~hermes.aeriel.client.InferenceClient`) validates the settings into
    :class:`ClientOptions` once, sets up the shared state and then calls :meth:`_start`.
    """

    _window: Any  # a threading.Semaphore or an asyncio.Semaphore, set by the subclass
    signature: ModelSignature

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
        options = ClientOptions(
            url=url,
            model_name=model_name,
            model_version=model_version,
            max_in_flight=max_in_flight,
            timeout_s=timeout_s,
            shared_memory=shared_memory,
            cuda_device=cuda_device,
            pad_batch=pad_batch,
            callback=callback,
            latency_window=latency_window,
            connect_timeout_s=connect_timeout_s,
        )
        self.options = options
        self._model = options.model_name  # the options are frozen: plain attributes for the hot path
        self._timeout_s = float(options.timeout_s)
        self._model_version: str = str(options.model_version)
        self._latency = LatencyTracker(options.latency_window)
        self._pending: dict[str, _Pending] = {}
        self._counter = itertools.count(1)
        self._live: set[SequenceId] = set()
        self._broken: ClientError | None = None
        self._closing = False
        self._closed = False
        self._pool: ShmPool | None = None
        self._start()

    def _start(self) -> None:
        """Set up what the subclass owns (locks, the window, the connection) after validation."""

    # ------------------------------------------------------------------ settings
    @property
    def url(self) -> str:
        """The gRPC endpoint, ``host:port``."""
        return self.options.url

    @property
    def model_name(self) -> str:
        """The model (or ensemble) this client calls."""
        return self.options.model_name

    @property
    def model_version(self) -> str:
        """The version new requests and new sequences ask for, in wire form (``""`` = latest)."""
        return self._model_version

    @model_version.setter
    def model_version(self, version: int | str | None) -> None:
        """Point new requests and sequences at ``version`` (-1/None = latest, or a number >= 1).

        Live sequences keep the version they started with. Raises ValueError for anything else.
        """
        wire = version_string(version)
        if wire != self._model_version:
            logger.info(
                "client for '%s' at %s: new requests go to version %s",
                self.model_name,
                self.url,
                wire or "latest",
            )
        self._model_version = wire

    @property
    def max_in_flight(self) -> int:
        """The window: at most this many requests unanswered."""
        return self.options.max_in_flight

    @property
    def timeout_s(self) -> float:
        """Seconds a request may take from send to response."""
        return float(self.options.timeout_s)

    @property
    def shared_memory(self) -> str | None:
        """None (in-band), ``"system"`` or ``"cuda"``."""
        return self.options.shared_memory  # type: ignore[return-value]  # normalised by ClientOptions

    @property
    def cuda_device(self) -> int:
        """The device for CUDA shared memory."""
        return self.options.cuda_device

    @property
    def pad_batch(self) -> bool:
        """Whether partial batches are padded for a model with a fixed batch."""
        return self.options.pad_batch

    @property
    def callback(self) -> Callback | None:
        """Called as ``callback(result, error)`` for every request."""
        return self.options.callback

    @property
    def connect_timeout_s(self) -> float:
        """Seconds to wait for the server and the model metadata."""
        return float(self.options.connect_timeout_s)

    # ------------------------------------------------------------------ discovery results
    def _use(self, signature: ModelSignature) -> None:
        self.signature = signature
        self._builder = RequestBuilder(signature, pad_batch=self.pad_batch)
        self._names = signature.output_names
        self._out_specs = {t.name: t for t in signature.outputs}
        self._fixed_batch = signature.fixed_batch

    def _make_pool(self, connect: Callable[[], AbstractContextManager[Any]]) -> ShmPool:
        """A shared-memory pool registering its regions through ``connect()`` (a sync gRPC client)."""
        kind, endpoint, model = self.shared_memory, self.url, self.model_name

        def register(*args: Any) -> None:
            with translated(endpoint=endpoint, model=model), connect() as grpc_client:
                getattr(grpc_client, f"register_{kind}_shared_memory")(*args, client_timeout=self.timeout_s)

        def unregister(region: str) -> None:
            with translated(endpoint=endpoint, model=model), connect() as grpc_client:
                getattr(grpc_client, f"unregister_{kind}_shared_memory")(region, client_timeout=5.0)

        return ShmPool(str(kind), register=register, unregister=unregister, device_id=self.cuda_device)

    @property
    def inputs(self) -> dict[str, TensorSpec]:
        """``{name: TensorSpec}`` of the model's inputs."""
        return {t.name: t for t in self.signature.inputs}

    @property
    def outputs(self) -> dict[str, TensorSpec]:
        """``{name: TensorSpec}`` of the model's outputs."""
        return {t.name: t for t in self.signature.outputs}

    @property
    def streams(self) -> tuple[StreamGroup, ...]:
        """The ensemble's streaming groups (ensemble input → snapshotter → downstream tensors)."""
        return self.signature.streams

    @property
    def stateful(self) -> bool:
        """Whether requests must be sent through ``sequence()``."""
        return self.signature.stateful

    @property
    def max_sequences(self) -> int | None:
        """How many sequences may be live at once on this client (None: no recorded limit).

        The smallest ``max_sequences`` a quiver streaming ensemble records for its stateful
        members (``instances * sequences_per_instance``). One more live sequence would let
        Triton hand a member's slots to different sequences and stall the ensemble, so
        ``sequence()`` refuses it with :class:`~hermes.aeriel.SequenceError`.
        """
        return self.signature.max_sequences

    @property
    def live_sequences(self) -> int:
        """Sequences opened on this client and not yet ended or closed."""
        return len(self._live)

    @property
    def latency(self) -> LatencyStats:
        """Send-to-receive latency of the most recent requests (last, p50, p99, mean)."""
        return self._latency.stats()

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        return len(self._pending)

    @property
    def shm_regions(self) -> list[str]:
        """Names of the shared-memory regions this client has registered."""
        return self._pool.regions if self._pool is not None else []

    @property
    def closed(self) -> bool:
        """Whether the client was closed."""
        return self._closed

    # ------------------------------------------------------------------ sending
    def _check_open(self) -> None:
        if self._closed or self._closing:
            raise ClientClosedError(f"the client for '{self.model_name}' at {self.url} is closed")
        if self._broken is not None:
            raise type(self._broken)(str(self._broken))

    def _check_stateless(self) -> None:
        if self.signature.stateful:
            raise SequenceError(
                f"model '{self.model_name}' is stateful; send its requests through client.sequence(sequence_id)"
            )

    def _open_sequence(self, sequence_id: Any, model_version: int | str | None) -> tuple[SequenceId, str]:
        """Validate a new sequence and count it live; returns its id and wire version.

        The synchronous client calls this under its lock.
        """
        sequence_id = check_sequence_id(sequence_id)
        self._check_open()
        if not self.signature.stateful:
            raise SequenceError(f"model '{self.model_name}' is not stateful; use client.infer()")
        version = self._model_version if model_version is None else version_string(model_version)
        if sequence_id in self._live:
            raise SequenceError(f"sequence {sequence_id!r} is already live on this client")
        limit = self.signature.max_sequences
        if limit is not None and len(self._live) >= limit:
            raise SequenceError(
                f"cannot open sequence {sequence_id!r}: model '{self.model_name}' at {self.url} serves at most "
                f"{limit} live sequence(s) (max_sequences={limit}) and {len(self._live)} are live on this "
                "client; more would make its stateful members give their slots to different sequences and "
                "stall until the idle timeout. End a sequence first (send(..., end=True)), or rebuild the "
                "ensemble with more room: add_streaming_inputs(..., instances=N, sequences_per_instance=M) "
                "and add_streaming_output(..., instances=N, sequences_per_instance=M) serve N*M sequences "
                "(a fused model: add_fused_streaming_model(..., instances=N, sequences_per_instance=M))"
            )
        self._live.add(sequence_id)
        return sequence_id, version

    def _release_sequence(self, sequence_id: SequenceId) -> None:
        self._live.discard(sequence_id)

    def _prepare(self, inputs: InputsLike, timeout_s: float | None) -> tuple[Prepared, float]:
        """Validated inputs and the request's timeout (seconds), before waiting for the window."""
        self._check_open()
        return self._builder.prepare(inputs), self._timeout_s if timeout_s is None else timeout_s

    def _window_full(self, timeout_s: float) -> InferenceTimeout:
        return InferenceTimeout(
            f"no room in the window of {self.max_in_flight} requests to {self.url} "
            f"(model '{self.model_name}') within {timeout_s} s"
        )

    def _entry(
        self,
        future: Any,
        timeout_s: float,
        request_id: Any,
        sequence_id: SequenceId,
        prepared: Prepared,
        callback: Callback | None,
    ) -> _Pending:
        """A new pending entry (not yet in ``_pending``), timed from now."""
        rid = str(next(self._counter))
        now = time.perf_counter()
        return _Pending(
            rid,
            future,
            now,
            now + timeout_s,
            rid if request_id is None else request_id,
            sequence_id or None,
            prepared.real_batch,
            callback,
        )

    def _encode(self, prepared: Prepared) -> tuple[list[Any], list[Any] | None, Slot | None]:
        """The request's inputs, requested outputs (None: all in-band) and shared-memory slot."""
        if self._pool is None:
            return self._builder.encode(prepared), None, None
        with translated(endpoint=self.url, model=self.model_name):
            return self._builder.encode_shm(prepared, self._pool)

    def _request(
        self,
        rid: str,
        inputs: list[Any],
        outputs: list[Any] | None,
        sequence_id: SequenceId,
        start: bool,
        end: bool,
        version: str,
    ) -> dict[str, Any]:
        """Keyword arguments of one streamed request (``async_stream_infer`` / ``stream_infer``)."""
        return {
            "model_name": self.model_name,
            "inputs": inputs,
            "outputs": outputs,
            "model_version": version,
            "request_id": rid,
            "sequence_id": sequence_id,
            "sequence_start": start,
            "sequence_end": end,
        }

    # ------------------------------------------------------------------ receiving
    def _on_result(self, result: Any) -> None:
        """Settle the request a successful response answers."""
        received = time.perf_counter()
        response = result.get_response()
        entry = self._pending.pop(response.id, None)
        if entry is None:  # expired or failed already
            return
        try:
            if entry.slot is None and entry.real_batch is None:
                outputs = inband_outputs(result, response, self._names)
            else:
                outputs = decode_outputs(
                    result, self._names, self._out_specs, entry, self._fixed_batch, self._builder
                )
        except Exception as exc:  # pragma: no cover - a malformed response
            self._finish(entry, None, InferenceFailed(f"cannot decode the response from {self.url}: {exc}"))
            return
        latency = received - entry.sent_at
        self._latency.add(latency)
        res = Result(
            outputs=outputs,
            timings=Timings(latency_s=latency, sent_at=entry.sent_at),
            request_id=entry.request_id,
            sequence_id=entry.sequence_id,
            model_version=response.model_version,
        )
        self._finish(entry, res, None)

    def _on_error(self, error: Any) -> None:
        """An error from the stream: the stream broke, or one request failed."""
        if is_stream_failure(error):
            self._break(error)
            return
        # A per-request error response: Triton quotes the id in most messages; otherwise the
        # stream answers in order, so it belongs to the oldest request still pending.
        rid = request_id_of(error)
        entry = self._pending.pop(rid, None) if rid is not None else None
        if entry is None:
            try:
                rid = next(iter(list(self._pending)))
            except StopIteration:
                logger.warning("error response with no request pending: %s", error)
                return
            entry = self._pending.pop(rid, None)
            if entry is None:
                return
        self._finish(entry, None, translate(error, endpoint=self.url, model=self.model_name))

    def _break(self, error: BaseException) -> None:
        """The stream is gone: remember why and fail every pending request with ConnectionFailed."""
        broken = translate(error, endpoint=self.url, model=self.model_name)
        if not isinstance(broken, ConnectionFailed):
            broken = ConnectionFailed(
                f"the stream to {self.url} (model '{self.model_name}') failed: {broken}"
            )
        if self._broken is None:
            self._broken = broken
        self._fail_all(broken)

    def _finish(self, entry: _Pending, result: Result | None, error: BaseException | None) -> None:
        """Release the entry's slot and window place, settle its future, run the callbacks."""
        if entry.slot is not None and self._pool is not None:
            self._pool.release(entry.slot)
        self._window.release()
        try:
            if error is None:
                entry.future.set_result(result)
            else:
                entry.future.set_exception(error)
        except _SETTLED:  # the caller cancelled the future; the request still ran
            pass
        for callback in (self.options.callback, entry.callback):
            if callback is not None:
                try:
                    callback(result, error)
                except Exception:
                    logger.exception("a client callback raised; the stream goes on")
        self._settled(entry)

    def _expired(self, entry: _Pending) -> InferenceTimeout:
        return InferenceTimeout(
            f"request {entry.request_id!r} to {self.url} (model '{self.model_name}') "
            "got no response within its timeout"
        )

    def _fail_all(self, error: ClientError) -> None:
        for rid in list(self._pending):
            entry = self._pending.pop(rid, None)
            if entry is not None:
                self._finish(entry, None, type(error)(str(error)))
        self._wake_waiters()

    def _closed_error(self) -> ClientClosedError:
        return ClientClosedError(f"the client for '{self.model_name}' at {self.url} was closed")

    def _settled(self, entry: _Pending) -> None:
        """Called after each entry is finished (subclasses wake a draining close())."""

    def _wake_waiters(self) -> None:
        """Called when every pending request has failed at once."""

    # ------------------------------------------------------------------ warm-up
    def _warm_up_inputs(self, n: int, inputs: InputsLike | None) -> InputsLike:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        example = warm_up_inputs(self.signature) if inputs is None else inputs
        self._latency.reset()
        return example

    @staticmethod
    def _warm_up_sequence_id() -> int:
        return random.getrandbits(62) | (1 << 62)

    def _warm_up_stats(self, reset_latency: bool) -> LatencyStats:
        stats = self._latency.stats()
        if reset_latency:
            self._latency.reset()
        return stats

    def _describe(self) -> str:
        state = "closed" if self._closed else "broken" if self._broken else "open"
        return f"{type(self).__name__}({self.url!r}, {self.model_name!r}, {state}, in_flight={len(self._pending)})"

    def __repr__(self) -> str:
        return self._describe()


class SequenceCore:
    """The bookkeeping of one stateful sequence, shared by the sync and the asyncio sequence.

    Args:
        client: the client the sequence was opened on (it counts the sequence live).
        sequence_id: the correlation id.
        model_version: the wire version every request of the sequence asks for.
    """

    def __init__(self, client: ClientCore, sequence_id: SequenceId, model_version: str) -> None:
        self.client = client
        self.sequence_id = sequence_id
        self.model_version = model_version
        self.sent = 0
        self._started = False
        self._ended = False
        self._released = False

    @property
    def ended(self) -> bool:
        """Whether END was sent."""
        return self._ended

    def _check_sendable(self) -> None:
        if self._ended:
            raise SequenceError(f"sequence {self.sequence_id!r} already ended; no request may follow END")
        if self._released:
            raise SequenceError(f"sequence {self.sequence_id!r} was closed without END")

    def _next(self, end: bool) -> tuple[SequenceId, bool, bool, str]:
        """``(sequence id, start, end, version)`` of the next request."""
        return self.sequence_id, not self._started, end, self.model_version

    def _sent_one(self, end: bool) -> None:
        self._started = True
        self.sent += 1
        if end:
            self._ended = True
            self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self.client._release_sequence(self.sequence_id)

    def _close(self) -> None:
        if self._started and not self._ended and not self._released:
            logger.warning(
                "sequence %r closed without END; the server keeps its state until it idles out",
                self.sequence_id,
            )
        self._release()

    def _abandon_request(self) -> AbandonRequest | None:
        """The END request that frees an abandoned sequence's slot on the server, or None.

        A sequence left after it started but before END still holds a slot of every stateful
        member on the server until ``max_sequence_idle_microseconds`` passes; a new sequence
        queued behind it would wait that long without an error. Ending it with zeros (the
        warm-up inputs) frees the slot at once. Returns ``(inputs, id, start, end, version,
        request id)`` and marks the sequence ended, or None when nothing was started.
        """
        if not self._unfinished or self._ended:
            return None
        self._ended = True
        try:
            inputs: InputsLike = warm_up_inputs(self.client.signature)
        except InputValidationError as exc:
            logger.warning(
                "sequence %r was abandoned without END and cannot be ended for it (%s); the server "
                "keeps its slot until the sequence idles out",
                self.sequence_id,
                exc,
            )
            return None
        logger.warning(
            "sequence %r was abandoned without END; sending END with zero inputs to free its slot",
            self.sequence_id,
        )
        sid, _, _, version = self._next(True)
        return inputs, sid, False, True, version, f"end-of-abandoned-sequence-{self.sequence_id}"

    def _abandon_failed(self, exc: BaseException) -> None:
        logger.warning(
            "could not send END for abandoned sequence %r (%s); the server keeps its slot until the "
            "sequence idles out",
            self.sequence_id,
            exc,
        )

    def _left_without_end(self, send: str) -> SequenceError:
        return SequenceError(
            f"sequence {self.sequence_id!r} left its block without END; send the last update with {send}"
        )

    @property
    def _unfinished(self) -> bool:
        return self._started and not self._ended

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.sequence_id!r}, sent={self.sent}, ended={self._ended})"
