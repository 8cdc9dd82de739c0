"""One client over many Triton servers: sequences pinned by consistent hashing.

```
 caller threads                         one InferenceClient per server (hermes.aeriel.client)
 ──────────────                         ─────────────────────────────────────────────────────
 ClusterClient.sequence(id) ─HashRing─▶ owner.sequence(id, model_version=v)  (its one gRPC
   seq.infer(x) -> Future[Result]         stream keeps the sequence in order; window = backpressure)
 ClusterClient.submit(x) ─round robin─▶ next live server's infer(x)
                                         │ a stream that breaks fails its futures with
                                         ▼ ConnectionFailed (on the stream thread)
 relay (future done-callback): ConnectionFailed -> mark the server down: every sequence on
   it fails with ServerLost at once; stateless requests are resent to the next live server;
   new sequences hash to the next live server on the ring. probe() reconnects.
 swap(): ModelManager loads the new version beside the old, switches new sequences (and
   stateless requests) to it, waits (Condition) until the old version's sequences end,
   then retires the old version.
```
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
from collections.abc import Hashable, Mapping
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from hermes.aeriel.cluster.endpoints import Endpoint, load_endpoints
from hermes.aeriel.cluster.hash_ring import HashRing
from hermes.aeriel.cluster.model_manager import ModelManager, SwapReport
from hermes.aeriel.exceptions import (
    ClientClosedError,
    ConnectionFailed,
    SequenceError,
    ServerLost,
)

if TYPE_CHECKING:  # the single-server client (and grpc) load on first use, not on import
    from hermes.aeriel.client import InferenceClient, Result, Sequence

__all__ = ["ClusterClient", "ClusterSequence"]

logger = logging.getLogger("hermes.aeriel.cluster")


class ClusterSequence:
    """A stateful sequence pinned to one server and one model version.

    Made by :meth:`ClusterClient.sequence`; it wraps a
    :class:`~hermes.aeriel.client.Sequence` of the owning server's client. The first
    request carries START, ``infer(..., end=True)`` (or :meth:`end`) carries END.

    Attributes:
        sequence_id: the correlation id.
        endpoint: name of the server that holds the sequence's state.
        model_version: the version every request of the sequence goes to.
    """

    def __init__(self, cluster: ClusterClient, inner: Sequence, endpoint: str, model_version: int):
        self._cluster = cluster
        self._inner = inner
        self.sequence_id = inner.sequence_id
        self.endpoint = endpoint
        self.model_version = model_version
        self._lock = threading.RLock()  # _fail may run inside infer (a lost server)
        self._failure: Exception | None = None
        self._end_sent = False

    @property
    def live(self) -> bool:
        """Whether the sequence still holds state on its server (not ended, failed or closed)."""
        return not self._end_sent and self._failure is None

    def infer(
        self,
        inputs: Mapping[str, np.ndarray] | np.ndarray,
        *,
        end: bool = False,
        timeout_s: float | None = None,
    ) -> Future[Result]:
        """Send the next request of the sequence; the future gives a :class:`~hermes.aeriel.client.Result`.

        Raises:
            SequenceError: the sequence already ended, was closed, or its version was retired.
            ServerLost: its server went away; the sequence's state is gone.
            InputValidationError: the inputs do not match the model.
        """
        with self._lock:
            if self._failure is not None:
                raise self._failure
            try:
                inner = self._inner.send(inputs, end=end, timeout_s=timeout_s)
            except ConnectionFailed as exc:
                raise self._cluster._lose(self.endpoint, exc, self) from exc
            self._end_sent = self._end_sent or end
        outer: Future[Result] = Future()
        inner.add_done_callback(lambda done: self._cluster._relay_sequence(self, done, outer, end))
        return outer

    def end(
        self, inputs: Mapping[str, np.ndarray] | np.ndarray, *, timeout_s: float | None = None
    ) -> Future[Result]:
        """Send the last request (END flag)."""
        return self.infer(inputs, end=True, timeout_s=timeout_s)

    def _fail(self, error: Exception, *, send_end: bool = False) -> None:
        with self._lock:
            if self._failure is None:
                self._failure = error
        # A lost server gets no END (this may run on a response thread: nothing may block here).
        self._inner.close(send_end=send_end)
        self._cluster._release(self)

    def close(self) -> None:
        """End the sequence early (idempotent): a started one gets an END of zeros, freeing its server slot."""
        if self.live:
            self._fail(SequenceError(f"sequence {self.sequence_id} was closed"), send_end=True)
        self._cluster._release(self)

    def __enter__(self) -> ClusterSequence:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.close()

    def __repr__(self) -> str:
        return f"<ClusterSequence {self.sequence_id} on {self.endpoint} v{self.model_version}>"


class ClusterClient:
    """One model served by several Triton servers, used as one.

    Stateful sequences are pinned to one server by consistent hashing on the sequence id
    (adding a server moves about ``1/N`` of the ids); stateless requests go round robin over
    the live servers. A server that stops answering is marked down: its sequences fail with
    :class:`~hermes.aeriel.ServerLost`, new sequences and stateless requests go to the
    others; :meth:`probe` reconnects once it answers again. Each server is reached through
    one :class:`~hermes.aeriel.client.InferenceClient` (one gRPC stream, a bounded window).

    Args:
        endpoints: the servers (anything :func:`~hermes.aeriel.cluster.load_endpoints` takes).
        model: the model (or ensemble) name.
        model_version: the version new sequences use; default the newest ready version.
        vnodes: points per server on the hash ring.
        timeout_s: seconds one request may take.
        max_in_flight: unanswered requests allowed per server (backpressure).
        client_options: more keyword arguments for each ``InferenceClient``
            (``shared_memory="system"``, ``pad_batch=True``, ...).

    ```python
    with ClusterClient(load_endpoints("endpoints.json"), "stream") as client:
        seq = client.sequence(17)
        y = seq.infer({"x": chunk}).result()["y"]
        seq.end({"x": last}).result()
    ```
    """

    def __init__(
        self,
        endpoints: Any,
        model: str,
        *,
        model_version: int | None = None,
        vnodes: int = 256,
        timeout_s: float = 60.0,
        max_in_flight: int = 64,
        client_options: Mapping[str, Any] | None = None,
    ):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
        self.endpoints: list[Endpoint] = (
            [endpoints] if isinstance(endpoints, Endpoint) else load_endpoints(endpoints)
        )
        self.model = model
        self.timeout_s = float(timeout_s)
        self.max_in_flight = max_in_flight
        self._options = dict(client_options or {})
        self._by_name = {ep.name: ep for ep in self.endpoints}
        self.ring = HashRing([ep.name for ep in self.endpoints], vnodes=vnodes)
        self.manager = ModelManager(self.endpoints, timeout_s=max(self.timeout_s, 120.0))
        self._lock = threading.Condition()
        self._down: set[str] = set()
        self._draining: set[str] = set()  # leaving: no new work, live sequences may finish
        self._clients: dict[str, InferenceClient] = {}
        self._retired: list[InferenceClient] = []
        self._sequences: dict[Hashable, ClusterSequence] = {}
        self._round_robin = itertools.count()
        self._closed = False
        self.requests_per_endpoint: collections.Counter[str] = collections.Counter()
        self.sequences_per_endpoint: collections.Counter[str] = collections.Counter()
        try:
            self.model_version = model_version if model_version is not None else self._newest_version()
            errors = []
            for ep in self.endpoints:
                try:
                    self._clients[ep.name] = self._connect(ep)
                except ConnectionFailed as exc:
                    errors.append(str(exc))
                    self._down.add(ep.name)
            if not self._clients:
                raise ConnectionFailed(f"no server of the cluster answers for {model!r}: {'; '.join(errors)}")
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ setup
    def _connect(self, ep: Endpoint, timeout_s: float = 10.0) -> InferenceClient:
        from hermes.aeriel.client import InferenceClient

        return InferenceClient(
            ep.grpc,
            self.model,
            self.model_version,
            max_in_flight=self.max_in_flight,
            timeout_s=self.timeout_s,
            connect_timeout_s=timeout_s,
            **self._options,
        )

    def _newest_version(self) -> int:
        versions: set[int] = set()
        for ep in self.endpoints:
            try:
                with ModelManager(ep) as manager:
                    versions.update(manager.ready_versions(self.model)[ep.name])
            except ConnectionFailed:
                continue
        if not versions:
            raise ConnectionFailed(f"model {self.model!r} has no ready version on any server of the cluster")
        return max(versions)

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("this ClusterClient is closed; create a new one")

    # ------------------------------------------------------------------ servers
    @property
    def live_endpoints(self) -> list[str]:
        """Names of the servers not marked down."""
        with self._lock:
            return [ep.name for ep in self.endpoints if ep.name not in self._down | self._draining]

    def mark_down(self, name: str, reason: str = "marked down") -> None:
        """Stop using server ``name``: its sequences fail with ServerLost; new work goes elsewhere."""
        with self._lock:
            if name in self._down:
                return
            self._down.add(name)
            lost = [s for s in self._sequences.values() if s.endpoint == name]
        logger.warning("server %s is down (%s); %d live sequence(s) on it are lost", name, reason, len(lost))
        for seq in lost:
            seq._fail(self._lost_error(name, seq, reason))

    def _lost_error(self, name: str, seq: ClusterSequence | None, reason: str) -> ServerLost:
        what = f"the state of sequence {seq.sequence_id} is lost: start a new sequence" if seq else "resend"
        return ServerLost(
            f"server {name} ({self._by_name[name].grpc}) went away ({reason}); {what}", endpoint=name
        )

    def _lose(self, name: str, exc: BaseException, seq: ClusterSequence | None) -> ServerLost:
        """Mark ``name`` down after ``exc`` and return the error for ``seq``."""
        self.mark_down(name, str(exc).splitlines()[0][:200])
        return self._lost_error(name, seq, "its stream broke")

    def probe(self, *, timeout_s: float = 2.0) -> list[str]:
        """Reconnect to every server marked down that answers again; returns the live servers."""
        for name in sorted(self._down - self._draining):
            try:
                fresh = self._connect(self._by_name[name], timeout_s)
            except ConnectionFailed:
                continue
            with self._lock:
                old = self._clients.get(name)
                if old is not None:
                    self._retired.append(old)
                self._clients[name] = fresh
                self._down.discard(name)
            logger.info("server %s is live again", name)
        return self.live_endpoints

    def add_endpoint(self, endpoint: Endpoint) -> None:
        """Add a server at runtime (e.g. one an autoscaler started): new sequences may hash to it.

        A server that does not answer yet is added as down; :meth:`probe` connects it later.
        Adding a name already present is a no-op.
        """
        self._check_open()
        with self._lock:
            if endpoint.name in self._by_name:
                return
        try:
            client: InferenceClient | None = self._connect(endpoint)
        except ConnectionFailed as exc:
            logger.warning("new server %s does not answer yet (%s); added as down", endpoint.name, exc)
            client = None
        with self._lock:
            self.endpoints.append(endpoint)
            self._by_name[endpoint.name] = endpoint
            self.ring.add(endpoint.name)
            if client is None:
                self._down.add(endpoint.name)
            else:
                self._clients[endpoint.name] = client
        logger.info("server %s joined the cluster", endpoint.name)

    def remove_endpoint(self, name: str, *, drain_timeout_s: float = 60.0) -> int:
        """Take a server out at runtime: no new work goes to it, its live sequences may end within
        ``drain_timeout_s``; those still live then fail with ServerLost. Returns how many were cut.
        """
        with self._lock:
            if name not in self._by_name:
                return 0
            self._draining.add(name)
            self._lock.wait_for(
                lambda: not any(s.endpoint == name for s in self._sequences.values()), timeout=drain_timeout_s
            )
            cut = [s for s in self._sequences.values() if s.endpoint == name]
        for seq in cut:
            seq._fail(self._lost_error(name, seq, f"it left the cluster after a {drain_timeout_s:g} s drain"))
        with self._lock:
            self.endpoints = [ep for ep in self.endpoints if ep.name != name]
            del self._by_name[name]
            self.ring.remove(name)
            self._down.discard(name)
            self._draining.discard(name)
            client = self._clients.pop(name, None)
        if client is not None:
            try:
                client.close(timeout_s=5.0)
            except Exception:
                logger.debug("closing the client of a leaving server failed", exc_info=True)
        logger.info("server %s left the cluster (%d sequence(s) cut)", name, len(cut))
        return len(cut)

    # ------------------------------------------------------------------ sequences
    def sequence(self, sequence_id: int | str, *, model_version: int | None = None) -> ClusterSequence:
        """Start a sequence pinned to the server that owns ``sequence_id`` on the hash ring.

        Raises:
            SequenceError: the id is invalid or a live sequence already has it.
            ServerLost: every server is down.
        """
        self._check_open()
        with self._lock:
            if sequence_id in self._sequences:
                raise SequenceError(f"sequence {sequence_id} is already live; end it first or use another id")
            try:
                endpoint = self.ring.node_for(sequence_id, exclude=self._down | self._draining)
            except LookupError:
                raise ServerLost(f"every server is down ({', '.join(sorted(self._down))})") from None
            version = model_version if model_version is not None else self.model_version
            inner = self._clients[endpoint].sequence(sequence_id, model_version=version)
            seq = ClusterSequence(self, inner, endpoint, version)
            self._sequences[sequence_id] = seq
            self.sequences_per_endpoint[endpoint] += 1
        return seq

    def owner(self, sequence_id: int | str) -> str:
        """The live server a new sequence with this id would go to."""
        with self._lock:
            return self.ring.node_for(sequence_id, exclude=self._down | self._draining)

    @property
    def live_sequences(self) -> list[ClusterSequence]:
        """The sequences that have not ended (or failed)."""
        with self._lock:
            return list(self._sequences.values())

    def _release(self, seq: ClusterSequence) -> None:
        with self._lock:
            if self._sequences.get(seq.sequence_id) is seq:
                del self._sequences[seq.sequence_id]
                self._lock.notify_all()

    def _relay_sequence(
        self, seq: ClusterSequence, done: Future[Result], outer: Future[Result], end: bool
    ) -> None:
        with self._lock:
            self.requests_per_endpoint[seq.endpoint] += 1
        error = done.exception()
        if error is None:
            outer.set_result(done.result())
            if end:
                self._release(seq)
            return
        if isinstance(error, ConnectionFailed) and not isinstance(error, ServerLost) and not self._closed:
            error = self._lose(seq.endpoint, error, seq)
        outer.set_exception(error)
        if isinstance(error, Exception):
            seq._fail(error)

    # ------------------------------------------------------------------ stateless
    def submit(
        self, inputs: Mapping[str, np.ndarray] | np.ndarray, *, timeout_s: float | None = None
    ) -> Future[Result]:
        """Send one stateless request to the next live server (round robin).

        A server that does not answer is marked down and the request goes to the next one;
        the future fails with ServerLost only when every server is down.

        Raises:
            InputValidationError: the inputs do not match the model.
            SequenceError: the model is stateful (use :meth:`sequence`).
        """
        self._check_open()
        outer: Future[Result] = Future()
        self._submit_to_next(inputs, outer, timeout_s, tried=frozenset())
        return outer

    def infer(
        self, inputs: Mapping[str, np.ndarray] | np.ndarray, *, timeout_s: float | None = None
    ) -> Result:
        """:meth:`submit` and wait for the answer."""
        limit = self.timeout_s if timeout_s is None else timeout_s
        return self.submit(inputs, timeout_s=timeout_s).result(limit + 5)

    def _submit_to_next(
        self,
        inputs: Mapping[str, np.ndarray] | np.ndarray,
        outer: Future[Result],
        timeout_s: float | None,
        tried: frozenset[str],
    ) -> None:
        while True:
            with self._lock:
                unusable = self._down | self._draining | tried
                live = [ep.name for ep in self.endpoints if ep.name not in unusable]
                if not live:
                    outer.set_exception(
                        ServerLost(
                            f"no live server left for {self.model!r} (tried {', '.join(sorted(tried))})"
                        )
                    )
                    return
                name = live[next(self._round_robin) % len(live)]
                client = self._clients[name]
            try:
                inner = client.infer(inputs, timeout_s=timeout_s)
                with self._lock:
                    self.requests_per_endpoint[name] += 1
                break
            except ConnectionFailed as exc:
                self._lose(name, exc, None)
                tried = tried | {name}
            except BaseException as exc:
                if tried:  # raised while resending from a callback: give it to the future
                    outer.set_exception(exc)
                    return
                raise

        def relay(done: Future[Result]) -> None:
            error = done.exception()
            if error is None:
                outer.set_result(done.result())
            elif isinstance(error, ConnectionFailed) and not self._closed:
                self._lose(name, error, None)
                self._submit_to_next(inputs, outer, timeout_s, tried | {name})
            else:
                outer.set_exception(error)

        inner.add_done_callback(relay)

    # ------------------------------------------------------------------ model swap
    def _drain(self, timeout_s: float, old_versions: frozenset[int]) -> int:
        with self._lock:
            self._lock.wait_for(
                lambda: not any(s.model_version in old_versions for s in self._sequences.values()),
                timeout=timeout_s,
            )
            stuck = [s for s in self._sequences.values() if s.model_version in old_versions]
        for seq in stuck:
            seq._fail(
                SequenceError(
                    f"sequence {seq.sequence_id} did not end within the {timeout_s:g} s drain of a swap; "
                    f"its version {seq.model_version} was retired"
                )
            )
        return len(stuck)

    def _switch(self, version: int) -> None:
        with self._lock:
            self.model_version = version
            for client in self._clients.values():
                client.model_version = str(version)  # what its stateless requests ask for

    def swap(
        self,
        new_version: int,
        *,
        warmup: Mapping[str, np.ndarray] | None = None,
        drain_timeout_s: float = 60.0,
        timeout_s: float | None = None,
    ) -> SwapReport:
        """Hot-swap the model to ``new_version`` on every server without dropping a sequence.

        Loads and warms the new version beside the old one, sends new sequences (and
        stateless requests) to it, lets live sequences finish on the old version (those
        that outlive ``drain_timeout_s`` fail with SequenceError), then retires the old
        version. See :meth:`ModelManager.swap`.

        Raises:
            ModelLoadError: the new version did not load; nothing was switched.
        """
        self._check_open()
        return self.manager.swap(
            self.model,
            new_version,
            warmup=warmup,
            on_switch=self._switch,
            drain=self._drain,
            drain_timeout_s=drain_timeout_s,
            timeout_s=timeout_s,
        )

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close every server's client; live sequences are abandoned (their state idles out). Idempotent."""
        if self._closed:
            return
        self._closed = True
        for seq in self.live_sequences:
            seq._fail(ClientClosedError("the ClusterClient was closed"))
        for client in [*self._clients.values(), *self._retired]:
            try:
                client.close(timeout_s=5.0)
            except Exception:
                logger.debug("closing the client of a server failed", exc_info=True)
        self.manager.close()

    def __enter__(self) -> ClusterClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
