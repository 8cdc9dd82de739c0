"""InferenceStage: stream updates through a (stateful) Triton model with an aeriel client.

```
 inference stage process
 inbox ─▶ _InferenceWorker.__call__ ─▶ client (opened in setup(): InferenceClient for "host:port",
                │                        RoutingClient for a list of endpoints, or factory())
                │  holds back one plain update so the last one can carry END
                ▼
           deque of futures (≤ max_pending) ─▶ results emitted in send order ─▶ outbox
 end of stream: flush() sends the held update with END and waits for every result;
 teardown() closes the client.
```

The stage is a :class:`~hermes.stillwater.Map` whose worker opens its client inside the
stage process (a live client, with its threads and gRPC channels, cannot cross into it), so
the stage takes how to make one: an address, a list of endpoints, or a picklable factory of
any :class:`hermes.aeriel.client.StreamingClient` with concurrent futures
(``infer(x) -> Future``, ``sequence(id).send(x, end=...) -> Future``).
"""

from __future__ import annotations

import collections
import inspect
import logging
import pickle
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from hermes.stillwater.array_spec import ArraySpec
from hermes.stillwater.stage import DEFAULT_CAPACITY, Map

if TYPE_CHECKING:
    from hermes.aeriel.client import SyncClient

__all__ = ["InferenceRequest", "InferenceStage"]

ClientFactory: TypeAlias = "Callable[[], SyncClient]"
"""A picklable zero-argument callable that opens a client (in the stage process)."""

logger = logging.getLogger("hermes.stillwater.inference")

_EMIT = ("result", "output")


def _client_module() -> Any:
    try:
        from hermes.aeriel import client
    except ImportError as exc:
        raise ImportError(
            'the inference stage needs the aeriel client: pip install "hermes-stillwater[aeriel]"'
        ) from exc
    return client


@dataclass(frozen=True, kw_only=True)
class InferenceRequest:
    """An update with explicit sequence bookkeeping (plain arrays use the stage's defaults).

    Attributes:
        inputs: an array or ``{input name: array}`` (e.g. one streaming update ``(1, C, s)``).
        sequence_id: the sequence (Triton correlation id) this update belongs to.
        end: the last update of its sequence (carries END).
        request_id: kept on the result; ``None`` lets the client number requests.
    """

    inputs: Any
    sequence_id: int | str
    end: bool = False
    request_id: Any = None


def _is_factory(client: Any) -> bool:
    """Whether ``client`` makes clients (a class or a callable), rather than being an address or a client."""
    if isinstance(client, type):
        return True
    if isinstance(client, str | bytes) or hasattr(client, "sequence"):
        return False  # an address, or a client already open
    return callable(client)


def _open_client(client: str | Sequence[Any] | ClientFactory, model_name: str | None,
                 client_kwargs: Mapping[str, Any]) -> SyncClient:  # fmt: skip
    """Open the stage's client (in the stage process) and check that it speaks the protocol."""
    aeriel = _client_module()
    if isinstance(client, str):
        opened: Any = aeriel.InferenceClient(client, model_name, **client_kwargs)
    elif not _is_factory(client):  # several servers: streams pinned by hashing, rebuilt elsewhere
        from hermes.aeriel.routing import RoutingClient

        opened = RoutingClient(client, str(model_name), **client_kwargs)
    else:
        opened = client(**client_kwargs)  # type: ignore[operator]
    if not isinstance(opened, aeriel.StreamingClient) or inspect.iscoroutinefunction(opened.infer):
        close = getattr(opened, "close", None)
        if callable(close) and not inspect.iscoroutinefunction(close):
            close()
        raise TypeError(
            f"InferenceStage.client: the factory returned {type(opened).__name__}, which is not a thread-based "
            "hermes.aeriel.client.StreamingClient (infer(x) -> Future, sequence(id).send(x, end=) -> Future; "
            "e.g. InferenceClient or RoutingClient; the asyncio client does not fit a stage's thread)"
        )
    return opened  # type: ignore[no-any-return]


