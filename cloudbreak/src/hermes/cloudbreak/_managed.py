"""The life cycle shared by every cloud resource hermes creates: create on enter, delete on exit.

``__enter__`` routes SIGINT/SIGTERM/SIGHUP into exceptions, then creates; a failure (or a signal)
during creation deletes whatever was created before the error propagates. ``close()``
deletes unless the resource is kept, ignores signals while it runs, is idempotent, and
reports what it could not delete in a :class:`TeardownError`: subclasses retry transient
errors (:class:`CloudUnavailable`) with backoff, and any exception that still escapes their
``_delete`` is caught here and listed, so a teardown always runs to its end.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from contextlib import ExitStack
from types import TracebackType

from hermes.cloudbreak._teardown import signal_teardown, teardown_in_progress
from hermes.cloudbreak.exceptions import CloudbreakError, TeardownError

__all__ = ["ManagedResource"]

logger = logging.getLogger("hermes.cloudbreak")


class ManagedResource(ABC):
    """Base of the context managers that create cloud resources and guarantee their deletion.

    Args:
        keep: ``True`` leaves the resources alive on exit (an explicit opt-out).
    """

    def __init__(self, *, keep: bool = False):
        self.keep_on_exit = keep
        self._state = "new"
        self._signals = ExitStack()

    # -------------------------------------------------------- for subclasses
    @abstractmethod
    def _create(self) -> None:
        """Create the resources; record each one as soon as its creation was requested."""

    @abstractmethod
    def _delete(self) -> list[str]:
        """Delete what was created; return a description of each resource that could not be deleted."""

    @abstractmethod
    def describe(self) -> str:
        """A short description for logs and errors (``GKE cluster x in p/us-central1``)."""

    # -------------------------------------------------------- life cycle
    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._state == "closed"

    def keep(self) -> None:
        """Leave the resources alive when the context ends (e.g. after a successful ``cluster up``)."""
        self.keep_on_exit = True

    def __enter__(self) -> ManagedResource:
        if self._state != "new":
            raise CloudbreakError(f"{self.describe()} was already {self._state}; make a new one")
        self._state = "opening"
        self._signals.enter_context(signal_teardown())
        try:
            self._create()
        except BaseException:
            try:
                self.close()
            finally:
                self._signals.close()
            raise
        self._state = "open"
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.close()
        finally:
            self._signals.close()

    def close(self) -> None:
        """Delete the resources unless kept. Idempotent.

        Raises:
            TeardownError: something could not be deleted; ``leftovers`` names each resource.
        """
        if self._state == "closed":
            return
        self._state = "closed"
        if self.keep_on_exit:
            logger.warning("keeping %s (keep=True): delete it yourself when done", self.describe())
            return
        with teardown_in_progress():
            try:
                leftovers = self._delete()
            except Exception as exc:  # the teardown boundary: report, never stop half-way unexplained
                logger.exception("teardown of %s failed", self.describe())
                leftovers = [f"{self.describe()} ({type(exc).__name__}: {exc})"]
        if leftovers:
            raise TeardownError(
                f"could not delete everything of {self.describe()}; delete by hand: " + "; ".join(leftovers),
                leftovers=leftovers,
            )
