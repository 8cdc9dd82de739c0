"""Stage, Source, Map, Sink: what one pipeline process does.

A stage object is a picklable description. The pipeline starts one process per stage and
calls the stage's ``run`` there, so functions and classes must be importable by reference
(defined at module level), and iterables given to a :class:`Source` must be picklable.
Classes given to :class:`Source`, :class:`Map` or :class:`Sink` are instantiated **inside the
stage process**, where their optional ``setup()``, ``flush()`` and ``teardown()`` also run:
open files, sockets, clients or GPU contexts there.
"""

from __future__ import annotations

import inspect
import logging
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hermes.stillwater.array_spec import ArraySpec
from hermes.stillwater.channel import EndOfStream, Receiver, Sender
from hermes.stillwater.exceptions import PipelineDefinitionError
from hermes.stillwater.throttle import Throttle

if TYPE_CHECKING:
    from hermes.stillwater.pipeline import Pipeline
    from hermes.stillwater.stats import StageCounters

__all__ = ["Map", "Sink", "Source", "Stage"]

logger = logging.getLogger("hermes.stillwater.stage")

DEFAULT_CAPACITY = 8


def _describe(target: object) -> str:
    return getattr(target, "__qualname__", None) or type(target).__qualname__


def _check_capacity(capacity: object) -> int:
    if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
        raise PipelineDefinitionError(f"capacity must be an int >= 1, got {capacity!r}")
    return capacity


def _check_output(output: object) -> ArraySpec | None:
    if output is not None and not isinstance(output, ArraySpec):
        raise PipelineDefinitionError(f"output must be an ArraySpec or None, got {output!r}")
    return output


