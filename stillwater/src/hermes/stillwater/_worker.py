"""The body of a stage process: signals, logging, the parent watch, and the status report.

```
 stage process
 ├── main thread:   stage.run(inbox ─▶ user code ─▶ outbox), then the end-of-stream marker
 │                  and one status message to the parent: done | error (tblib) | stopped | closed
 └── parent watch:  blocks on the lifeline pipe; EOF (the parent closed it or died) ─▶ SIGTERM to self
 SIGTERM ─▶ _Stop raised in the main thread ─▶ teardown runs ─▶ "stopped"
 SIGINT  ─▶ ignored: the parent owns Ctrl-C and stops every stage itself
```
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from multiprocessing.connection import Connection
from types import FrameType

from hermes.stillwater._logging import LogSink, configure_child_logging
from hermes.stillwater._remote_error import dump_exception
from hermes.stillwater.channel import Receiver, Sender
from hermes.stillwater.exceptions import ChannelClosed
from hermes.stillwater.stage import Stage
from hermes.stillwater.stats import StageCounters

__all__ = ["stage_main"]

logger = logging.getLogger("hermes.stillwater.worker")


class _Stop(BaseException):
    """Raised in the main thread of a stage process by SIGTERM."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop is enough; let teardown finish
    raise _Stop


def _watch_parent(lifeline: Connection) -> None:
    try:
        lifeline.recv_bytes()
    except (EOFError, OSError):
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def stage_main(
    stage: Stage,
    index: int,
    inbox: Receiver | None,
    outbox: Sender | None,
    status: Connection,
    lifeline: Connection,
    log_sink: LogSink,
    log_levels: dict[str, int],
    counters: StageCounters,
) -> None:
    """Run ``stage`` in this (child) process and report how it ended on ``status``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    configure_child_logging(log_sink, log_levels)
    report: tuple[str, object]
    try:
        threading.Thread(target=_watch_parent, args=(lifeline,), name="parent-watch", daemon=True).start()
        logger.debug("stage %r started in process %d", stage.name, os.getpid())
        stage.run(inbox, outbox, counters, index)
        if outbox is not None:
            outbox.send_end()
        report = ("done", None)
    except _Stop:
        report = ("stopped", None)
    except ChannelClosed as exc:
        report = ("closed", str(exc))
    except BaseException as exc:
        report = ("error", dump_exception(exc))
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        status.send(report)
    except OSError:  # the parent is gone
        pass
    for end in (inbox, outbox):
        if end is not None:
            end.close()
    counters.close()
    status.close()