class _InferenceWorker:
    """Runs in the stage process: owns the client, the open sequences and the pending futures."""

    def __init__(self, client: str | Sequence[Any] | ClientFactory, model_name: str | None,
                 sequence_id: int | str, emit: str, max_pending: int, result_timeout_s: float,
                 client_kwargs: Mapping[str, Any]) -> None:  # fmt: skip
        self.target = client
        self.model_name = model_name
        self.sequence_id = sequence_id
        self.emit = emit
        self.max_pending = max_pending
        self.result_timeout_s = result_timeout_s
        self.client_kwargs = dict(client_kwargs)
        self.client: SyncClient | None = None
        self.sequences: dict[int | str, Any] = {}
        self.pending: collections.deque[Any] = collections.deque()
        self.held: Any = None

    def setup(self) -> None:
        self.client = _open_client(self.target, self.model_name, self.client_kwargs)
        logger.info("inference stage connected: %r", self.client)

    def _send(self, inputs: Any, sequence_id: int | str, end: bool, request_id: Any) -> None:
        seq = self.sequences.get(sequence_id)
        if seq is None:
            assert self.client is not None, "setup() opens the client"
            seq = self.sequences[sequence_id] = self.client.sequence(sequence_id)
        self.pending.append(seq.send(inputs, end=end, request_id=request_id))
        if end:
            del self.sequences[sequence_id]

    def _ready(self, wait_for: int) -> Iterator[Any]:
        """Emit finished results in order; block on the oldest while more than ``wait_for`` are pending."""
        while self.pending and (self.pending[0].done() or len(self.pending) > wait_for):
            result = self.pending.popleft().result(timeout=self.result_timeout_s)
            yield result if self.emit == "result" else result.output.copy()

    def __call__(self, item: Any) -> Iterator[Any]:
        if isinstance(item, InferenceRequest):
            self._send(item.inputs, item.sequence_id, item.end, item.request_id)
        else:
            if self.held is not None:
                self._send(self.held, self.sequence_id, False, None)
            self.held = item.copy() if hasattr(item, "copy") else item
        yield from self._ready(self.max_pending - 1)

    def flush(self) -> list[Any]:
        if self.held is not None:
            self._send(self.held, self.sequence_id, True, None)
            self.held = None
        return list(self._ready(0))

    def teardown(self) -> None:
        for seq in self.sequences.values():
            seq.close()
        self.sequences.clear()
        if self.client is not None:
            self.client.close()
            self.client = None


def _check_client(client: Any, model_name: str | None) -> None:
    """Reject a client argument the stage cannot use, naming what it takes."""
    if _is_factory(client):
        try:
            pickle.dumps(client)
        except Exception as exc:
            raise ValueError(
                f"InferenceStage.client: the factory {client!r} cannot be pickled into the stage process "
                f"({exc}); use a module-level function or functools.partial(RoutingClient, endpoints, 'model')"
            ) from exc
        return
    if hasattr(client, "sequence"):
        raise TypeError(
            f"InferenceStage.client: got an open {type(client).__name__}, which cannot cross into the stage "
            "process; give how to open it: functools.partial(RoutingClient, endpoints, 'model') (or the class)"
        )
    several = isinstance(client, Sequence) and not isinstance(client, str | bytes)
    if not (isinstance(client, str) and client) and not (several and len(client) > 0):
        raise ValueError(
            f"InferenceStage.client must be the server's gRPC endpoint 'host:port', a non-empty list of "
            f"endpoints (a RoutingClient) or a factory of a client, got {client!r}"
        )
    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f"InferenceStage.model_name must be a non-empty str, got {model_name!r}")


