"""The one client protocol: what every hermes inference client answers to.

```
                      infer(x, request_id=, timeout_s=)            -> F   (stateless)
 StreamingClient[F]   sequence(id) -> SequenceLike[F]
                          .send(x, end=, request_id=, timeout_s=)  -> F   (START on the first, END with end=True)
                          .close()                                        (abandon: END of zeros)
                      close()

 InferenceClient       F = concurrent.futures.Future[Result]       one server, one gRPC stream
 RoutingClient         F = concurrent.futures.Future[Result]       many servers: hashing, failover
 AsyncInferenceClient  F = Awaitable[asyncio.Future[Result]]       asyncio: await the call for the future
```

Code written against ``StreamingClient[Future[Result]]`` (alias :data:`SyncClient`) runs
unchanged on one server or many; that is what
:class:`hermes.stillwater.InferenceStage` takes. The asyncio client has the same names and
arguments, but ``infer``/``send`` are coroutines (``await`` them for the room in the window;
they return an ``asyncio.Future``) and ``close`` is a coroutine too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from concurrent.futures import Future
from typing import Any, Protocol, TypeAlias, TypeVar, runtime_checkable

from hermes.aeriel.client._options import SequenceId
from hermes.aeriel.client._requests import InputsLike
from hermes.aeriel.client._result import Result

__all__ = ["AsyncClient", "SequenceLike", "StreamingClient", "SyncClient"]

FutureT_co = TypeVar("FutureT_co", covariant=True)


@runtime_checkable
class SequenceLike(Protocol[FutureT_co]):
    """One stateful sequence (Triton correlation id): requests reach its server in send order."""

    @property
    def sequence_id(self) -> SequenceId: ...

    def send(
        self,
        inputs: InputsLike,
        *,
        end: bool = False,
        request_id: Any = None,
        timeout_s: float | None = None,
    ) -> FutureT_co:
        """Send the next update: START on the first, END with ``end=True``; the answer's future."""
        ...

    def close(self) -> object:
        """End the sequence early (idempotent); a started one without END is ended on its server."""
        ...


@runtime_checkable
class StreamingClient(Protocol[FutureT_co]):
    """A client of one model: stateless requests and stateful sequences, each answered by a future.

    ``FutureT_co`` is what ``infer`` and ``send`` return: ``concurrent.futures.Future[Result]``
    for the thread-based clients, an awaitable of an ``asyncio.Future[Result]`` for the
    asyncio one. The call returns once the request is on its way (it may wait for room in the
    window: backpressure), never for the answer.
    """

    def infer(
        self,
        inputs: InputsLike,
        *,
        request_id: Any = None,
        timeout_s: float | None = None,
    ) -> FutureT_co:
        """Send one request to a stateless model; ``request_id`` comes back as ``Result.request_id``."""
        ...

    def sequence(self, sequence_id: SequenceId) -> SequenceLike[FutureT_co]:
        """Open the stateful sequence ``sequence_id`` (a positive int or a non-empty str)."""
        ...

    def close(self) -> object:
        """Wait for the requests in flight (within the client's timeout), then release everything."""
        ...


SyncClient: TypeAlias = StreamingClient[Future[Result]]
"""A thread-based client: :class:`InferenceClient` or :class:`~hermes.aeriel.routing.RoutingClient`."""

AsyncClient: TypeAlias = StreamingClient[Awaitable[asyncio.Future[Result]]]
"""The asyncio client: :class:`AsyncInferenceClient` (``await client.infer(x)`` gives the future)."""
