"""Pipeline: stages chained with ``>>``, one process each, supervised by the parent.

```
 parent process (the owner)                         stage processes (spawn)
 ┌─────────────────────────────────┐
 │ Pipeline                        │  Channel 0          Channel 1          Channel 2
 │  creates channels (one shared-  │ ┌────────┐  ring     ┌─────┐  ring     ┌──────┐  ring
 │  memory ring each), counters;   │ │ Source │─────────▶│ Map │─────────▶│ Map  │──────────┐
 │  unlinks every segment at close │ └────────┘          └─────┘          └──────┘          │
 │                                 │     │ status pipe      │                 │             │
 │  supervisor thread (while       │◀────┴──────────────────┴─────────────────┘             │
 │   iterating) / join():          │  done | error (tblib) | stopped | closed               │
 │    select(status pipes, process │                                                        │
 │    sentinels); a failure        │                                                        │
 │    interrupts the main thread ──┼─▶ main thread: sem_wait on the output ring ◀───────────┘
 │  LogForwarder thread ◀──────────┼── every stage's log records (one pipe + lock)
 │  lifeline pipe (write end) ─────┼──▶ each stage's parent-watch thread: EOF ⇒ SIGTERM to self
 └─────────────────────────────────┘
```

Duties:

* **Parent**: owns every shared-memory segment (creates and unlinks), watches the stages,
  turns the first failure into :class:`StageFailed` (child traceback as ``__cause__``) or
  :class:`StageDied` (exit code), and on any error, ``KeyboardInterrupt`` or SIGTERM stops
  every stage: it closes the lifeline, waits ``stop_timeout_s``, then terminates and kills
  what is left, and joins every process (no zombies).
* **Stages**: run the user's code between two channels; at the end of their input they
  flush, send the end-of-stream marker and report ``done``, so a finished source drains the
  whole pipeline in order.
* **Channels**: bounded (``capacity`` items), so a fast source blocks instead of filling
  memory; every item travels through the channel's shared-memory ring (see
  :mod:`hermes.stillwater.channel`); a stage waits on a semaphore, so waiting costs no CPU.
* **Parent while iterating**: the main thread waits on the output ring's semaphore; a
  supervisor thread watches the stages and, on the first failure, closes the lifeline
  (SIGTERM to every stage, which ends their semaphore waits) and interrupts the main
  thread's wait, which then raises the failure.

Start method: ``spawn`` by default (never ``fork`` of a parent that may run threads);
``forkserver`` is accepted. ``fork`` is refused.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import pickle
import re
import selectors
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from hermes.stillwater._logging import LogForwarder, logger_levels
from hermes.stillwater._remote_error import load_exception, stage_failure
from hermes.stillwater._worker import stage_main
from hermes.stillwater.channel import Channel, EndOfStream
from hermes.stillwater.exceptions import (
    ChannelClosed,
    PipelineDefinitionError,
    PipelineError,
    PipelineStateError,
    PipelineTimeout,
    StageDied,
)
from hermes.stillwater.progress import PipelineProgress
from hermes.stillwater.stage import Sink, Source, Stage
from hermes.stillwater.stats import StageCounters, StageStats

__all__ = ["Pipeline"]

logger = logging.getLogger("hermes.stillwater.pipeline")

_START_METHODS = ("spawn", "forkserver")


class Pipeline:
    """Stages run in their own processes, linked by bounded channels.

    Build one with ``>>`` (``Source(...) >> Map(...) >> Sink(...)``) or from a list. Use it
    as a context manager: entering starts every stage; leaving normally waits for a
    pipeline that ends in a :class:`Sink` to finish, otherwise stops the stages; leaving
    with an exception (``KeyboardInterrupt`` included) stops them. A pipeline whose last
    stage is not a sink is iterated in the parent for its outputs.

    Args:
        stages: the stages, a :class:`Source` first; a :class:`Sink`, if any, last.
        start_method: ``"spawn"`` (default) or ``"forkserver"``.
        stop_timeout_s: how long (s) stopping waits for stages to tear down before
            terminating, then killing, them.
        join_timeout_s: how long (s) leaving the ``with`` block waits for a sink-ended
            pipeline to finish; ``None`` waits as long as it runs.
        handle_sigterm: while running (in the main thread), SIGTERM to the parent stops the
            pipeline cleanly and then exits with status 143.
        progress: ``True`` draws a live table of per-stage counts, rates and source lag on
            stderr (needs ``rich``); a ``rich.console.Console`` draws on that console.

    Example:
        >>> with Source(range(5)) >> Map(square) as pipeline:  # doctest: +SKIP
        ...     print(list(pipeline))
        [0, 1, 4, 9, 16]
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        start_method: str = "spawn",
        stop_timeout_s: float = 10.0,
        join_timeout_s: float | None = None,
        handle_sigterm: bool = True,
        progress: bool | Any = False,
    ) -> None:
        stages = list(stages)
        if not stages:
            raise PipelineDefinitionError("a pipeline needs at least one stage, got none")
        for i, stage in enumerate(stages):
            if not isinstance(stage, Stage):
                raise PipelineDefinitionError(f"stage {i} must be a Stage, got {type(stage).__name__}")
            if isinstance(stage, Source) and i > 0 and not isinstance(stages[i - 1], Source):
                raise PipelineDefinitionError(
                    f"a Source must be the first stage (use merge() for several); "
                    f"{stage.name!r} follows {stages[i - 1].name!r}"
                )
            if isinstance(stage, Sink) and i < len(stages) - 1:
                raise PipelineDefinitionError(
                    f"a Sink must be the last stage; {stages[i + 1].name!r} follows sink {stage.name!r}"
                )
        if start_method not in _START_METHODS:
            raise PipelineDefinitionError(
                f"start_method must be one of {_START_METHODS} (fork is unsafe with threads), got {start_method!r}"
            )
        if not stop_timeout_s > 0:
            raise PipelineDefinitionError(f"stop_timeout_s must be > 0, got {stop_timeout_s!r}")
        # Leading sources all feed the first channel (fan-in).
        n_sources = 0
        while n_sources < len(stages) and isinstance(stages[n_sources], Source):
            n_sources += 1
        outputs = {stages[j].output for j in range(n_sources)}
        if len(outputs) > 1:
            raise PipelineDefinitionError(
                f"merged sources must share one output ArraySpec, got {sorted(map(repr, outputs))}"
            )
        self.stages = stages
        self._n_sources = n_sources
        self.start_method = start_method
        self.stop_timeout_s = stop_timeout_s
        self.join_timeout_s = join_timeout_s
        self.handle_sigterm = handle_sigterm
        self.progress = progress
        self._progress: PipelineProgress | None = None
        self._state = "new"
        self._procs: list[BaseProcess] = []
        self._status: list[Connection] = []
        self._reported: list[str | None] = []
        self._exited: list[bool] = []
        self._channels: list[Channel] = []
        self._output: Channel | None = None
        self._output_done = False
        self._iterating = False
        self._counters: StageCounters | None = None
        self._forwarder: LogForwarder | None = None
        self._lifeline: Connection | None = None
        self._failure: BaseException | None = None
        self._fail_lock = threading.Lock()
        self._secondary: str | None = None
        self._old_sigterm: Any = None
        self._pids: list[int | None] = []
        self._selector: selectors.BaseSelector | None = None
        self._segments: list[str] = []
        self._supervisor: threading.Thread | None = None
        self._supervisor_wake: tuple[int, int] | None = None
        self._supervisor_stop = False

    # ----------------------------------------------------------------------------- building
    def _options(self) -> dict[str, Any]:
        return {
            "start_method": self.start_method,
            "stop_timeout_s": self.stop_timeout_s,
            "join_timeout_s": self.join_timeout_s,
            "handle_sigterm": self.handle_sigterm,
            "progress": self.progress,
        }

    def __rshift__(self, other: Stage | Pipeline) -> Pipeline:
        if self._state != "new" or (isinstance(other, Pipeline) and other._state != "new"):
            raise PipelineStateError("only pipelines that have not started can be chained")
        if isinstance(other, Stage):
            right = [other]
        elif isinstance(other, Pipeline):
            right = other.stages
        else:
            return NotImplemented
        if isinstance(right[0], Source):
            raise PipelineDefinitionError(
                f"a Source must be the first stage; {right[0].name!r} cannot follow {self.stages[-1].name!r} "
                "(to combine sources use merge(a, b))"
            )
        return Pipeline([*self.stages, *right], **self._options())

    @classmethod
    def merge(cls, *sources: Source, **options: Any) -> Pipeline:
        """Several sources, each in its own process, feeding the next stage through one channel.

        Each source's items keep their order; items of different sources interleave as they
        come. The stream ends after every source ended. Sources must share one ``output``
        spec; the channel holds the largest of their ``capacity``.

        Args:
            sources: two or more :class:`Source` stages.
            options: :class:`Pipeline` options.
        """
        if not sources or not all(isinstance(s, Source) for s in sources):
            raise PipelineDefinitionError(
                f"merge takes Source stages, got {[type(s).__name__ for s in sources]}"
            )
        return cls(list(sources), **options)

    def __rrshift__(self, other: Stage) -> Pipeline:
        if not isinstance(other, Stage):
            return NotImplemented
        return Pipeline([other]) >> self

    def __repr__(self) -> str:
        return f"Pipeline({' >> '.join(s.name for s in self.stages)}, state={self._state})"

    @property
    def names(self) -> list[str]:
        """Stage names in order."""
        return [s.name for s in self.stages]

    @property
    def pids(self) -> list[int | None]:
        """Process ids of the stages (``None`` before start)."""
        return list(self._pids) if self._pids else [None] * len(self.stages)

    @property
    def shm_names(self) -> list[str]:
        """Names of the shared-memory segments this pipeline creates (and unlinks at close)."""
        return list(self._segments)

    # ----------------------------------------------------------------------------- running
    def start(self) -> Pipeline:
        """Start every stage process.

        Raises:
            PipelineStateError: the pipeline already started or was closed.
            PipelineDefinitionError: the first stage is not a Source.
        """
        if self._state != "new":
            raise PipelineStateError(f"a pipeline starts once; this one is {self._state}")
        if self._n_sources == 0:
            raise PipelineDefinitionError(
                f"the first stage must be a Source, got {type(self.stages[0]).__name__} {self.stages[0].name!r}"
            )
        _check_main_guard()
        self._state = "running"
        ctx: Any = mp.get_context(self.start_method)
        try:
            self._counters = StageCounters(len(self.stages))
            self._forwarder = LogForwarder(ctx)
            lifeline_r, self._lifeline = ctx.Pipe(duplex=False)
            self._open_channels(ctx)
            levels = logger_levels()
            for i, stage in enumerate(self.stages):
                self._start_stage(ctx, i, stage, lifeline_r, levels)
            self._release_parent_ends(lifeline_r)
            self._watch_stages()
            logger.debug("started %r with pids %s", self, self.pids)
        except BaseException:
            self.close()
            raise
        return self

    def _open_channels(self, ctx: Any) -> None:
        """Channel 0 joins the k sources to stage k; channel j > 0 leaves stage k + j - 1."""
        n, k = len(self.stages), self._n_sources
        self._channels.append(
            Channel(
                ctx,
                capacity=max(s.capacity for s in self.stages[:k]),
                spec=self.stages[0].output,
                copy=self.stages[k].copy if k < n else True,
                writers=k,
            )
        )
        for i in range(k, n):
            if self.stages[i].has_output:
                copy = self.stages[i + 1].copy if i + 1 < n else True
                spec = self.stages[i].output
                self._channels.append(Channel(ctx, capacity=self.stages[i].capacity, spec=spec, copy=copy))
        if self.stages[-1].has_output:
            self._output = self._channels[-1]
        assert self._counters is not None  # made by start() first
        self._segments = [c.shm_name for c in self._channels]
        self._segments.append(self._counters.name)

    def _start_stage(self, ctx: Any, i: int, stage: Stage, lifeline_r: Any, levels: Any) -> None:
        """Start stage ``i`` in its own process, wired to its channels, status pipe and lifeline."""
        assert self._forwarder is not None  # made by start() first
        k = self._n_sources
        inbox = self._channels[i - k].receiver if i >= k else None
        outbox = self._channels[max(0, i - k + 1)].sender if stage.has_output else None
        status_r, status_w = ctx.Pipe(duplex=False)
        args = (stage, i, inbox, outbox, status_w, lifeline_r, self._forwarder.sink, levels, self._counters)
        proc = ctx.Process(
            target=stage_main, args=args, name=f"hermes-stillwater[{i}]:{stage.name}", daemon=True
        )
        self._status.append(status_r)
        self._reported.append(None)
        self._exited.append(False)
        try:
            proc.start()
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise PipelineDefinitionError(
                f"stage {i} {stage.name!r} cannot be sent to its process ({exc}): stage functions "
                "and classes must be importable (defined at module level) and their arguments picklable"
            ) from exc
        finally:
            status_w.close()  # the stage holds its own copy
        self._procs.append(proc)
        self._pids.append(proc.pid)

    def _release_parent_ends(self, lifeline_r: Any) -> None:
        """The stages hold their ends now: drop the parent's copies so a vanished peer reads as EOF."""
        for channel in self._channels:
            channel.sender.close()
            if channel is not self._output:
                channel.receiver.close()
        lifeline_r.close()
        assert self._forwarder is not None  # made by start() first
        self._forwarder.release_writer()

    def _watch_stages(self) -> None:
        """Select on every stage's status pipe and exit; SIGTERM handling; the progress display."""
        self._selector = selectors.DefaultSelector()
        for i, proc in enumerate(self._procs):
            self._selector.register(self._status[i], selectors.EVENT_READ, ("status", i))
            self._selector.register(proc.sentinel, selectors.EVENT_READ, ("exit", i))
        self._install_sigterm()
        if self.progress is not False and self.progress is not None:
            console = None if self.progress is True else self.progress
            self._progress = PipelineProgress(self, console=console)

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        try:
            if exc_type is None and self._state == "running":
                if self._output is None:
                    self.join(self.join_timeout_s)
                elif not self._output_done:
                    logger.debug("closing %r before its output was consumed: stopping the stages", self)
        finally:
            self.close()

    def __iter__(self) -> Iterator[Any]:
        """Yield the last stage's outputs in order until the end of the stream.

        Raises:
            StageFailed, StageDied: a stage failed; the pipeline is stopped.
            PipelineStateError: not running, already iterated, or the last stage is a Sink.
        """
        if self._state != "running":
            raise PipelineStateError(f"start the pipeline before iterating (it is {self._state})")
        if self._output is None:
            raise PipelineStateError("the pipeline ends in a Sink: there is nothing to iterate; use join()")
        if self._iterating or self._output_done:
            raise PipelineStateError("a pipeline's output can be iterated once")
        self._iterating = True
        return self._iterate(self._output)

    def _iterate(self, output: Channel) -> Iterator[Any]:
        # The main thread waits on the output ring's semaphore; the supervisor thread watches
        # the stages meanwhile and, on a failure, aborts every channel, which wakes it.
        receiver = output.receiver
        self._start_supervisor()
        try:
            while True:
                try:
                    item = receiver.recv()
                except EndOfStream:
                    self._output_done = True
                    break
                except ChannelClosed:
                    self._stop_supervisor()
                    self._await_cause()
                    raise
                if self._failure is not None:
                    break
                yield item
        finally:
            self._stop_supervisor()
        self._raise_failure()
        self.join(self.join_timeout_s)

    def join(self, timeout_s: float | None = None) -> None:
        """Wait until every stage has finished its stream.

        Args:
            timeout_s: seconds to wait at most; ``None`` waits as long as it runs.

        Raises:
            StageFailed: a stage raised (its exception, with the child traceback, is ``__cause__``).
            StageDied: a stage process ended without reporting (e.g. killed), with its exit code.
            PipelineTimeout: ``timeout_s`` passed first (the pipeline keeps running).
            PipelineStateError: the pipeline is not running, or its output is not consumed yet.
        """
        _check_timeout(timeout_s)
        if self._state != "running":
            raise PipelineStateError(f"join needs a running pipeline (it is {self._state})")
        if self._output is not None and not self._output_done:
            raise PipelineStateError(
                "the pipeline's output is not consumed: iterate over it instead of join()"
            )
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not all(self._exited):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise PipelineTimeout(f"the pipeline did not finish within {timeout_s} s")
            self._poll(remaining)
            self._raise_failure()
        self._raise_failure()

    def run(self, timeout_s: float | None = None) -> list[Any]:
        """Start, run to the end and close; returns the outputs (empty when it ends in a Sink).

        Args:
            timeout_s: seconds the whole run may take (``None``: as long as it runs). Past
                it, every stage is stopped and :class:`PipelineTimeout` is raised, whether
                the pipeline ends in a Sink or its outputs are collected here.

        Raises:
            PipelineTimeout: the run took longer than ``timeout_s``.
            ValueError: ``timeout_s`` is not None or a positive number (before anything starts).
        """
        _check_timeout(timeout_s)
        with self:
            if self._output is None:
                self.join(timeout_s)
                return []
            if timeout_s is None:
                return list(self)
            expired = PipelineTimeout(f"the pipeline did not finish within {timeout_s} s")
            timer = threading.Timer(timeout_s, self._fail, args=(expired,))
            timer.name = "hermes-stillwater-run-timeout"
            timer.daemon = True
            timer.start()
            try:
                return list(self)
            finally:
                timer.cancel()
                timer.join()

    def stats(self) -> list[StageStats]:
        """Per-stage counters (items in/out, source lag), readable while running."""
        if self._counters is None or self._counters.table is None:
            raise PipelineStateError("stats are available while the pipeline runs")
        return self._counters.snapshot(self.names)

    # ----------------------------------------------------------------------------- supervision
    def _start_supervisor(self) -> None:
        """Watch the stages from a thread while the main thread waits on the output ring.

        Until :meth:`_stop_supervisor` joins it, the thread is the only caller of :meth:`_poll`.
        """
        assert self._selector is not None and self._supervisor is None
        self._supervisor_stop = False
        self._supervisor_wake = os.pipe()
        self._selector.register(self._supervisor_wake[0], selectors.EVENT_READ, ("wake", -1))
        self._supervisor = threading.Thread(target=self._supervise, name="hermes-stillwater-supervisor")
        self._supervisor.start()

    def _supervise(self) -> None:
        try:
            while not self._supervisor_stop and self._failure is None:
                self._poll(None)
        except BaseException as exc:  # pragma: no cover - a bug here must not hang the main thread
            self._fail(PipelineError(f"the pipeline's supervisor thread failed: {exc!r}"))

    def _stop_supervisor(self) -> None:
        """Stop and join the supervisor thread (idempotent)."""
        if self._supervisor is None:
            return
        assert self._supervisor_wake is not None
        self._supervisor_stop = True
        os.write(self._supervisor_wake[1], b"x")
        self._supervisor.join()
        self._supervisor = None
        self._unwatch(self._supervisor_wake[0])
        for fd in self._supervisor_wake:
            os.close(fd)
        self._supervisor_wake = None

    def _poll(self, timeout_s: float | None) -> None:
        """Wait up to ``timeout_s`` for stage events and handle them."""
        assert self._selector is not None
        reports: list[int] = []
        exits: list[int] = []
        for key, _ in self._selector.select(timeout_s):
            kind, i = key.data
            if kind == "status":
                reports.append(i)
            elif kind == "exit":
                exits.append(i)
        for i in sorted(reports):
            if self._reported[i] is None:
                self._read_status(i)
        for i in sorted(exits):
            proc = self._procs[i]
            self._unwatch(proc.sentinel)
            proc.join()
            self._exited[i] = True
            if self._reported[i] is None and self._status[i].poll():
                self._read_status(i)
            if self._reported[i] is None:
                self._reported[i] = "died"
                self._unwatch(self._status[i])
                code = proc.exitcode
                how = f" (signal {-code})" if code is not None and code < 0 else ""
                self._fail(
                    StageDied(
                        f"stage {i} {self.stages[i].name!r} (pid {proc.pid}) died with exit code {code}{how}",
                        stage=self.stages[i].name,
                        exitcode=code,
                    )
                )
        if self._secondary is not None and self._failure is None and all(self._exited):
            self._fail(PipelineError(self._secondary))

    def _unwatch(self, fileobj: Any) -> None:
        if self._selector is not None:
            try:
                self._selector.unregister(fileobj)
            except (KeyError, ValueError):
                pass

    def _read_status(self, i: int) -> None:
        name = self.stages[i].name
        try:
            kind, payload = self._status[i].recv()
        except (EOFError, OSError):
            self._unwatch(self._status[i])
            return  # no report: the sentinel decides (died)
        self._reported[i] = kind
        self._unwatch(self._status[i])
        if kind == "error":
            assert isinstance(payload, bytes)
            cause = load_exception(payload)
            failure = stage_failure(
                f"stage {i} {name!r} raised {type(cause).__name__}: {cause}", stage=name, cause=cause
            )
            failure.__cause__ = cause
            self._fail(failure)
        elif kind == "stopped" and self._state == "running":
            self._fail(
                StageDied(
                    f"stage {i} {name!r} (pid {self._procs[i].pid}) was stopped by SIGTERM from outside the pipeline",
                    stage=name,
                    exitcode=self._procs[i].exitcode,
                )
            )
        elif kind == "closed":
            self._secondary = f"stage {i} {name!r} lost a neighbour: {payload}"

    def _fail(self, exc: BaseException) -> None:
        with self._fail_lock:  # the supervisor and a run() timer may both fail the pipeline
            if self._failure is not None:
                return
            self._failure = exc
        logger.debug("pipeline failed: %s; stopping the stages", exc)
        if self._lifeline is not None:
            self._lifeline.close()  # SIGTERM to every stage: a wait on a ring ends in EINTR
        if self._output is not None:
            self._output.receiver.interrupt()  # wakes the parent's own wait on the output ring

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _await_cause(self) -> None:
        deadline = time.monotonic() + self.stop_timeout_s
        while self._failure is None and not all(self._exited):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._poll(remaining)
        self._raise_failure()

    # ----------------------------------------------------------------------------- signals
    def _install_sigterm(self) -> None:
        if self.handle_sigterm and threading.current_thread() is threading.main_thread():
            self._old_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        logger.warning("SIGTERM: stopping the pipeline")
        raise SystemExit(128 + signal.SIGTERM)  # leaves like sys.exit(143), after a clean shutdown

    def _restore_sigterm(self) -> None:
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    # ----------------------------------------------------------------------------- closing
    def close(self) -> None:
        """Stop every stage still running, join all processes and unlink all segments (idempotent)."""
        if self._state == "closed":
            return
        self._state = "closing"
        try:
            self._stop_supervisor()
            if self._lifeline is not None:
                self._lifeline.close()  # every stage's parent-watch sends it SIGTERM
            deadline = time.monotonic() + self.stop_timeout_s
            for proc in self._procs:
                proc.join(max(0.0, deadline - time.monotonic()))
            if any(proc.is_alive() for proc in self._procs):
                # A straggler may wait on a ring with SIGTERM already spent (in its teardown):
                # closing the channels wakes it with ChannelClosed before it gets terminated.
                for channel in self._channels:
                    channel.abort()
            for proc in self._procs:
                if proc.is_alive():
                    logger.warning(
                        "stage process %s did not stop in %s s: terminating", proc.name, self.stop_timeout_s
                    )
                    proc.terminate()
                    proc.join(1.0)
            for proc in self._procs:
                if proc.is_alive():
                    logger.warning("stage process %s ignored SIGTERM: killing", proc.name)
                    proc.kill()
                    proc.join()
            for proc in self._procs:
                proc.close()
        finally:
            if self._progress is not None:
                self._progress.close()
                self._progress = None
            if self._selector is not None:
                self._selector.close()
                self._selector = None
            for channel in self._channels:
                channel.close()
            for conn in self._status:
                conn.close()
            if self._counters is not None:
                self._counters.close()
            if self._forwarder is not None:
                self._forwarder.close()
            self._restore_sigterm()
            # Drop every reference to semaphores and pipes so their names are unlinked now.
            self._procs, self._channels, self._status = [], [], []
            self._output = self._forwarder = self._lifeline = self._counters = None
            self._state = "closed"