def _check_options(sequence_id: Any, emit: Any, max_pending: Any, result_timeout_s: Any) -> None:
    if isinstance(sequence_id, bool) or not isinstance(sequence_id, int | str) or not sequence_id:
        raise ValueError(
            f"InferenceStage.sequence_id must be a positive int or a non-empty str (Triton's correlation id; "
            f"0 means no sequence), got {sequence_id!r}"
        )
    if isinstance(sequence_id, int) and not 0 < sequence_id < 2**64:
        raise ValueError(f"InferenceStage.sequence_id must be in 1..2**64-1, got {sequence_id}")
    if emit not in _EMIT:
        raise ValueError(f"InferenceStage.emit must be one of {_EMIT}, got {emit!r}")
    if not isinstance(max_pending, int) or max_pending < 1:
        raise ValueError(f"InferenceStage.max_pending must be an int >= 1, got {max_pending!r}")
    if (
        isinstance(result_timeout_s, bool)
        or not isinstance(result_timeout_s, int | float)
        or not (0 < result_timeout_s < float("inf"))
    ):
        raise ValueError(f"InferenceStage.result_timeout_s must be > 0, got {result_timeout_s!r}")


class InferenceStage(Map):
    """A Map stage that streams updates through a Triton model and emits results in order.

    Each plain item (an array or ``{input: array}``) is the next update of the sequence
    ``sequence_id``; the stage holds back one update so that the last one, at the end of
    the stream, carries END. :class:`InferenceRequest` items name their own sequence and
    END flag and are sent at once. Results are emitted in the order the requests were sent,
    as soon as they are done; at most ``max_pending`` requests are outstanding (use 1 for
    the lowest latency on a real-time stream, more for throughput).

    Args:
        client: where to stream, as the stage process opens it: the server's gRPC endpoint
            ``"host:port"`` (an ``InferenceClient``); a list of endpoints (anything
            ``hermes.aeriel.routing.load_endpoints`` takes: a ``RoutingClient``, whose
            streams survive a lost or draining server); or a picklable factory returning any
            thread-based :class:`hermes.aeriel.client.StreamingClient`, called as
            ``client(**client_kwargs)`` (e.g. ``functools.partial(RoutingClient, endpoints,
            "stream", failover=True)``). A client already open cannot cross into the process.
        model_name: the (ensemble) model to stream through (not used with a factory).
        sequence_id: the sequence of plain items.
        emit: ``"result"`` emits the client's result objects (``.outputs``, ``.timings``,
            ``.request_id``, ``.sequence_id``); ``"output"`` emits the single output array
            (can then use shared memory with ``output=ArraySpec(...)``).
        max_pending: requests outstanding at most before the stage waits for the oldest.
        result_timeout_s: longest wait (s) for one result.
        client_kwargs: passed to the ``InferenceClient`` (e.g. ``max_in_flight``,
            ``shared_memory``, ``timeout_s``), the ``RoutingClient``, or the factory.
        name: see :class:`~hermes.stillwater.Stage`.
        output: see :class:`~hermes.stillwater.Stage`.
        capacity: see :class:`~hermes.stillwater.Stage`.
        copy: see :class:`~hermes.stillwater.Stage`.

    Raises:
        ImportError: hermes-aeriel is not installed (with the pip command to fix it).
        ValueError: a bad option, or a factory that cannot be pickled (names it).
        TypeError: an open client instead of a way to open one.
    """

    kind = "inference"

    def __init__(
        self,
        client: str | Sequence[Any] | ClientFactory,
        model_name: str | None = None,
        *,
        sequence_id: int | str = 1,
        emit: str = "result",
        max_pending: int = 8,
        result_timeout_s: float = 60.0,
        client_kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        output: ArraySpec | None = None,
        capacity: int = DEFAULT_CAPACITY,
        copy: bool = True,
    ) -> None:
        _client_module()
        _check_options(sequence_id, emit, max_pending, result_timeout_s)
        _check_client(client, model_name)
        super().__init__(
            _InferenceWorker,
            args=(
                client,
                model_name,
                sequence_id,
                emit,
                max_pending,
                result_timeout_s,
                dict(client_kwargs or {}),
            ),
            name=name if name is not None else f"inference:{model_name}" if model_name else "inference",
            output=output,
            capacity=capacity,
            copy=copy,
        )
