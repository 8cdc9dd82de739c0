"""One client over many Triton servers: sequences pinned by consistent hashing.

```
 caller threads                         one InferenceClient per server (hermes.aeriel.client)
 ──────────────                         ─────────────────────────────────────────────────────
 RoutingClient.sequence(id) ─HashRing─▶ owner.sequence(id, model_version=v)  (its one gRPC
   seq.send(x) -> Future[Result]          stream keeps the sequence in order; window = backpressure)
 RoutingClient.infer(x) ─round robin──▶ next live server's infer(x) -> Future[Result]
                                         │ a stream that breaks fails its futures with
                                         ▼ ConnectionFailed (on the stream thread)
 relay (future done-callback): ConnectionFailed -> mark the server down: every sequence on
   it fails with ServerLost at once; stateless requests are resent to the next live server;
   new sequences hash to the next live server on the ring. probe() reconnects.
 swap(): ModelManager loads the new version beside the old, switches new sequences (and
   stateless requests) to it, waits (Condition) until the old version's sequences end,
   then retires the old version.
```

:class:`RoutingSequence` and its moves (replay tail, failover) live in
:mod:`hermes.aeriel.routing.sequence`. Both classes answer the one client protocol
(:class:`~hermes.aeriel.client.StreamingClient`), as the single-server client does.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
from collections.abc import Hashable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from hermes.aeriel._lifecycle import Closeable
from hermes.aeriel.control.client import ControlClient
from hermes.aeriel.control.model_manager import ModelManager, SwapReport
from hermes.aeriel.endpoints import Endpoint, load_endpoints
from hermes.aeriel.exceptions import (
    AerielError,
    ClientClosedError,
    ConnectionFailed,
    SequenceError,
    ServerLost,
)
from hermes.aeriel.routing.hash_ring import HashRing
from hermes.aeriel.routing.replay import ReplayPlan, replay_plan
from hermes.aeriel.routing.sequence import RoutingSequence

if TYPE_CHECKING:  # the single-server client (and grpc) load on first use, not on import
    from hermes.aeriel.client import (
        AsyncClient,
        AsyncInferenceClient,
        InferenceClient,
        Result,
        Sequence,
        SyncClient,
    )
    from hermes.aeriel.client._requests import InputsLike
    from hermes.aeriel.routing.chunks import ChunkedStream

__all__ = ["RoutingClient"]

logger = logging.getLogger("hermes.aeriel.routing")


class RoutingClient(Closeable):
    """One model served by several Triton servers, used as one.

    Stateful sequences are pinned to one server by consistent hashing on the sequence id
    (adding a server moves about ``1/N`` of the ids); stateless requests go round robin over
    the live servers. A server that stops answering is marked down: its sequences fail with
    :class:`~hermes.aeriel.ServerLost`, new sequences and stateless requests go to the
    others; :meth:`probe` reconnects once it answers again. Each server is reached through
    one :class:`~hermes.aeriel.client.InferenceClient` (one gRPC stream, a bounded window).
    Like that client it is a :class:`~hermes.aeriel.client.StreamingClient`: :meth:`infer`
    and ``sequence(id).send(x, end=...)`` return futures, so code written for one server
    runs unchanged on many.

    Args:
        endpoints: the servers (anything :func:`~hermes.aeriel.routing.load_endpoints` takes).
        model: the model (or ensemble) name.
        model_version: the version new sequences use; default the newest ready version.
        vnodes: points per server on the hash ring.
        timeout_s: seconds one request may take.
        max_in_flight: unanswered requests allowed per server (backpressure).
        client_options: more keyword arguments for each ``InferenceClient``
            (``shared_memory="system"``, ``pad_batch=True``, ...).
        failover: whether sequences keep a replay tail and survive a lost, draining or swapped
            server. None (default): on for a streaming ensemble (its parameters record the
            tail, see :mod:`hermes.aeriel.routing.replay`), off for other stateful models
            (whose state may depend on the whole past, so a replay cannot rebuild it).
        replay_updates: the tail in updates, overriding the recorded one (``failover`` then
            defaults to on).
        watch_interval_s: seconds between readiness polls of the live servers: a server
            that turns not-ready (draining after SIGTERM) has its streams moved away before
            it exits. None: no polling (streams move only on a broken connection).

    ```python
    with RoutingClient(load_endpoints("endpoints.json"), "stream") as client:
        seq = client.sequence(17)
        y = seq.send({"x": chunk}).result()["y"]
        seq.send({"x": last}, end=True).result()
        z = client.infer({"x": batch}).result()["y"]  # stateless: round robin
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
        failover: bool | None = None,
        replay_updates: int | None = None,
        watch_interval_s: float | None = 0.5,
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
        self._sequences: dict[Hashable, RoutingSequence] = {}
        self._round_robin = itertools.count()
        self._closed = False
        self._leaving: set[str] = set()  # being removed by remove_endpoint: probe() leaves them alone
        self._mover: ThreadPoolExecutor | None = None
        self._stop_watch = threading.Event()
        self._watcher: threading.Thread | None = None
        self.requests_per_endpoint: collections.Counter[str] = collections.Counter()
        self.sequences_per_endpoint: collections.Counter[str] = collections.Counter()
        try:
            self.model_version = model_version if model_version is not None else self._newest_version()
            self._connect_all()
            self.replay = self._plan(failover, replay_updates)
            if watch_interval_s is not None and self.replay is not None:
                self._watcher = threading.Thread(
                    target=self._watch,
                    args=(float(watch_interval_s),),
                    name="hermes-cluster-watch",
                    daemon=True,
                )
                self._watcher.start()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ setup
    def _connect_all(self) -> None:
        """One client per server; those that do not answer start as down (at least one must answer)."""
        errors = []
        for ep in self.endpoints:
            try:
                self._clients[ep.name] = self._connect(ep)
            except ConnectionFailed as exc:
                errors.append(str(exc))
                self._down.add(ep.name)
        if not self._clients:
            raise ConnectionFailed(
                f"no server of the cluster answers for {self.model!r}: {'; '.join(errors)}"
            )

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

    def _plan(self, failover: bool | None, replay_updates: int | None) -> ReplayPlan | None:
        """The replay tail of this model's streams, or None when they do not fail over."""
        if failover is False:
            return None
        if replay_updates is not None:
            return ReplayPlan(updates=replay_updates)
        live = next(ep for ep in self.endpoints if ep.name in self._clients)
        plan = replay_plan(self.manager.config(self.model, live).parameters)
        if plan is None and failover:
            raise SequenceError(
                f"model {self.model!r} records no streaming state (no hermes.streaming_* parameters), so the "
                "replay tail that rebuilds its state is unknown; give replay_updates= or failover=False"
            )
        return plan

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
            raise ClientClosedError("this RoutingClient is closed; create a new one")

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
        moving = [seq for seq in lost if seq.replay_updates is not None]
        logger.warning(
            "server %s is down (%s); %d live sequence(s) on it move to other servers, %d are lost",
            name, reason, len(moving), len(lost) - len(moving),
        )  # fmt: skip
        for seq in lost:
            if seq.replay_updates is not None:
                self._schedule_move(seq, seq._generation, reason, name)
            else:
                seq._fail(self._lost_error(name, seq, reason))

    def drain(self, name: str, reason: str = "draining") -> int:
        """Stop sending new sequences to server ``name`` and move its streams away now.

        Streams with a replay tail are rebuilt on other servers (their unanswered updates sent
        again there); sequences without one stay until they end. The server stays in use for
        stateless requests until it is marked down. Returns how many streams were moved.
        """
        with self._lock:
            self._draining.add(name)
            moving = [
                s for s in self._sequences.values() if s.endpoint == name and s.replay_updates is not None
            ]
        logger.warning("server %s is draining (%s); moving %d stream(s)", name, reason, len(moving))
        return sum(seq._move(seq._generation, reason, source=name) for seq in moving)

    def _schedule_move(
        self, seq: RoutingSequence, generation: int, reason: str, source: str | None = None
    ) -> None:
        """Move ``seq`` on the mover thread (not on the thread of the stream that broke)."""
        with self._lock:
            if self._closed:
                return
            if self._mover is None:
                self._mover = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hermes-failover")
            mover = self._mover
        mover.submit(self._move_or_fail, seq, generation, reason, source)

    @staticmethod
    def _move_or_fail(seq: RoutingSequence, generation: int, reason: str, source: str | None) -> None:
        """Run a move on the mover thread; an unexpected error fails the stream instead of vanishing."""
        try:
            seq._move(generation, reason, source=source)
        except Exception as exc:
            logger.exception("moving sequence %s failed", seq.sequence_id)
            seq._fail_all(exc)

    def _reopen(self, seq: RoutingSequence, version: int | None) -> tuple[str, Sequence]:
        """Open ``seq`` again on the live, not draining server its id maps to now."""
        with self._lock:
            self._check_open()
            avoid = self._down | self._draining
            try:
                endpoint = self.ring.node_for(seq.sequence_id, exclude=avoid)
            except LookupError:
                raise ServerLost(
                    f"sequence {seq.sequence_id} cannot move: every server is down or draining "
                    f"({', '.join(sorted(avoid))})"
                ) from None
            inner = self._clients[endpoint].sequence(
                seq.sequence_id, model_version=seq.model_version if version is None else version
            )
            self.sequences_per_endpoint[endpoint] += 1
            return endpoint, inner

    def _count(self, endpoint: str) -> None:
        with self._lock:
            self.requests_per_endpoint[endpoint] += 1

    def _watch(self, interval_s: float) -> None:
        """Poll the readiness of the servers holding streams; drain those that turn not-ready."""
        probes: dict[str, ControlClient] = {}  # the watch thread's own channels, 2 s per check
        try:
            while not self._stop_watch.wait(interval_s):
                with self._lock:
                    busy = {s.endpoint for s in self._sequences.values() if s.replay_updates is not None}
                    busy -= self._down | self._draining
                for name in sorted(busy):
                    if name not in probes:
                        probes[name] = ControlClient(self._by_name[name], timeout_s=2.0)
                    if not self._ready(probes[name]):
                        self.drain(name, "the server is not ready (draining)")
        finally:
            for probe in probes.values():
                probe.close()

    @staticmethod
    def _ready(probe: ControlClient) -> bool:
        try:
            return probe.is_ready()
        except AerielError:  # unreachable or refused: not ready
            return False

    def _lost_error(self, name: str, seq: RoutingSequence | None, reason: str) -> ServerLost:
        what = f"the state of sequence {seq.sequence_id} is lost: start a new sequence" if seq else "resend"
        return ServerLost(
            f"server {name} ({self._by_name[name].grpc}) went away ({reason}); {what}", endpoint=name
        )

    def _lose(self, name: str, exc: BaseException, seq: RoutingSequence | None) -> ServerLost:
        """Mark ``name`` down after ``exc`` and return the error for ``seq``."""
        self.mark_down(name, str(exc).splitlines()[0][:200])
        return self._lost_error(name, seq, "its stream broke")

    def probe(self, *, timeout_s: float = 2.0) -> list[str]:
        """Reconnect to every server marked down that answers again; returns the live servers.

        A server drained after a failed readiness poll takes new sequences again once it is ready.
        """
        for name in sorted(self._down - self._leaving):
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
                self._draining.discard(name)
            logger.info("server %s is live again", name)
        for name in sorted(self._draining - self._down - self._leaving):
            try:
                ready = self.manager.client(self._by_name[name]).is_ready()
            except Exception:
                continue
            if ready:
                with self._lock:
                    self._draining.discard(name)
                logger.info("server %s is ready again; it takes new sequences", name)
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
            self._leaving.add(name)
        self.drain(name, "it leaves the cluster")  # streams with a replay tail move now
        with self._lock:
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
            self._leaving.discard(name)
            client = self._clients.pop(name, None)
        if client is not None:
            try:
                client.close(timeout_s=5.0)
            except Exception:
                logger.debug("closing the client of a leaving server failed", exc_info=True)
        logger.info("server %s left the cluster (%d sequence(s) cut)", name, len(cut))
        return len(cut)

    # ------------------------------------------------------------------ sequences
    def sequence(self, sequence_id: int | str, *, model_version: int | None = None) -> RoutingSequence:
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
            if endpoint in self._draining:
                endpoint = self.ring.node_for(sequence_id, exclude=self._down | self._draining)
            version = model_version if model_version is not None else self.model_version
            inner = self._clients[endpoint].sequence(sequence_id, model_version=version)
            tail = self.replay.updates if self.replay is not None else None
            seq = RoutingSequence(self, inner, endpoint, version, tail)
            self._sequences[sequence_id] = seq
            self.sequences_per_endpoint[endpoint] += 1
        return seq

    def stream(self, sequence_id: int | str, **options: Any) -> ChunkedStream:
        """A :class:`~hermes.aeriel.routing.ChunkedStream` over sequence ``sequence_id``: chunks of any length.

        The update sizes and output delays come from the ensemble's streaming records;
        ``options`` are those of :class:`ChunkedStream` (``position``, ``sample_rates``,
        ``gap``, ``max_fill``, ``flush``). A restart after a gap reopens the same id.

        Raises:
            SequenceError: the model records no streaming groups.
        """
        from hermes.aeriel.routing.chunks import ChunkedStream

        plan = self.replay or self._plan(None, None)
        if plan is None or not plan.update_sizes:
            raise SequenceError(
                f"model {self.model!r} records no streaming input groups (hermes.streaming_input.*); "
                "send fixed updates with client.sequence(id).send(...)"
            )
        return ChunkedStream(lambda: self.sequence(sequence_id), plan.update_sizes, plan.delays, **options)

    def owner(self, sequence_id: int | str) -> str:
        """The live server a new sequence with this id would go to."""
        with self._lock:
            return self.ring.node_for(sequence_id, exclude=self._down | self._draining)

    @property
    def live_sequences(self) -> list[RoutingSequence]:
        """The sequences that have not ended (or failed)."""
        with self._lock:
            return list(self._sequences.values())

    def _release(self, seq: RoutingSequence) -> None:
        with self._lock:
            if self._sequences.get(seq.sequence_id) is seq:
                del self._sequences[seq.sequence_id]
                self._lock.notify_all()

    def _relay_sequence(
        self, seq: RoutingSequence, done: Future[Result], outer: Future[Result], end: bool
    ) -> None:
        with self._lock:
            self.requests_per_endpoint[seq.endpoint] += 1
        error = done.exception()
        if error is None:
            if end:
                self._release(seq)
            outer.set_result(done.result())
            return
        if isinstance(error, ConnectionFailed) and not isinstance(error, ServerLost) and not self._closed:
            error = self._lose(seq.endpoint, error, seq)
        outer.set_exception(error)
        if isinstance(error, Exception):
            seq._fail(error)

    # ------------------------------------------------------------------ stateless
    def infer(
        self, inputs: InputsLike, *, request_id: Any = None, timeout_s: float | None = None
    ) -> Future[Result]:
        """Send one stateless request to the next live server (round robin); the answer's future.

        A server that does not answer is marked down and the request goes to the next one;
        the future fails with ServerLost only when every server is down. ``request_id`` comes
        back as ``Result.request_id``.

        Raises:
            InputValidationError: the inputs do not match the model.
            SequenceError: the model is stateful (use :meth:`sequence`).
        """
        self._check_open()
        outer: Future[Result] = Future()
        self._submit_to_next(inputs, request_id, outer, timeout_s, tried=frozenset())
        return outer

    def _submit_to_next(
        self,
        inputs: InputsLike,
        request_id: Any,
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
                inner = client.infer(inputs, request_id=request_id, timeout_s=timeout_s)
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
                self._submit_to_next(inputs, request_id, outer, timeout_s, tried | {name})
            else:
                outer.set_exception(error)

        inner.add_done_callback(relay)

    # ------------------------------------------------------------------ model swap
    def _drain(self, timeout_s: float, old_versions: frozenset[int]) -> int:
        with self._lock:
            self._lock.wait_for(
                lambda: (
                    not any(
                        s.model_version in old_versions and s.replay_updates is None
                        for s in self._sequences.values()
                    )
                ),
                timeout=timeout_s,
            )
            stuck = [s for s in self._sequences.values() if s.model_version in old_versions]
        for seq in [s for s in stuck if s.replay_updates is not None]:
            seq._move(seq._generation, "swap", version=self.model_version)
        stuck = [s for s in stuck if s.replay_updates is None]
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

    def swap_member(self, member: str, new_version: int, *, timeout_s: float | None = None) -> SwapReport:
        """Hot-swap a member of a streaming ensemble (its network) and rebuild every live stream on it.

        An ensemble step that asks for the latest version switches as soon as the new version
        is ready, which would mix versions inside a stream's averaged output. So the live
        streams pause (their next ``infer`` waits) until their sent updates are answered; the
        new version loads beside the old; each stream replays its tail with START (now
        through the new version) and carries on; the old version is retired. Outputs answered
        before the pause come from the old version, every later one from the new, with no
        gap; the pause lasts the load plus the replay (:class:`SwapReport`, and each stream's
        ``failovers`` entry with reason ``"swap"``).

        Raises:
            SequenceError: the model's streams keep no replay tail (``failover=False``).
            ModelLoadError: the new version did not load; the streams resume on the old one.
        """
        self._check_open()
        if self.replay is None:
            raise SequenceError(f"model {self.model!r} keeps no replay tail: its streams cannot be rebuilt")
        streams = sorted(
            (s for s in self.live_sequences if s.replay_updates is not None), key=lambda s: str(s.sequence_id)
        )
        for seq in streams:
            seq._lock.acquire()
        try:
            for seq in streams:
                seq._wait_answered(self.timeout_s)

            def rebuild(_timeout_s: float, _old: frozenset[int]) -> int:
                for seq in streams:
                    seq._move(seq._generation, "swap")
                return 0

            return self.manager.swap(member, new_version, drain=rebuild, timeout_s=timeout_s)
        finally:
            for seq in streams:
                seq._lock.release()

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close every server's client; live sequences are abandoned (their state idles out). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop_watch.set()
        if self._watcher is not None:
            self._watcher.join(5.0)
        if self._mover is not None:
            self._mover.shutdown(wait=True, cancel_futures=True)
        for seq in self.live_sequences:
            seq._fail(ClientClosedError("the RoutingClient was closed"))
        for client in [*self._clients.values(), *self._retired]:
            try:
                client.close(timeout_s=5.0)
            except Exception:
                logger.debug("closing the client of a server failed", exc_info=True)
        self.manager.close()


if TYPE_CHECKING:  # mypy proves here that every client answers the one protocol

    def _answers_the_protocol(
        one: InferenceClient, many: RoutingClient, aio: AsyncInferenceClient
    ) -> tuple[SyncClient, SyncClient, AsyncClient]:
        return one, many, aio
