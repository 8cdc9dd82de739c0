"""Child-process logging that reaches the parent's handlers.

```
 stage process                                 parent process
 root logger ─▶ _ChildHandler ──(lock)──▶ pipe ─▶ LogForwarder thread ─▶ logging.getLogger(name).handle()
 (levels copied from the parent at start)      (ends at EOF: when every stage and the parent closed the pipe)
```

Records are formatted in the child (``QueueHandler.prepare``), so arguments and exception
info travel as text. The pipe is bounded: a child logging faster than the parent forwards
blocks instead of growing memory. The forwarder thread needs no stop message: it ends when
the last writer (the parent's copy is closed once the stages started) goes away.
"""

from __future__ import annotations

import logging
import logging.handlers
import threading
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.synchronize import Lock

from hermes.stillwater._semaphores import unlink_name

__all__ = ["LogForwarder", "LogSink", "configure_child_logging", "logger_levels"]


class LogSink:
    """The picklable writing end handed to stage processes."""

    def __init__(self, conn: Connection, lock: Lock) -> None:
        self.conn = conn
        self.lock = lock

    def put(self, record: logging.LogRecord) -> None:
        with self.lock:
            self.conn.send(record)


class _ChildHandler(logging.handlers.QueueHandler):
    def __init__(self, sink: LogSink) -> None:
        super().__init__(None)  # type: ignore[arg-type]
        self.sink = sink

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.sink.put(record)
        except (BrokenPipeError, OSError):  # the parent is gone: nobody to tell
            pass


def logger_levels() -> dict[str, int]:
    """The parent's explicitly set logger levels (``""`` is the root), to copy into children."""
    levels = {"": logging.getLogger().level}
    for name, obj in logging.Logger.manager.loggerDict.items():
        if isinstance(obj, logging.Logger) and obj.level != logging.NOTSET:
            levels[name] = obj.level
    return levels


def configure_child_logging(sink: LogSink, levels: dict[str, int]) -> None:
    """In a stage process: send every record to the parent and copy the parent's levels."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_ChildHandler(sink))
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)


class LogForwarder:
    """Parent-side thread that hands child records to the parent's loggers.

    Args:
        ctx: the multiprocessing context of the stages.
    """

    def __init__(self, ctx: BaseContext) -> None:
        reader, writer = ctx.Pipe(duplex=False)
        self._reader = reader
        self.sink = LogSink(writer, ctx.Lock())
        self._thread = threading.Thread(target=self._run, name="hermes-stillwater-logs", daemon=True)
        self._thread.start()
        self._closed = False

    def _run(self) -> None:
        while True:
            try:
                record = self._reader.recv()
            except (EOFError, OSError):
                return
            except Exception:  # pragma: no cover - an unpicklable record; keep forwarding
                logging.getLogger("hermes.stillwater").exception("could not read a child log record")
                continue
            logger = logging.getLogger(record.name)
            if logger.isEnabledFor(record.levelno):
                logger.handle(record)

    def release_writer(self) -> None:
        """Close the parent's writing end, once the stages hold theirs."""
        self.sink.conn.close()

    def close(self, timeout_s: float = 5.0) -> None:
        """Forward what the (now ended) stages logged, then join the thread (idempotent).

        Call after every stage process has exited.
        """
        if self._closed:
            return
        self._closed = True
        self.release_writer()
        self._thread.join(timeout_s)
        if self._thread.is_alive():  # pragma: no cover - a writer survived its process
            logging.getLogger("hermes.stillwater").warning("log forwarder did not reach EOF")
        self._reader.close()
        unlink_name(self.sink.lock)