def _check_timeout(timeout_s: float | None) -> None:
    """Refuse a timeout that is not None or a positive finite number of seconds."""
    if timeout_s is None:
        return
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not 0 < timeout_s < float("inf")
    ):
        raise ValueError(f"timeout_s must be None or a positive number of seconds, got {timeout_s!r}")


_GUARD = re.compile(r"""__name__\s*==\s*["']__main__["']""")


def _check_main_guard() -> None:
    """Refuse to start from a main script that spawn would run again in every stage process.

    ``spawn`` and ``forkserver`` start each stage by importing the parent's main module
    (as ``__mp_main__``). Without an ``if __name__ == "__main__":`` guard that import runs the
    script's pipeline again inside the stage, where starting processes fails, and the stage
    dies before its first item with nothing but exit status 1 in the parent.
    """
    if getattr(mp.process.current_process(), "_inheriting", False):
        raise PipelineDefinitionError(
            "a stage process is running the main script again while it starts (spawn imports the main "
            'module): put the code that builds and runs the pipeline under if __name__ == "__main__":'
        )
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or not str(path).endswith(".py"):
        return  # an interactive session, python -c, or a frozen program: nothing is re-imported
    try:
        source = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    if not _GUARD.search(source):
        raise PipelineDefinitionError(
            f'the main script {path} has no if __name__ == "__main__": guard; every stage process imports it '
            "again (multiprocessing spawn) and would start the pipeline a second time. Put the code that builds "
            'and runs the pipeline under if __name__ == "__main__":'
        )
