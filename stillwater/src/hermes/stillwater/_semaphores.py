"""Unlink a multiprocessing semaphore's name as soon as its owner is done with it.

Under ``spawn`` and ``forkserver`` each ``multiprocessing`` semaphore or lock is a named POSIX
semaphore (``/dev/shm/sem.mp-*``) so that child processes can open it by name. multiprocessing
unlinks the name only when the Python object is garbage collected (a ``util.Finalize`` on it),
and a failed pipeline's exception traceback keeps the objects alive until the cycle collector
runs: ten failed pipelines left twelve names behind. The pipeline's owner calls
:func:`unlink_name` once every stage process has exited, which runs that same finalizer now
(once; collecting the object later does nothing more).
"""

from __future__ import annotations

from multiprocessing import util
from typing import Any

__all__ = ["unlink_name"]


def unlink_name(lock: Any) -> None:
    """Run the finalizer that unlinks ``lock``'s semaphore name (no-op when it has none or ran)."""
    if lock is None or getattr(getattr(lock, "_semlock", None), "name", None) is None:
        return
    registry = util._finalizer_registry  # type: ignore[attr-defined]  # the finalizers multiprocessing registered
    for finalizer in list(registry.values()):
        ref = getattr(finalizer, "_weakref", None)
        if ref is not None and ref() is lock:
            finalizer()
            return
