"""InferenceStage: stream updates through a (stateful) Triton model with the aeriel client.

```
 inference stage process
 inbox ─▶ _InferenceWorker.__call__ ─▶ InferenceClient (one gRPC stream, opened in setup())
                │  holds back one plain update so the last one can carry END
                ▼
           deque of futures (≤ max_pending) ─▶ results emitted in send order ─▶ outbox
 end of stream: flush() sends the held update with END and waits for every result;
 teardown() closes the client.
```

The stage is a :class:`~hermes.stillwater.Map` whose worker opens its client inside the
stage process, so any client that follows the same ``sequence(id).send(...)`` shape works.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hermes.stillwater.array_spec import ArraySpec
from hermes.stillwater.stage import DEFAULT_CAPACITY, Map

__all__ = ["InferenceRequest", "InferenceStage"]

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


class _InferenceWorker:
    """Runs in the stage process: owns the client, the open sequences and the pending futures."""

    def __init__(self, url: str | Sequence[Any], model_name: str, sequence_id: int | str, emit: str, max_pending: int,
                 result_timeout_s: float, client_kwargs: Mapping[str, Any]) -> None:  # fmt: skip
        self.url = url
        self.model_name = model_name
        self.sequence_id = sequence_id
        self.emit = emit
        self.max_pending = max_pending
        self.result_timeout_s = result_timeout_s
        self.client_kwargs = dict(client_kwargs)
        self.client: Any = None
        self.sequences: dict[int | str, Any] = {}
        self.pending: collections.deque[Any] = collections.deque()
        self.held: Any = None

    def setup(self) -> None:
        client = _client_module()
        if isinstance(self.url, str):
            self.client = client.InferenceClient(self.url, self.model_name, **self.client_kwargs)
        else:  # several servers: streams pinned by hashing, rebuilt elsewhere when a server goes
            from hermes.aeriel.routing import RoutingClient

            self.client = RoutingClient(self.url, self.model_name, **self.client_kwargs)
        logger.info("inference stage connected to %s at %s", self.model_name, self.url)

    def _send(self, inputs: Any, sequence_id: int | str, end: bool, request_id: Any) -> None:
        seq = self.sequences.get(sequence_id)
        if seq is None:
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


class InferenceStage(Map):
    """A Map stage that streams updates through a Triton model and emits results in order.

    Each plain item (an array or ``{input: array}``) is the next update of the sequence
    ``sequence_id``; the stage holds back one update so that the last one, at the end of
    the stream, carries END. :class:`InferenceRequest` items name their own sequence and
    END flag and are sent at once. Results are emitted in the order the requests were sent,
    as soon as they are done; at most ``max_pending`` requests are outstanding (use 1 for
    the lowest latency on a real-time stream, more for throughput).

    Args:
        url: the server's gRPC endpoint, ``"host:port"``; or a list of endpoints (anything
            ``hermes.aeriel.routing.load_endpoints`` takes), served through a
            ``RoutingClient`` whose streams survive a lost or draining server.
        model_name: the (ensemble) model to stream through.
        sequence_id: the sequence of plain items.
        emit: ``"result"`` emits the client's result objects (``.outputs``, ``.timings``,
            ``.request_id``, ``.sequence_id``); ``"output"`` emits the single output array
            (can then use shared memory with ``output=ArraySpec(...)``).
        max_pending: requests outstanding at most before the stage waits for the oldest.
        result_timeout_s: longest wait (s) for one result.
        client_kwargs: passed to ``hermes.aeriel.client.InferenceClient`` (e.g.
            ``max_in_flight``, ``shared_memory``, ``timeout_s``), or to the ``RoutingClient``.
        name: see :class:`~hermes.stillwater.Stage`.
        output: see :class:`~hermes.stillwater.Stage`.
        capacity: see :class:`~hermes.stillwater.Stage`.
        copy: see :class:`~hermes.stillwater.Stage`.

    Raises:
        ImportError: hermes-aeriel is not installed (with the pip command to fix it).
    """

    kind = "inference"

    def __init__(
        self,
        url: str | Sequence[Any],
        model_name: str,
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
        if isinstance(sequence_id, bool) or not isinstance(sequence_id, int | str) or not sequence_id:
            raise ValueError(
                f"InferenceStage.sequence_id must be a positive int or a non-empty str (Triton's correlation id; "
                f"0 means no sequence), got {sequence_id!r}"
            )
        if isinstance(sequence_id, int) and not 0 < sequence_id < 2**64:
            raise ValueError(f"InferenceStage.sequence_id must be in 1..2**64-1, got {sequence_id}")
        several = isinstance(url, Sequence) and not isinstance(url, str | bytes)
        if not (isinstance(url, str) and url) and not (several and len(url) > 0):
            raise ValueError(
                f"InferenceStage.url must be the server's gRPC endpoint 'host:port' or a non-empty list "
                f"of endpoints (a RoutingClient), got {url!r}"
            )
        if not isinstance(model_name, str) or not model_name:
            raise ValueError(f"InferenceStage.model_name must be a non-empty str, got {model_name!r}")
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
        super().__init__(
            _InferenceWorker,
            args=(
                url,
                model_name,
                sequence_id,
                emit,
                max_pending,
                result_timeout_s,
                dict(client_kwargs or {}),
            ),
            name=name if name is not None else f"inference:{model_name}",
            output=output,
            capacity=capacity,
            copy=copy,
        )
