"""Carry an exception, with its traceback, from a stage process to the parent (tblib)."""

from __future__ import annotations

import pickle
import traceback

from tblib import pickling_support

from hermes.stillwater.exceptions import StillwaterError

__all__ = ["RemoteError", "dump_exception", "load_exception"]


class RemoteError(StillwaterError):
    """Stands in for a child exception that could not be pickled; holds its formatted traceback."""

    def __init__(self, type_name: str, message: str, formatted: str) -> None:
        super().__init__(f"{type_name}: {message}\n\nchild traceback:\n{formatted}")
        self.type_name = type_name
        self.formatted = formatted

    def __reduce__(self) -> tuple[type[RemoteError], tuple[str, str, str]]:
        return RemoteError, (self.type_name, str(self.args[0]), self.formatted)


def dump_exception(exc: BaseException) -> bytes:
    """Pickle ``exc`` with its traceback (and chained exceptions) for another process."""
    try:
        pickling_support.install(exc)
        data = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(data)  # an exception whose __init__ wants other args fails here, not in the parent
        return data
    except Exception:
        formatted = "".join(traceback.format_exception(exc))
        return pickle.dumps(RemoteError(type(exc).__qualname__, str(exc), formatted))


def load_exception(data: bytes) -> BaseException:
    """Rebuild an exception pickled by :func:`dump_exception`, traceback included."""
    exc = pickle.loads(data)
    if not isinstance(exc, BaseException):  # pragma: no cover - protocol misuse
        raise TypeError(f"expected a pickled exception, got {type(exc).__name__}")
    return exc
