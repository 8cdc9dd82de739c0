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
Everything but the threads lives in :class:`~hermes.aeriel.client._core.ClientCore`, shared
with the asyncio client.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from contextlib import nullcontext
from typing import Any

import grpc
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from hermes.aeriel._errors import translate, translated
from hermes.aeriel._lifecycle import Closeable, Deadline
from hermes.aeriel.client._core import ClientCore, SequenceCore, _Pending
from hermes.aeriel.client._discovery import discover
from hermes.aeriel.client._options import SequenceId
from hermes.aeriel.client._requests import InputsLike
from hermes.aeriel.client._result import Callback, LatencyStats, Result
from hermes.aeriel.control.client import ControlClient, channel_args
from hermes.aeriel.exceptions import InferenceTimeout

__all__ = ["InferenceClient", "Sequence"]

logger = logging.getLogger("hermes.aeriel.client")


_SEQUENCE_KEYWORDS = frozenset({"sequence_id", "sequence_start", "sequence_end"})


def _predecessor_infer_error(kwargs: dict[str, Any]) -> TypeError:
    """The error for ``infer(**kwargs)`` with keywords infer does not take."""
    names = sorted(kwargs)
    if _SEQUENCE_KEYWORDS & set(kwargs):
        return TypeError(
            f"infer() got {names}: the predecessor's infer(x, sequence_id=..., sequence_start=..., "
            "sequence_end=...) is now `with client.sequence(sequence_id) as seq: seq.send(x, end=last)` "
            "(START goes with the first send; each send returns a future)"
        )
    return TypeError(
        f"infer() got unexpected keyword argument(s) {names}; it takes request_id, callback, timeout_s"
    )


class _Window:
    """The in-flight window: ``size`` tokens in a C-implemented :class:`queue.SimpleQueue`.

    A request takes a token before it is sent and gives it back exactly once when it is
    settled. ``threading.Semaphore`` would run a Python ``Condition`` on both sides of every
    request; taking and returning a token here are single C calls that block without the GIL.
    """

    __slots__ = ("_get", "release")

    def __init__(self, size: int) -> None:
        tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(size):
            tokens.put(None)
        self._get = tokens.get
        self.release = functools.partial(tokens.put_nowait, None)

    def acquire(self, timeout: float) -> bool:
        """Take a token, waiting up to ``timeout`` seconds (<= 0: only if one is free now)."""
        try:
            self._get(timeout=min(max(timeout, 0.0), threading.TIMEOUT_MAX))
        except queue.Empty:
            return False
        return True


