"""Batching, sequence control and implicit state around one framework call.

```
 execute(requests) ─┬─ expire idle sequences
                    ├─ null requests (READY = 0) ........ answered empty, no state touched
                    ├─ START → fresh state; no live state and no START → error response
                    ├─ waves: each sequence at most once per wave, request order kept
                    │    └─ groups of equal shapes → ONE run(feeds) per group
                    │         (batched: inputs and states concatenated along axis 0, outputs split back)
                    └─ state outputs replace the state; END drops it
```

Pure numpy: the framework is the ``run`` callable, ``{input name: array} -> {output name:
array}``, so all of this is tested in-process without a server.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np

from hermes.aeriel.backends._config import BackendConfig
from hermes.aeriel.backends._state import SequenceStates
from hermes.aeriel.exceptions import BackendRequestError

__all__ = ["BatchExecutor", "Request", "RunFunction"]

logger = logging.getLogger("hermes.aeriel.backends")

RunFunction = Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]
Result = dict[str, np.ndarray] | BackendRequestError


@dataclasses.dataclass(kw_only=True)
class Request:
    """One inference request as the executor sees it.

    Args:
        inputs: the configured inputs by name (control and state inputs left out);
            batched models: shape ``[batch, *dims]``.
        correlation_id: the sequence id (0 or "" for none).
        start: first request of its sequence.
        end: last request of its sequence.
        ready: ``False`` for the direct strategy's null requests (answered, not run).
    """

    inputs: dict[str, np.ndarray]
    correlation_id: Hashable = 0
    start: bool = False
    end: bool = False
    ready: bool = True


class BatchExecutor:
    """Runs Triton requests through one model call per batch, keeping implicit state.

    Args:
        config: the model configuration.
        run: the framework call, ``{input name: array} -> {output name: array}``; it
            receives the state inputs too and must return the state outputs.
        model_dir: the model folder (initial state data files live under it).
        clock: monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self,
        config: BackendConfig,
        run: RunFunction,
        *,
        model_dir: str | Path,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self.run = run
        self.output_names = [t.name for t in config.outputs]
        self._wanted = self.output_names + [s.output_name for s in config.states]
        self.states: SequenceStates | None = None
        if config.stateful:
            assert config.sequence is not None
            self.states = SequenceStates(
                config.states,
                model_dir=model_dir,
                batched=config.batched,
                max_idle_s=config.sequence.max_idle_us / 1e6,
                clock=clock,
            )
        self.calls = 0  # framework calls made, for statistics and tests

    # ------------------------------------------------------------------ public
    def execute(self, requests: Sequence[Request]) -> list[Result]:
        """Answer ``requests`` in order: output arrays by name, or the error of that request."""
        results: list[Result | None] = [None] * len(requests)
        if self.states is not None:
            self.states.expire()
        runnable: list[int] = []
        for index, request in enumerate(requests):
            if not request.ready:
                results[index] = {}
                continue
            if self.states is not None:
                cid = request.correlation_id
                if cid in (0, "", None):
                    results[index] = BackendRequestError(
                        f"model {self.config.name!r} keeps implicit state and needs a sequence id "
                        "(correlation id), got none"
                    )
                    continue
            runnable.append(index)
        for wave in self._waves(requests, runnable):
            self._run_wave(requests, wave, results)
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------ steps
    def _waves(self, requests: Sequence[Request], indices: list[int]) -> list[list[int]]:
        """Split so that a sequence appears at most once per wave, keeping its order."""
        if self.states is None:
            return [indices] if indices else []
        waves: list[list[int]] = []
        seen: dict[Hashable, int] = {}
        for index in indices:
            cid = requests[index].correlation_id
            wave = seen.get(cid, -1) + 1
            seen[cid] = wave
            if wave == len(waves):
                waves.append([])
            waves[wave].append(index)
        return waves

    def _run_wave(self, requests: Sequence[Request], wave: list[int], results: list[Result | None]) -> None:
        feeds_by_index: dict[int, dict[str, np.ndarray]] = {}
        for index in wave:
            request = requests[index]
            feeds = dict(request.inputs)
            if self.states is not None:
                cid = request.correlation_id
                if request.start:
                    self.states.start(cid)
                try:
                    feeds.update(self.states.get(cid))
                except BackendRequestError as exc:
                    results[index] = BackendRequestError(f"model {self.config.name!r}: {exc}")
                    continue
            feeds_by_index[index] = feeds
        for group in self._groups(feeds_by_index):
            self._run_group(requests, group, feeds_by_index, results)

    def _groups(self, feeds_by_index: dict[int, dict[str, np.ndarray]]) -> list[list[int]]:
        """Requests that can run as one call: all of them alike in shape (batched models)."""
        if not self.config.batched:
            return [[index] for index in feeds_by_index]
        groups: dict[tuple[object, ...], list[int]] = {}
        for index, feeds in feeds_by_index.items():
            key = tuple((name, a.shape[1:], a.dtype.str) for name, a in sorted(feeds.items()))
            groups.setdefault(key, []).append(index)
        return list(groups.values())

    def _run_group(
        self,
        requests: Sequence[Request],
        group: list[int],
        feeds_by_index: dict[int, dict[str, np.ndarray]],
        results: list[Result | None],
    ) -> None:
        names = list(feeds_by_index[group[0]])
        if len(group) == 1:
            feeds = feeds_by_index[group[0]]
            sizes = [_batch_size(feeds)] if self.config.batched else [0]
        else:
            sizes = [_batch_size(feeds_by_index[i]) for i in group]
            feeds = {name: np.concatenate([feeds_by_index[i][name] for i in group], axis=0) for name in names}
        try:
            outputs = dict(self.run(feeds))
            self.calls += 1
            missing = [n for n in self._wanted if n not in outputs]
            if missing:
                raise BackendRequestError(f"the model returned no output named {', '.join(missing)}")
        except Exception as exc:
            error = exc if isinstance(exc, BackendRequestError) else None
            message = f"model {self.config.name!r} failed: {type(exc).__name__}: {exc}"
            logger.warning(message)
            for index in group:
                results[index] = BackendRequestError(message) if error is None else error
            return
        offsets = [0]
        for size in sizes:
            offsets.append(offsets[-1] + size)
        total = offsets[-1]
        for position, index in enumerate(group):
            request = requests[index]
            if self.config.batched and len(group) > 1:
                lo, hi = offsets[position], offsets[position + 1]
                try:
                    mine = {name: _slice(outputs[name], lo, hi, total, name) for name in outputs}
                except BackendRequestError as exc:
                    results[index] = BackendRequestError(f"model {self.config.name!r}: {exc}")
                    continue
            else:
                mine = outputs
            if self.states is not None:
                cid = request.correlation_id
                try:
                    self.states.update(cid, mine)
                except BackendRequestError as exc:
                    results[index] = BackendRequestError(f"model {self.config.name!r}: {exc}")
                    self.states.end(cid)
                    continue
                if request.end:
                    self.states.end(cid)
            results[index] = {name: mine[name] for name in self.output_names}


def _batch_size(feeds: Mapping[str, np.ndarray]) -> int:
    for array in feeds.values():
        if array.ndim == 0:
            raise BackendRequestError("a batched model got a scalar input")
        return int(array.shape[0])
    return 1


def _slice(array: np.ndarray, lo: int, hi: int, total: int, name: str) -> np.ndarray:
    if array.ndim == 0 or array.shape[0] != total:
        raise BackendRequestError(
            f"output {name!r} has shape {list(np.shape(array))}; a batch of {total} needs it to start with {total}"
        )
    return array[lo:hi]
