"""The synchronous streaming client: futures, sequences, backpressure, shared memory.

```
 caller thread(s)                         tritonclient stream thread         watchdog thread
 ───────────────                          ──────────────────────────         ───────────────
 infer()/seq.send()                       _on_response(result, error)         sleeps until the
   validate (no lock)                       pop pending[request id]           oldest deadline
   window.acquire()  ◀── blocks when full   decode outputs (shm: copy out)    (Condition.wait;
   with lock: encode, pending[id] = entry    future.set_result / callback      no polling), then
              async_stream_infer ──gRPC──▶  slot → pool, window.release()     fails expired
   return Future                           stream broken → fail every entry   entries
```

One gRPC bidirectional stream carries every request, so a sequence's requests reach the
server in the order they were sent. Requests are matched to responses by the request id the
client puts on each request; an entry is removed from ``pending`` exactly once (by the
response, the watchdog or a stream failure), which is what releases its window slot.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import wait as wait_futures
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from hermes.aeriel.client._errors import is_stream_failure, request_id_of, translate, translated
from hermes.aeriel.client._requests import InputsLike, RequestBuilder
from hermes.aeriel.client._result import Callback, LatencyStats, LatencyTracker, Result, Timings
from hermes.aeriel.client._shared_memory import ShmPool, Slot
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
    InputValidationError,
    SequenceError,
)

__all__ = ["InferenceClient", "Sequence"]

logger = logging.getLogger("hermes.aeriel.client")

SequenceId = int | str


def check_sequence_id(sequence_id: Any) -> SequenceId:
    """Validate a sequence id: a positive int (< 2**64) or a non-empty string."""
    if isinstance(sequence_id, bool) or not isinstance(sequence_id, int | str):
        raise SequenceError(f"sequence_id must be a positive int or a non-empty str, got {sequence_id!r}")
    if isinstance(sequence_id, int) and not 0 < sequence_id < 2**64:
        raise SequenceError(f"sequence_id must be in 1..2**64-1, got {sequence_id}")
    if isinstance(sequence_id, str) and not sequence_id:
        raise SequenceError("sequence_id must not be an empty string")
    return sequence_id


def version_string(model_version: int | str | None) -> str:
    """Triton's wire form of a version: "" for the server's choice (-1/None)."""
    if model_version is None:
        return ""
    if isinstance(model_version, int):
        if model_version < -1 or model_version == 0:
            raise ValueError(f"model_version must be -1 (latest) or >= 1, got {model_version}")
        return "" if model_version == -1 else str(model_version)
    return "" if model_version in ("", "-1") else str(model_version)


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
        arrays[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return arrays


class _Pending:
    __slots__ = (
        "callback",
        "deadline",
        "future",
        "real_batch",
        "request_id",
        "sent_at",
        "sequence_id",
        "shapes",
        "slot",
    )

    def __init__(
        self,
        future: Any,
        sent_at: float,
        deadline: float,
        request_id: Any,
        sequence_id: SequenceId | None,
        slot: Slot | None,
        real_batch: int | None,
        callback: Callback | None,
    ) -> None:
        self.future = future
        self.sent_at = sent_at
        self.deadline = deadline
        self.request_id = request_id
        self.sequence_id = sequence_id
        self.slot = slot
        self.real_batch = real_batch
        self.callback = callback
        self.shapes: tuple[tuple[int, ...], ...] | None = None


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
                outputs[name] = slot.read(name, specs[name].dtype, list(out.shape))
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


class InferenceClient:
    """A streaming gRPC client for one model on a Triton server.

    Opening the client connects, reads the model's signature (for ensembles also the
    streaming groups), registers nothing yet and starts one gRPC stream. Every request
    returns a :class:`concurrent.futures.Future` resolving to a :class:`Result`.

    Args:
        url: gRPC endpoint, ``"host:port"``.
        model_name: the model (or ensemble) to call.
        model_version: -1 for the server's latest, or a version number.
        max_in_flight: the window: at most this many requests are unanswered; the caller
            blocks (no CPU) when it is full.
        timeout_s: seconds a request may take from send to response, and the longest a
            caller waits for room in the window; expired futures fail with
            :class:`~hermes.aeriel.InferenceTimeout`.
        shared_memory: None/False (in-band), ``"system"`` (POSIX shared memory) or ``"cuda"``.
        cuda_device: the device for CUDA shared memory.
        pad_batch: pad partial batches for a model with a fixed batch; padding is stripped
            from the outputs.
        callback: called as ``callback(result, error)`` for every request, on the stream
            thread (keep it short).
        latency_window: how many recent latencies ``latency`` summarises.
        connect_timeout_s: seconds to wait for the server and the model metadata.

    Raises:
        ConnectionFailed: the server cannot be reached (names the endpoint).
        InferenceFailed: the model is not ready there.
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
        self.pad_batch = pad_batch
        self.callback = callback
        self._latency = LatencyTracker(latency_window)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._window = threading.Semaphore(max_in_flight)  # released exactly once per request
        self._pending: dict[str, _Pending] = {}
        self._counter = itertools.count(1)
        self._live: set[SequenceId] = set()
        self._broken: ClientError | None = None
        self._closing = False
        self._closed = False
        self._pool: ShmPool | None = None
        self._watchdog: threading.Thread | None = None
        self._grpc = grpcclient.InferenceServerClient(url)
        try:
            self.signature = self._discover(connect_timeout_s)
            self._builder = RequestBuilder(self.signature, pad_batch=pad_batch)
            self._names = self.signature.output_names
            self._out_specs = {t.name: t for t in self.signature.outputs}
            self._fixed_batch = self.signature.fixed_batch
            if self.shared_memory is not None:
                self._pool = self._make_pool(self.shared_memory, cuda_device)
            with translated(endpoint=url, model=model_name):
                self._grpc.start_stream(callback=self._on_response)
            self._watchdog = threading.Thread(target=self._watch, name=f"hermes-client-watchdog-{model_name}")
            self._watchdog.daemon = True
            self._watchdog.start()
        except BaseException:
            self._shutdown()
            raise
        logger.debug("client for %s at %s open (%d inputs)", model_name, url, len(self.signature.inputs))

    # ------------------------------------------------------------------ discovery
    def _discover(self, timeout_s: float) -> ModelSignature:
        endpoint, name = self.url, self.model_name
        with translated(endpoint=endpoint, model=name):
            try:
                live = self._grpc.is_server_live(client_timeout=timeout_s)
            except Exception as exc:
                raise ConnectionFailed(f"cannot reach the inference server at {endpoint}: {exc}") from exc
            if not live:
                raise ConnectionFailed(f"the inference server at {endpoint} is not live")
            if not self._grpc.is_model_ready(name, self.model_version, client_timeout=timeout_s):
                raise InferenceFailed(
                    f"model '{name}' (version {self.model_version or 'latest'}) is not ready at {endpoint}; load it first"
                )
            config = self._grpc.get_model_config(name, self.model_version, client_timeout=timeout_s).config
            steps = {
                step: self._grpc.get_model_config(step, version, client_timeout=timeout_s).config
                for step, version in ensemble_steps(config)
            }
        return read_signature(name, self.model_version, config, steps)

    def _make_pool(self, kind: str, device: int) -> ShmPool:
        endpoint, name = self.url, self.model_name

        def register(*args: Any) -> None:
            with translated(endpoint=endpoint, model=name):
                if kind == "system":
                    self._grpc.register_system_shared_memory(*args, client_timeout=self.timeout_s)
                else:
                    self._grpc.register_cuda_shared_memory(*args, client_timeout=self.timeout_s)

        def unregister(region: str) -> None:
            with translated(endpoint=endpoint, model=name):
                if kind == "system":
                    self._grpc.unregister_system_shared_memory(region, client_timeout=5.0)
                else:
                    self._grpc.unregister_cuda_shared_memory(region, client_timeout=5.0)

        return ShmPool(kind, register=register, unregister=unregister, device_id=device)

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
        """Whether requests must be sent through :meth:`sequence`."""
        return self.signature.stateful

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

    # ------------------------------------------------------------------ sending
    def infer(
        self,
        inputs: InputsLike,
        *,
        request_id: Any = None,
        callback: Callback | None = None,
        timeout_s: float | None = None,
    ) -> Future[Result]:
        """Send one request to a stateless model.

        Args:
            inputs: an array (single-input model) or ``{input name: array}``.
            request_id: any value, returned as ``Result.request_id`` (default: a counter).
            callback: ``callback(result, error)`` for this request (after the client's).
            timeout_s: overrides the client's timeout for this request.

        Returns:
            A future resolving to a :class:`Result`.

        Raises:
            InputValidationError: before sending, naming the expected signature.
            SequenceError: the model is stateful (use :meth:`sequence`).
            InferenceTimeout: the window stayed full for ``timeout_s``.
        """
        self._check_open()
        if self.signature.stateful:
            raise SequenceError(
                f"model '{self.model_name}' is stateful; send its requests through client.sequence(sequence_id)"
            )
        return self._submit(inputs, 0, False, False, self.model_version, request_id, callback, timeout_s)

    def sequence(self, sequence_id: SequenceId, *, model_version: int | str | None = None) -> Sequence:
        """Start a stateful sequence; see :class:`Sequence`.

        Args:
            sequence_id: a positive int or a non-empty string, unique among live sequences.
            model_version: pin the sequence to a version (default: the client's).

        Raises:
            SequenceError: the id is invalid or already live, or the model is not stateful.
        """
        sequence_id = check_sequence_id(sequence_id)
        if not self.signature.stateful:
            raise SequenceError(f"model '{self.model_name}' is not stateful; use client.infer()")
        version = self.model_version if model_version is None else version_string(model_version)
        with self._lock:
            self._check_open()
            if sequence_id in self._live:
                raise SequenceError(f"sequence {sequence_id!r} is already live on this client")
            self._live.add(sequence_id)
        return Sequence(self, sequence_id, version)

    def _release_sequence(self, sequence_id: SequenceId) -> None:
        self._live.discard(sequence_id)

    def _check_open(self) -> None:
        if self._closed or self._closing:
            raise ClientClosedError(f"the client for '{self.model_name}' at {self.url} is closed")
        if self._broken is not None:
            raise type(self._broken)(str(self._broken))

    def _submit(
        self,
        inputs: InputsLike,
        sequence_id: SequenceId,
        start: bool,
        end: bool,
        version: str,
        request_id: Any,
        callback: Callback | None,
        timeout_s: float | None,
    ) -> Future[Result]:
        self._check_open()
        prepared = self._builder.prepare(inputs)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        if not self._window.acquire(timeout=timeout):
            raise InferenceTimeout(
                f"no room in the window of {self.max_in_flight} requests to {self.url} "
                f"(model '{self.model_name}') within {timeout} s"
            )
        rid = None
        slot = None
        try:
            with self._lock:
                self._check_open()
                if self._pool is not None:
                    with translated(endpoint=self.url, model=self.model_name):
                        infer_inputs, outputs, slot = self._builder.encode_shm(prepared, self._pool)
                else:
                    infer_inputs, outputs = self._builder.encode(prepared), None
                rid = str(next(self._counter))
                future: Future[Result] = Future()
                now = time.perf_counter()
                if timeout < self.timeout_s:  # the watchdog may sleep past a shorter deadline
                    self._wake.notify()
                self._pending[rid] = _Pending(
                    future,
                    now,
                    now + timeout,
                    rid if request_id is None else request_id,
                    sequence_id or None,
                    slot,
                    prepared.real_batch,
                    callback,
                )
                if slot is not None:
                    self._pending[rid].shapes = tuple(a.shape for a in prepared.arrays)
                try:
                    self._grpc.async_stream_infer(
                        self.model_name,
                        infer_inputs,
                        model_version=version,
                        outputs=outputs,
                        request_id=rid,
                        sequence_id=sequence_id,
                        sequence_start=start,
                        sequence_end=end,
                    )
                except (InferenceServerException, grpc.RpcError) as exc:  # the boundary, inlined (hot path)
                    raise translate(exc, endpoint=self.url, model=self.model_name) from exc
        except BaseException:
            entry = self._pending.pop(rid, None) if rid is not None else None
            if entry is not None or rid is None:
                if slot is not None and self._pool is not None:
                    self._pool.release(slot)
                self._window.release()
            raise
        if self._broken is not None:  # the stream died while we were sending
            self._fail_all(self._broken)
        return future

    # ------------------------------------------------------------------ receiving
    def _on_response(self, result: Any, error: Any) -> None:
        # tritonclient calls this as callback(result=..., error=...) on its stream thread.
        if error is not None:
            self._on_error(error)
            return
        received = time.perf_counter()
        response = result.get_response()
        entry = self._pending.pop(response.id, None)
        if entry is None:  # expired or failed already
            return
        try:
            if entry.slot is None and entry.real_batch is None:
                outputs = {name: result.as_numpy(name) for name in self._names}
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

    def _finish(self, entry: _Pending, result: Result | None, error: BaseException | None) -> None:
        if entry.slot is not None and self._pool is not None:
            self._pool.release(entry.slot)
        self._window.release()
        try:
            if error is None:
                entry.future.set_result(result)
            else:
                entry.future.set_exception(error)
        except InvalidStateError:  # the caller cancelled the future; the request still ran
            pass
        if self.callback is not None or entry.callback is not None:
            for callback in (self.callback, entry.callback):
                if callback is not None:
                    try:
                        callback(result, error)
                    except Exception:
                        logger.exception("a client callback raised; the stream goes on")
        if self._closing and not self._pending:
            with self._wake:
                self._wake.notify_all()

    def _on_error(self, error: Any) -> None:
        if is_stream_failure(error):
            broken = translate(error, endpoint=self.url, model=self.model_name)
            if not isinstance(broken, ConnectionFailed):
                broken = ConnectionFailed(
                    f"the stream to {self.url} (model '{self.model_name}') failed: {broken}"
                )
            if self._broken is None:
                self._broken = broken
            self._fail_all(broken)
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

    def _fail_all(self, error: ClientError) -> None:
        for rid in list(self._pending):
            entry = self._pending.pop(rid, None)
            if entry is not None:
                self._finish(entry, None, type(error)(str(error)))
        with self._wake:
            self._wake.notify_all()

    def _watch(self) -> None:
        with self._wake:
            while not self._closed:
                entries = list(self._pending.values())
                if not entries:
                    # Idle: a request sent from now on has a deadline at least timeout_s away,
                    # so waking after timeout_s is never late (shorter per-call timeouts notify).
                    self._wake.wait(self.timeout_s)
                    continue
                deadline = min(e.deadline for e in entries)
                delay = deadline - time.perf_counter()
                if delay > 0:
                    self._wake.wait(delay)
                    continue
                now = time.perf_counter()
                expired = [rid for rid, e in list(self._pending.items()) if e.deadline <= now]
                self._wake.release()
                try:
                    for rid in expired:
                        entry = self._pending.pop(rid, None)
                        if entry is not None:
                            self._finish(
                                entry,
                                None,
                                InferenceTimeout(
                                    f"request {entry.request_id!r} to {self.url} (model '{self.model_name}') "
                                    f"got no response within its timeout"
                                ),
                            )
                finally:
                    self._wake.acquire()

    # ------------------------------------------------------------------ utilities
    def warm_up(
        self, n: int = 8, inputs: InputsLike | None = None, *, reset_latency: bool = True
    ) -> LatencyStats:
        """Send ``n`` representative requests and wait for them, before real data flows.

        A stateful model gets them as one throwaway sequence (started and ended), so no
        state is left behind. Args ``inputs`` default to zeros of the model's input shapes.

        Returns:
            The latency statistics of the warm-up requests. With ``reset_latency`` (default)
            they are then forgotten, so ``latency`` describes real traffic only.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        example = warm_up_inputs(self.signature) if inputs is None else inputs
        self._latency.reset()
        futures: list[Future[Result]] = []
        if self.signature.stateful:
            with self.sequence(random.getrandbits(62) | (1 << 62)) as seq:
                for i in range(n):
                    futures.append(seq.send(example, end=i == n - 1))
        else:
            for _ in range(n):
                futures.append(self.infer(example))
        for future in futures:
            future.result(timeout=self.timeout_s + 1.0)
        stats = self._latency.stats()
        if reset_latency:
            self._latency.reset()
        return stats

    def server_stats(self) -> dict[str, float]:
        """Triton's cumulative statistics for the model: request count and mean queue/compute seconds."""
        with translated(endpoint=self.url, model=self.model_name):
            stats = self._grpc.get_inference_statistics(self.model_name, self.model_version, as_json=True)
        model_stats = stats.get("model_stats", [])
        if not model_stats:
            return {"count": 0.0}
        infer = model_stats[0].get("inference_stats", {})
        count = float(infer.get("success", {}).get("count", 0))

        def mean(key: str) -> float:
            return float(infer.get(key, {}).get("ns", 0)) / 1e9 / count if count else 0.0

        return {
            "count": count,
            "queue_s": mean("queue"),
            "compute_input_s": mean("compute_input"),
            "compute_infer_s": mean("compute_infer"),
            "compute_output_s": mean("compute_output"),
        }

    def wait_all(self, timeout_s: float | None = None) -> None:
        """Block until every request sent so far is answered (or failed)."""
        futures = [e.future for e in list(self._pending.values())]
        _done, not_done = wait_futures(futures, timeout=self.timeout_s if timeout_s is None else timeout_s)
        if not_done:
            raise InferenceTimeout(f"{len(not_done)} request(s) to {self.url} still pending")

    # ------------------------------------------------------------------ lifecycle
    def close(self, timeout_s: float | None = None) -> None:
        """Wait for pending requests (up to ``timeout_s``), then stop the stream, the watchdog and
        release shared memory. Requests still pending fail with ClientClosedError. Idempotent."""
        if self._closed:
            return
        self._closing = True
        deadline = time.perf_counter() + (self.timeout_s if timeout_s is None else timeout_s)
        with self._wake:
            while self._pending and self._broken is None:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._wake.wait(remaining)
        self._shutdown()

    def _shutdown(self) -> None:
        self._closing = True
        # Cancel only a healthy stream that still has requests out (close() timed out): tritonclient
        # then never ends its request-iterator thread, which stays blocked until exit (daemon).
        # A broken stream's response thread has already ended, so stopping it without cancelling
        # lets tritonclient end the request-iterator thread too.
        cancel = bool(self._pending) and self._broken is None
        try:
            self._grpc.stop_stream(cancel_requests=cancel)
        except Exception as exc:  # the stream may already be gone
            logger.debug("stopping the stream failed: %s", exc)
        if self._pending:
            self._fail_all(ClientClosedError(f"the client for '{self.model_name}' at {self.url} was closed"))
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join()
        self._live.clear()
        try:
            if self._pool is not None:
                self._pool.close()
        finally:
            try:
                self._grpc.close()
            except Exception as exc:  # pragma: no cover
                logger.debug("closing the gRPC client failed: %s", exc)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "broken" if self._broken else "open"
        return f"InferenceClient({self.url!r}, {self.model_name!r}, {state}, in_flight={len(self._pending)})"


