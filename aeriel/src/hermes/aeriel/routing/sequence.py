"""A stream pinned to one server, that survives it: :class:`RoutingSequence` and its moves.

```
 seq.send(x, end=) ──▶ _Sent kept in the history (replay tail + unanswered) ──▶ owner's Sequence.send
                                  │ answer: trim the tail, relay to the caller's future
                                  ▼ ConnectionFailed / "Server is stopping" / drain / swap
 _move(): open the id on the server it hashes to now, replay the tail with START (outputs
   dropped), resend the unanswered updates (their futures get the new answers) -> FailoverEvent
```
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Hashable
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Any

from hermes.aeriel.exceptions import (
    ClientClosedError,
    ConnectionFailed,
    InferenceFailed,
    SequenceError,
)

if TYPE_CHECKING:
    from hermes.aeriel.client import Result, Sequence
    from hermes.aeriel.client._requests import InputsLike
    from hermes.aeriel.routing.client import RoutingClient

__all__ = ["FailoverEvent", "RoutingSequence"]

logger = logging.getLogger("hermes.aeriel.routing")

# What Triton answers a request that reaches a server after SIGTERM (measured with the
# tritonserver of nvidia-pytriton 0.7.0): in-flight requests finish within --exit-timeout-secs,
# new ones (of live sequences too) are refused with this text, so the sequence state there
# can no longer be used: the stream moves as for a lost server.
STOPPING = "Server is stopping"


def _stopping(error: BaseException) -> bool:
    return isinstance(error, InferenceFailed) and STOPPING in str(error)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FailoverEvent:
    """One move of a stream to another server (or version), rebuilt from its replay tail.

    Attributes:
        sequence_id: the stream's id.
        source: the server it left (``name`` or ``name vN`` for a swap).
        target: the server it moved to.
        reason: why (the lost server's error, "draining", "swap").
        replayed: updates replayed with START whose outputs were dropped.
        resent: unanswered updates sent again (their futures get the new server's answers).
        first_update: the number (from 0) of the first update answered by the target.
        at: ``time.monotonic()`` when the move began.
        move_s: seconds to open the stream on the target and send the replay and the resends.
    """

    sequence_id: Hashable
    source: str
    target: str
    reason: str
    replayed: int
    resent: int
    first_update: int
    at: float
    move_s: float


@dataclasses.dataclass(eq=False)
class _Sent:
    """One update of a stream: kept until it is answered and falls out of the replay tail."""

    index: int
    inputs: InputsLike
    end: bool
    request_id: Any
    timeout_s: float | None
    outer: Future[Result]
    answered: bool = False


class RoutingSequence:
    """A stateful sequence pinned to one server and one model version.

    Made by :meth:`RoutingClient.sequence`; it wraps a
    :class:`~hermes.aeriel.client.Sequence` of the owning server's client and answers the
    same protocol (:class:`~hermes.aeriel.client.SequenceLike`): :meth:`send` returns a
    future; the first request carries START, ``send(..., end=True)`` carries END. As a
    ``with`` block it behaves as that sequence: leaving it after sending without END raises
    :class:`~hermes.aeriel.SequenceError`, leaving it on an exception abandons the sequence;
    both end it on its server with an END of zeros.

    With a replay tail (``replay_updates`` not None: a streaming ensemble, see
    :mod:`hermes.aeriel.routing.replay`) the sequence survives its server: when the server is
    lost or drains (or the model is swapped), the sequence opens again on another server,
    replays its last ``replay_updates`` answered updates with START (outputs dropped) and
    sends the unanswered ones again. Every future gets exactly one answer, in order, equal
    to an uninterrupted run. Each move is logged in :attr:`failovers`.

    Attributes:
        sequence_id: the correlation id.
        endpoint: name of the server that holds the sequence's state.
        model_version: the version every request of the sequence goes to.
        replay_updates: updates kept for a rebuild (None: no failover, a lost server fails it).
        failovers: the moves so far.
    """

    def __init__(
        self,
        cluster: RoutingClient,
        inner: Sequence,
        endpoint: str,
        model_version: int,
        replay_updates: int | None = None,
    ):
        self._cluster = cluster
        self._inner = inner
        self.sequence_id = inner.sequence_id
        self.endpoint = endpoint
        self.model_version = model_version
        self.replay_updates = replay_updates
        self.failovers: list[FailoverEvent] = []
        self._lock = threading.RLock()  # order of sends; _fail/_move may run inside send
        self._book = threading.Lock()  # the history; never held while sending
        self._history: collections.deque[_Sent] = collections.deque()
        self._generation = 0
        self._index = 0
        self._failure: Exception | None = None
        self._end_sent = False
        self._started = False  # a request was sent

    @property
    def live(self) -> bool:
        """Whether the sequence still holds state on its server (not ended, failed or closed)."""
        return not self._end_sent and self._failure is None

    @property
    def tail_updates(self) -> int:
        """Updates held now (answered ones in the replay tail and unanswered ones)."""
        with self._book:
            return len(self._history)

    def send(
        self,
        inputs: InputsLike,
        *,
        end: bool = False,
        request_id: Any = None,
        timeout_s: float | None = None,
    ) -> Future[Result]:
        """Send the next request of the sequence; the future gives a :class:`~hermes.aeriel.client.Result`.

        The first request carries START, ``end=True`` carries END (as
        :meth:`hermes.aeriel.client.Sequence.send`). ``request_id`` comes back as
        ``Result.request_id`` (default: the server's client numbers it); an update sent again
        after a move keeps it.

        Raises:
            SequenceError: the sequence already ended, was closed, or its version was retired.
            ServerLost: its server went away and the sequence keeps no replay tail.
            InputValidationError: the inputs do not match the model.
        """
        outer: Future[Result] = Future()
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if self._end_sent:
                raise SequenceError(f"sequence {self.sequence_id!r} already ended; no request may follow END")
            if self.replay_updates is None:
                self._send_plain(inputs, end, request_id, timeout_s, outer)
            else:
                self._send_kept(_Sent(self._index, inputs, end, request_id, timeout_s, outer))
            self._end_sent = self._end_sent or end
            self._started = True
        return outer

    def _send_kept(self, sent: _Sent) -> None:
        """Keep ``sent`` in the history and send it (under ``_lock``); a refused send is forgotten."""
        with self._book:
            self._history.append(sent)
        try:
            self._send(sent, self._generation, replay=False)
        except BaseException:
            with self._book:
                self._history.remove(sent)
            raise
        self._index += 1

    def _send_plain(
        self, inputs: InputsLike, end: bool, request_id: Any, timeout_s: float | None, outer: Future[Result]
    ) -> None:
        try:
            inner = self._inner.send(inputs, end=end, request_id=request_id, timeout_s=timeout_s)
        except ConnectionFailed as exc:
            raise self._cluster._lose(self.endpoint, exc, self) from exc
        inner.add_done_callback(lambda done: self._cluster._relay_sequence(self, done, outer, end))

    def _send(self, sent: _Sent, generation: int, *, replay: bool) -> None:
        """Send one kept update on the current server (under ``_lock``); a dead server moves the stream."""
        try:
            inner = self._inner.send(
                sent.inputs, end=sent.end and not replay, request_id=sent.request_id, timeout_s=sent.timeout_s
            )
        except ConnectionFailed as exc:
            self._cluster._lose(self.endpoint, exc, None)
            self._move(generation, str(exc).splitlines()[0][:200])
            return
        inner.add_done_callback(lambda done: self._on_answer(sent, generation, replay, done))

    def _on_answer(self, sent: _Sent, generation: int, replay: bool, done: Future[Result]) -> None:
        error = done.exception()
        with self._book:
            if generation != self._generation:
                return  # an answer of a server the stream left: its update was sent again
            if error is None:
                if replay:
                    return  # a replayed output: dropped
                sent.answered = True
                self._trim()
        if error is None:
            self._cluster._count(self.endpoint)
            if sent.end:  # released first: a caller woken by the answer may reuse the id
                self._cluster._release(self)
            sent.outer.set_result(done.result())
            return
        if (isinstance(error, ConnectionFailed) or _stopping(error)) and not self._cluster._closed:
            self._cluster._lose(self.endpoint, error, None)
            self._cluster._schedule_move(self, generation, str(error).splitlines()[0][:200])
            return
        self._fail_all(error if isinstance(error, Exception) else SequenceError(str(error)))

    def _trim(self) -> None:
        """Drop answered updates older than the replay tail (under ``_book``)."""
        answered = 0
        for item in self._history:
            if not item.answered:
                break
            answered += 1
        for _ in range(max(0, answered - (self.replay_updates or 0))):
            self._history.popleft()

    def _fail_all(self, error: Exception) -> None:
        """Fail the stream and every unanswered future with ``error``."""
        with self._book:
            waiting = [item.outer for item in self._history if not item.answered]
        for outer in waiting:
            if not outer.done():
                outer.set_exception(error)
        self._fail(error)

    def rebuild(self, reason: str = "requested") -> FailoverEvent:
        """Rebuild the stream now on the server its id maps to (e.g. back after :meth:`RoutingClient.probe`).

        The tail is replayed with START there and unanswered updates are sent again, as on a
        failover; outputs are unchanged.

        Raises:
            SequenceError: the sequence keeps no replay tail, or it ended or failed.
        """
        if self.replay_updates is None:
            raise SequenceError(f"sequence {self.sequence_id} keeps no replay tail: it cannot be rebuilt")
        with self._lock:
            if not self._move(self._generation, reason):
                raise SequenceError(f"sequence {self.sequence_id} has ended or failed: nothing to rebuild")
            return self.failovers[-1]

    def _wait_answered(self, timeout_s: float) -> None:
        """Wait until every update sent so far is answered (or failed)."""
        with self._book:
            waiting = [item.outer for item in self._history if not item.answered]
        concurrent.futures.wait(waiting, timeout=timeout_s)

    def _move(
        self, generation: int, reason: str, *, version: int | None = None, source: str | None = None
    ) -> bool:
        """Open the stream elsewhere, replay the tail, resend the unanswered updates.

        Returns False when the stream had already moved (or ended) since ``generation``.
        """
        with self._lock:
            with self._book:
                if generation != self._generation or self._failure is not None:
                    return False
                if source is not None and self.endpoint != source:
                    return False  # it already left that server
                if self._end_sent and all(item.answered for item in self._history):
                    return False
                self._generation += 1
                generation = self._generation
                history = list(self._history)
            began = time.monotonic()
            source = f"{self.endpoint} v{self.model_version}"
            self._inner.close(send_end=False)  # its server may be gone: nothing may block here
            try:
                endpoint, inner = self._cluster._reopen(self, version)
            except (ConnectionFailed, ClientClosedError, SequenceError) as exc:
                self._fail_all(exc)
                return True
            self._inner, self.endpoint = inner, endpoint
            if version is not None:
                self.model_version = version
            first = next((i for i, item in enumerate(history) if not item.answered), len(history))
            start = max(0, first - (self.replay_updates or 0))
            for item in history[start:]:
                self._send(item, generation, replay=item.answered)
                if generation != self._generation:
                    return True  # that server failed too: a nested move took over
            event = FailoverEvent(
                sequence_id=self.sequence_id,
                source=source,
                target=f"{endpoint} v{self.model_version}",
                reason=reason,
                replayed=first - start,
                resent=len(history) - first,
                first_update=history[first].index if first < len(history) else self._index,
                at=began,
                move_s=time.monotonic() - began,
            )
            self.failovers.append(event)
        logger.info(
            "sequence %s moved %s -> %s (%s): %d update(s) replayed, %d resent in %.3f s",
            self.sequence_id, event.source, event.target, reason, event.replayed, event.resent, event.move_s,
        )  # fmt: skip
        return True

    def _fail(self, error: Exception, *, send_end: bool = False) -> None:
        with self._book:
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

    def __enter__(self) -> RoutingSequence:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """As :class:`~hermes.aeriel.client.Sequence`: a block left without END raises; on an error it is abandoned."""
        unfinished = self.live and self._started
        if exc_type is not None or unfinished:
            self.close()  # an END of zeros frees its server slot at once
        if unfinished and exc_type is None:
            raise SequenceError(
                f"sequence {self.sequence_id!r} left its block without END; send the last update with "
                "seq.send(x, end=True)"
            )

    def __repr__(self) -> str:
        return f"<RoutingSequence {self.sequence_id} on {self.endpoint} v{self.model_version}>"