class InferenceClient(ClientCore, Closeable):
    """A streaming gRPC client for one model on a Triton server.

    Opening the client connects, reads the model's signature (for ensembles also the
    streaming groups and the sequence capacity), registers nothing yet and starts one gRPC
    stream. Every request returns a :class:`concurrent.futures.Future` resolving to a
    :class:`Result`. It is a :class:`~hermes.aeriel.client.StreamingClient`, like the
    many-server :class:`~hermes.aeriel.routing.RoutingClient`.

    Args:
        url: gRPC endpoint, ``"host:port"``.
        model_name: the model (or ensemble) to call.
        model_version: -1 for the server's latest, or a version number; change it later
            through the :attr:`model_version` property (new requests and sequences only).
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
        ValueError: a setting out of range (names it).
        ConnectionFailed: the server cannot be reached (names the endpoint).
        InferenceFailed: the model is not ready there.
    """

    def _start(self) -> None:
        """Connect, read the signature, start the stream and the watchdog (closes all on failure)."""
        url, model_name = self.url, self.model_name
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._window = _Window(self.max_in_flight)  # released exactly once per request
        self._watchdog: threading.Thread | None = None
        self._grpc = grpcclient.InferenceServerClient(
            url, channel_args=channel_args(url)
        )  # no proxy to loopback
        try:
            self._use(discover(self._grpc, url, model_name, self.model_version, self.connect_timeout_s))
            if self.shared_memory is not None:
                self._pool = self._make_pool(lambda: nullcontext(self._grpc))
            with translated(endpoint=url, model=model_name):
                self._grpc.start_stream(callback=self._on_response)
            self._watchdog = threading.Thread(target=self._watch, name=f"hermes-client-watchdog-{model_name}")
            self._watchdog.daemon = True
            self._watchdog.start()
        except BaseException:
            self._shutdown()
            raise
        logger.debug("client for %s at %s open (%d inputs)", model_name, url, len(self.signature.inputs))

    # ------------------------------------------------------------------ sending
    def infer(
        self,
        inputs: InputsLike,
        *,
        request_id: Any = None,
        callback: Callback | None = None,
        timeout_s: float | None = None,
        **predecessor: Any,
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
            TypeError: the predecessor's ``sequence_id=``/``sequence_start=``/``sequence_end=``
                (the message shows :meth:`sequence`), or another unknown keyword.
        """
        if predecessor:
            raise _predecessor_infer_error(predecessor)
        self._check_open()
        self._check_stateless()
        return self._submit(inputs, 0, False, False, self.model_version, request_id, callback, timeout_s)

    def sequence(self, sequence_id: SequenceId, *, model_version: int | str | None = None) -> Sequence:
        """Start a stateful sequence; see :class:`Sequence`.

        Args:
            sequence_id: a positive int or a non-empty string, unique among live sequences.
            model_version: pin the sequence to a version (default: the client's current
                :attr:`model_version`).

        Raises:
            SequenceError: the id is invalid or already live, the model is not stateful, or
                :attr:`max_sequences` sequences are live already (the message says how to
                raise the limit).
        """
        with self._lock:
            sequence_id, version = self._open_sequence(sequence_id, model_version)
        return Sequence(self, sequence_id, version)

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
        prepared, timeout = self._prepare(inputs, timeout_s)
        if not self._window.acquire(timeout):
            raise self._window_full(timeout)
        registered: _Pending | None = None
        slot = None
        try:
            with self._lock:
                self._check_open()
                if self._pool is None:
                    infer_inputs, outputs = self._builder.encode(prepared), None
                else:
                    infer_inputs, outputs, slot = self._encode(prepared)
                entry = self._entry(Future(), timeout, request_id, sequence_id, prepared, callback)
                if slot is not None:
                    entry.attach(slot, prepared)
                if timeout < self._timeout_s:  # the watchdog may sleep past a shorter deadline
                    self._wake.notify()
                self._pending[entry.rid] = registered = entry
                try:
                    self._grpc.async_stream_infer(
                        self._model,
                        infer_inputs,
                        model_version=version,
                        outputs=outputs,
                        request_id=entry.rid,
                        sequence_id=sequence_id,
                        sequence_start=start,
                        sequence_end=end,
                    )
                except (InferenceServerException, grpc.RpcError) as exc:  # the boundary, inlined (hot path)
                    raise translate(exc, endpoint=self.url, model=self.model_name) from exc
        except BaseException:
            # Undo only what nobody else has finished: a stream failure may have failed the entry.
            if registered is None or self._pending.pop(registered.rid, None) is not None:
                if slot is not None and self._pool is not None:
                    self._pool.release(slot)
                self._window.release()
            raise
        if self._broken is not None:  # the stream died while we were sending
            self._fail_all(self._broken)
        future: Future[Result] = registered.future
        return future

    # ------------------------------------------------------------------ receiving
    def _on_response(self, result: Any, error: Any) -> None:
        # tritonclient calls this as callback(result=..., error=...) on its stream thread.
        if error is not None:
            self._on_error(error)
        else:
            self._on_result(result)

    def _settled(self, entry: _Pending) -> None:
        if self._closing and not self._pending:
            with self._wake:
                self._wake.notify_all()

    def _wake_waiters(self) -> None:
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
                            self._finish(entry, None, self._expired(entry))
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
        example = self._warm_up_inputs(n, inputs)
        futures: list[Future[Result]] = []
        if self.signature.stateful:
            with self.sequence(self._warm_up_sequence_id()) as seq:
                for i in range(n):
                    futures.append(seq.send(example, end=i == n - 1))
        else:
            for _ in range(n):
                futures.append(self.infer(example))
        for future in futures:
            future.result(timeout=self.timeout_s + 1.0)
        return self._warm_up_stats(reset_latency)

    def server_stats(self) -> dict[str, float]:
        """Triton's cumulative statistics for the model: request count and mean queue/compute seconds."""
        control = ControlClient(self.url, timeout_s=self.timeout_s, grpc_client=self._grpc)
        return control.mean_statistics(self.model_name, self.model_version)

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
        deadline = Deadline(self.timeout_s if timeout_s is None else timeout_s)
        with self._wake:
            while self._pending and self._broken is None and not deadline.expired:
                self._wake.wait(deadline.remaining_s)
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
            self._fail_all(self._closed_error())
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


class Sequence(SequenceCore):
    """One stateful sequence on a client's stream; made by :meth:`InferenceClient.sequence`.

    The first :meth:`send` carries START; ``send(..., end=True)`` carries END and ends the
    sequence (its id can then be used again). Requests of a sequence reach the server in the
    order they were sent, all to the version the sequence started with.

    Leaving the ``with`` block normally without having sent ``end=True`` raises
    :class:`~hermes.aeriel.SequenceError`. Leaving it on an exception (or calling
    :meth:`close` early) abandons the sequence: Triton only ends a sequence on a request, so
    the client then sends one END request with zero inputs (request id
    ``end-of-abandoned-sequence-<id>``; its result goes to the client's callback like any
    other) and the server frees the sequence's slot at once instead of holding it until the
    idle timeout, when a new sequence would wait for it silently.
    """

    client: InferenceClient

    def __init__(self, client: InferenceClient, sequence_id: SequenceId, model_version: str) -> None:
        super().__init__(client, sequence_id, model_version)
        self._lock = threading.Lock()

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
            request_id: as for :meth:`InferenceClient.infer`.
            callback: as for :meth:`InferenceClient.infer`.
            timeout_s: as for :meth:`InferenceClient.infer`.

        Raises:
            SequenceError: the sequence already ended (or was abandoned).
            InputValidationError: wrong inputs or a missing state part, before sending.
        """
        with self._lock:
            self._check_sendable()
            future = self.client._submit(inputs, *self._next(end), request_id, callback, timeout_s)
            self._sent_one(end)
            return future

    def close(self, *, send_end: bool = True) -> None:
        """End the sequence (idempotent): a started sequence without END gets an END of zeros.

        Args:
            send_end: False only forgets the sequence here (its server keeps the slot until
                the idle timeout): for a server that is gone.
        """
        with self._lock:
            if send_end:
                self._end_abandoned()
            self._close()

    def _end_abandoned(self) -> None:
        request = self._abandon_request()
        if request is None:
            return
        try:
            self.client._submit(*request, None, None)
        except Exception as exc:  # the original error matters more; the slot idles out
            self._abandon_failed(exc)

    def __enter__(self) -> Sequence:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        unfinished = self._unfinished
        with self._lock:
            if exc_type is not None:
                self._end_abandoned()
            self._release()
        if unfinished and exc_type is None:
            raise self._left_without_end("seq.send(x, end=True)")