class Sequence:
    """One stateful sequence on a client's stream; made by :meth:`InferenceClient.sequence`.

    The first :meth:`send` carries START; ``send(..., end=True)`` carries END and ends the
    sequence (its id can then be used again). Requests of a sequence reach the server in the
    order they were sent.

    Leaving the ``with`` block normally without having sent ``end=True`` raises
    :class:`~hermes.aeriel.SequenceError`: Triton only ends a sequence on a request, so the
    server would keep its state until the sequence idles out. Leaving on an exception does
    not add a second error; the sequence is abandoned (state expires on the server).
    """

    def __init__(self, client: InferenceClient, sequence_id: SequenceId, model_version: str) -> None:
        self.client = client
        self.sequence_id = sequence_id
        self.model_version = model_version
        self.sent = 0
        self._started = False
        self._ended = False
        self._released = False
        self._lock = threading.Lock()

    @property
    def ended(self) -> bool:
        return self._ended

    def send(
        self,
        inputs: InputsLike,
        *,
        end: bool = False,
        request_id: Any = None,
        callback: Callback | None = None,
        timeout_s: float | None = None,
    ) -> Future[Result]:
        """Send the next request of the sequence.

        Args:
            inputs: an array, ``{input: array}``, or the parts of a streaming update
                (``{"model/input": part, ...}``; every part of a group is required).
            end: this is the last request (carries END).
            request_id, callback, timeout_s: as for :meth:`InferenceClient.infer`.

        Raises:
            SequenceError: the sequence already ended (or was abandoned).
            InputValidationError: wrong inputs or a missing state part, before sending.
        """
        with self._lock:
            if self._ended:
                raise SequenceError(f"sequence {self.sequence_id!r} already ended; no request may follow END")
            if self._released:
                raise SequenceError(f"sequence {self.sequence_id!r} was closed without END")
            future = self.client._submit(
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
            self.client._release_sequence(self.sequence_id)

    def close(self) -> None:
        """Forget the sequence locally (idempotent). Without END its server state idles out."""
        with self._lock:
            if self._started and not self._ended:
                logger.warning(
                    "sequence %r closed without END; the server keeps its state until it idles out",
                    self.sequence_id,
                )
            self._release()

    def __enter__(self) -> Sequence:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        unfinished = self._started and not self._ended
        with self._lock:
            self._release()
        if unfinished and exc_type is None:
            raise SequenceError(
                f"sequence {self.sequence_id!r} left its block without END; "
                "send the last update with seq.send(x, end=True)"
            )

    def __repr__(self) -> str:
        return f"Sequence({self.sequence_id!r}, sent={self.sent}, ended={self._ended})"
