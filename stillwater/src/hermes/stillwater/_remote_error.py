"""Carry an exception, with its traceback, from a stage process to the parent (tblib)."""

from __future__ import annotations

import pickle
import traceback

from tblib import pickling_support

from hermes.stillwater.exceptions import StageFailed, StillwaterError

__all__ = ["RemoteError", "dump_exception", "load_exception", "stage_failure"]


class RemoteError(StillwaterError):
    """Stands in for a child exception that could not be pickled; holds its formatted traceback."""

    def __init__(self, type_name: str, message: str, formatted: str) -> None:
        super().__init__(f"{type_name}: {message}\n\nchild traceback:\n{formatted}")
        self.type_name = type_name
        self.formatted = formatted

    def __reduce__(self) -> tuple[type[RemoteError], tuple[str, str, str]]:
        return RemoteError, (self.type_name, str(self.args[0]), self.formatted)


def dump_exception(exc: BaseException) -> bytes:
    """Pickle ``exc`` with its traceback (and chained exceptions) for another process.

    An exception that cannot cross keeps its place in the chain as a :class:`RemoteError`
    stand-in, so the exceptions around it keep their types: an aeriel ``ConnectionFailed``
    raised ``from`` a tritonclient error (which does not unpickle) still arrives as
    ``ConnectionFailed``, with the tritonclient error as a stand-in ``__cause__``.
    """
    try:
        return _round_trip(exc)
    except Exception:
        pass
    _replace_unpicklable_links(exc)
    try:
        return _round_trip(exc)
    except Exception:
        return pickle.dumps(_stand_in(exc))


def _round_trip(exc: BaseException) -> bytes:
    pickling_support.install(exc)
    data = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
    pickle.loads(data)  # an exception whose __init__ wants other args fails here, not in the parent
    return data


def _stand_in(exc: BaseException) -> RemoteError:
    formatted = "".join(traceback.format_exception(exc))
    return RemoteError(type(exc).__qualname__, str(exc), formatted)


def _crosses_alone(exc: BaseException) -> bool:
    """Whether ``exc`` itself (its type, args and attributes, not its chain) survives pickling."""
    try:
        cls, args, state = pickle.loads(pickle.dumps((type(exc), exc.args, getattr(exc, "__dict__", {}))))
        cls(*args).__dict__.update(state)
    except Exception:
        return False
    return True


def _replace_unpicklable_links(exc: BaseException) -> None:
    """Swap every chained exception that cannot cross for a :class:`RemoteError` stand-in."""
    seen: set[int] = set()
    node: BaseException | None = exc
    todo = [exc]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for attr in ("__cause__", "__context__"):
            linked = getattr(node, attr)
            if linked is None:
                continue
            if not _crosses_alone(linked):
                stand_in = _stand_in(linked)
                setattr(node, attr, stand_in)
                if attr == "__context__":
                    node.__suppress_context__ = node.__suppress_context__ or node.__cause__ is not None
            else:
                todo.append(linked)


def load_exception(data: bytes) -> BaseException:
    """Rebuild an exception pickled by :func:`dump_exception`, traceback included."""
    exc = pickle.loads(data)
    if not isinstance(exc, BaseException):  # pragma: no cover - protocol misuse
        raise TypeError(f"expected a pickled exception, got {type(exc).__name__}")
    return exc


_FAILURE_TYPES: dict[type[BaseException], type[StageFailed]] = {}


def stage_failure(message: str, *, stage: str, cause: BaseException) -> StageFailed:
    """The :class:`StageFailed` for a child's ``cause``, an instance of the cause's type too.

    ``except StageFailed`` and ``except ConnectionFailed`` (the child's own type) both catch
    it, and the cause's attributes are copied on. Types that cannot be combined (an
    incompatible layout or ``__str__``) give a plain :class:`StageFailed`; the cause is
    ``__cause__`` either way.
    """
    kind = type(cause)
    if isinstance(cause, Exception) and not isinstance(cause, StillwaterError):
        combined = _FAILURE_TYPES.get(kind)
        if combined is None:
            try:
                combined = type(
                    f"StageFailed[{kind.__qualname__}]", (StageFailed, kind), {"__module__": __name__}
                )
            except TypeError:
                combined = StageFailed
            _FAILURE_TYPES[kind] = combined
        try:
            failure = combined(message, stage=stage)
            if str(failure) == message:
                failure.__dict__.update({k: v for k, v in vars(cause).items() if k != "stage"})
                return failure
        except Exception:
            _FAILURE_TYPES[kind] = StageFailed
    return StageFailed(message, stage=stage)