class _Worker:
    """A user class instantiated in the stage process, with its optional hooks."""

    def __init__(self, cls: type, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        self.obj = cls(*args, **kwargs)

    def hook(self, name: str) -> Any:
        fn = getattr(self.obj, name, None)
        return fn() if fn is not None else None


class Stage:
    """Base of the three stage kinds; use :class:`Source`, :class:`Map` or :class:`Sink`.

    Args:
        name: shown in errors, logs and stats; defaults to the kind and the target's name.
        output: shape and dtype of the arrays this stage emits through shared memory
            (``None``: everything it emits is pickled).
        capacity: items in flight at most between this stage and the next.
        copy: how arrays arrive from upstream: ``True`` gives an owned copy; ``False`` a
            read-only view into shared memory, valid until the function returns.
    """

    kind = "stage"
    has_input = True
    has_output = True

    def __init__(
        self,
        target: Any,
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        output: ArraySpec | None = None,
        capacity: int = DEFAULT_CAPACITY,
        copy: bool = True,
    ) -> None:
        self.target = target
        if isinstance(args, str | bytes) or not isinstance(args, Sequence):
            raise PipelineDefinitionError(
                f"args must be a tuple of positional arguments, got {args!r}; write args=({args!r},)"
            )
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.name = name if name is not None else f"{self.kind}:{_describe(target)}"
        self.output = _check_output(output)
        self.capacity = _check_capacity(capacity)
        self.copy = bool(copy)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def __rshift__(self, other: Stage | Pipeline) -> Pipeline:
        from hermes.stillwater.pipeline import Pipeline

        return Pipeline([self]) >> other

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_pipeline", None)  # the parent's handle stays in the parent
        return state

    def __enter__(self) -> Pipeline:
        from hermes.stillwater.pipeline import Pipeline

        self._pipeline = Pipeline([self])
        return self._pipeline.__enter__()

    def __exit__(self, *exc_info: Any) -> None:
        self._pipeline.__exit__(*exc_info)

    def run(self, inbox: Receiver | None, outbox: Sender | None, counters: StageCounters, index: int) -> None:
        """Run the stage to the end of its stream (called in the stage process)."""
        raise NotImplementedError

    def _sender(self, outbox: Sender) -> Callable[[Any], None]:
        """``outbox.send``, checking each item against the declared ``output`` spec first."""
        spec, send = self.output, outbox.send
        if spec is None:
            return send

        def checked(item: Any) -> None:
            if not spec.matches(item):
                raise TypeError(
                    f"stage {self.name!r} declares output=ArraySpec(shape={spec.shape}, dtype={spec.dtype}) but "
                    f"emitted {_describe_item(item)}; emit arrays of exactly that shape and dtype, or leave "
                    "output= out to send any picklable item"
                )
            send(item)

        return checked

    def _worker(self) -> tuple[Callable[..., Any], _Worker | None]:
        if inspect.isclass(self.target):
            worker = _Worker(self.target, self.args, self.kwargs)
            return worker.obj, worker
        if self.args or self.kwargs:
            fn, args, kwargs = self.target, self.args, self.kwargs
            return (lambda item: fn(item, *args, **kwargs)), None
        return self.target, None


class Source(Stage):
    """The first stage: emits the items of an iterable, or of what a function returns.

    Args:
        target: a picklable iterable (a list, a range, …), or a callable returning an
            iterable, called in the stage process as ``target(*args, **kwargs)``: a generator
            function, or a class whose instances iterate (with optional ``setup``/``teardown``).
        args: positional arguments for a callable ``target``.
        kwargs: keyword arguments for a callable ``target``.
        rate_hz: emit at most this many items per second on a drift-free schedule
            (see :class:`Throttle`); ``None`` emits as fast as downstream accepts.
        max_lag_s: passed to the :class:`Throttle`.
        name: see :class:`Stage`.
        output: see :class:`Stage`.
        capacity: see :class:`Stage`.

    Example:
        >>> Source(read_frames, args=("/data/frames",), rate_hz=512.0)  # doctest: +SKIP
    """

    kind = "source"
    has_input = False

    def __init__(
        self,
        target: Iterable[Any] | Callable[..., Iterable[Any]],
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        rate_hz: float | None = None,
        max_lag_s: float | None = 1.0,
        output: ArraySpec | None = None,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        if isinstance(target, types.GeneratorType | Iterator):
            raise PipelineDefinitionError(
                f"Source got an iterator ({type(target).__name__}), which cannot move into a process; "
                "pass the generator function (and its args) or a list instead"
            )
        if not callable(target) and not isinstance(target, Iterable):
            raise PipelineDefinitionError(
                f"Source target must be an iterable or a callable returning one, got {type(target).__name__}"
            )
        if rate_hz is not None and not rate_hz > 0:
            raise PipelineDefinitionError(f"Source.rate_hz must be > 0 or None, got {rate_hz!r}")
        super().__init__(target, args=args, kwargs=kwargs, name=name, output=output, capacity=capacity)
        self.rate_hz = rate_hz
        self.max_lag_s = max_lag_s

    def run(self, inbox: Receiver | None, outbox: Sender | None, counters: StageCounters, index: int) -> None:
        assert outbox is not None
        send = self._sender(outbox)
        worker: _Worker | None = None
        if inspect.isclass(self.target):
            worker = _Worker(self.target, self.args, self.kwargs)
            worker.hook("setup")
            items: Iterable[Any] = worker.obj
        elif callable(self.target):
            items = self.target(*self.args, **self.kwargs)
        else:
            items = self.target
        try:
            throttle = Throttle(self.rate_hz, max_lag_s=self.max_lag_s) if self.rate_hz else None
            for item in items:
                if throttle is not None:
                    counters.set_lag(index, throttle.wait())
                send(item)
                counters.add(index, 1)
        finally:
            if worker is not None:
                worker.hook("teardown")


class Map(Stage):
    """A middle stage: transforms each item.

    Args:
        target: a function ``f(item, *args, **kwargs)`` whose return value is emitted (a
            generator function emits everything it yields, zero or more items per input);
            or a class instantiated in the stage process as ``target(*args, **kwargs)`` whose
            ``__call__(item)`` works the same way, with optional ``setup()``, ``flush()``
            (returns an iterable of last items, emitted at the end of the stream) and
            ``teardown()``.
        args: extra arguments (see ``target``).
        kwargs: extra arguments (see ``target``).
        name: see :class:`Stage`.
        output: see :class:`Stage`.
        capacity: see :class:`Stage`.
        copy: see :class:`Stage`.
    """

    kind = "map"

    def __init__(
        self,
        target: Callable[..., Any] | type,
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        output: ArraySpec | None = None,
        capacity: int = DEFAULT_CAPACITY,
        copy: bool = True,
    ) -> None:
        if not callable(target):
            raise PipelineDefinitionError(f"{type(self).__name__} target must be callable, got {target!r}")
        if inspect.isclass(target) and type.__call__ is getattr(target, "__call__", None):  # noqa: B004
            raise PipelineDefinitionError(f"{target.__qualname__} must define __call__(self, item)")
        super().__init__(
            target, args=args, kwargs=kwargs, name=name, output=output, capacity=capacity, copy=copy
        )
        call = target.__call__ if inspect.isclass(target) else target
        self._flat = inspect.isgeneratorfunction(call)

    def run(self, inbox: Receiver | None, outbox: Sender | None, counters: StageCounters, index: int) -> None:
        assert inbox is not None
        count = counters.add
        send = self._sender(outbox) if outbox is not None else None
        fn, worker = self._worker()
        if worker is not None:
            worker.hook("setup")
        try:
            while True:
                try:
                    item = inbox.recv()
                except EndOfStream:
                    break
                result = fn(item)
                if send is not None:
                    if self._flat:
                        for out in result:
                            send(out)
                            count(index, 1)
                    else:
                        send(result)  # first: the wake-up of the next stage is the latency of a hop
                        count(index, 1)
                else:
                    if self._flat:
                        for _ in result:
                            pass
                    count(index, 1)
                count(index, 0)
                inbox.release()
            if worker is not None:
                tail = worker.hook("flush")
                for out in tail or ():
                    if send is not None:
                        send(out)
                    count(index, 1)
        finally:
            if worker is not None:
                worker.hook("teardown")


class Sink(Map):
    """The last stage: consumes each item (return values are ignored).

    Args:
        target: a function ``f(item, *args, **kwargs)``, or a class instantiated in the
            stage process with ``__call__(item)`` and optional ``setup()``/``teardown()``
            (e.g. open the output file in ``setup``).
        args: see :class:`Map` and :class:`Stage`.
        kwargs: see :class:`Map` and :class:`Stage`.
        name: see :class:`Map` and :class:`Stage`.
        copy: see :class:`Map` and :class:`Stage`.
    """

    kind = "sink"
    has_output = False

    def __init__(
        self,
        target: Callable[..., Any] | type,
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        copy: bool = True,
    ) -> None:
        super().__init__(target, args=args, kwargs=kwargs, name=name, copy=copy)


def _describe_item(item: Any) -> str:
    """What a stage emitted, for an error message: an array's shape and dtype, else its type."""
    shape, dtype = getattr(item, "shape", None), getattr(item, "dtype", None)
    if shape is not None and dtype is not None:
        return f"a {type(item).__name__} of shape {tuple(shape)} and dtype {dtype}"
    text = repr(item)
    return f"a {type(item).__name__} ({text[:60] + '...' if len(text) > 60 else text})"
