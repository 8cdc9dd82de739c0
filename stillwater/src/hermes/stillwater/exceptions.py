"""Errors raised by hermes.stillwater.

```
StillwaterError                      base of every stillwater error
├── PipelineError(RuntimeError)      the pipeline as a whole failed or cannot run
│   ├── StageFailed                  a stage raised; the child's exception is ``__cause__``
│   ├── StageDied                    a stage process ended without reporting (killed, crashed)
│   └── PipelineTimeout(TimeoutError) a wait ran past its ``timeout_s``
├── PipelineStateError(RuntimeError) an operation is not valid in the pipeline's state
├── PipelineDefinitionError(ValueError) stages are chained or configured wrongly
└── ChannelClosed(EOFError)          the other end of a channel went away
```
"""

from __future__ import annotations

__all__ = [
    "ChannelClosed",
    "PipelineDefinitionError",
    "PipelineError",
    "PipelineStateError",
    "PipelineTimeout",
    "StageDied",
    "StageFailed",
    "StillwaterError",
]


class StillwaterError(Exception):
    """Base class of every error raised by hermes.stillwater."""


class PipelineError(StillwaterError, RuntimeError):
    """The pipeline failed while running; it has been stopped."""


class StageFailed(PipelineError):
    """A stage raised an exception inside its process.

    The child's exception, with the child's traceback, is this error's ``__cause__``.

    Attributes:
        stage: the name of the stage that failed.
    """

    def __init__(self, message: str, *, stage: str) -> None:
        super().__init__(message)
        self.stage = stage


class StageDied(PipelineError):
    """A stage process ended without reporting a result (killed by a signal, or crashed).

    Attributes:
        stage: the name of the stage whose process ended.
        exitcode: the process exit code; ``-N`` means killed by signal ``N``.
    """

    def __init__(self, message: str, *, stage: str, exitcode: int | None) -> None:
        super().__init__(message)
        self.stage = stage
        self.exitcode = exitcode


class PipelineTimeout(PipelineError, TimeoutError):
    """A wait on the pipeline ran past its ``timeout_s``."""


class PipelineStateError(StillwaterError, RuntimeError):
    """The operation is not valid now (e.g. starting a closed pipeline)."""


class PipelineDefinitionError(StillwaterError, ValueError):
    """Stages are chained or configured wrongly (e.g. a Sink followed by another stage)."""


class ChannelClosed(StillwaterError, EOFError):
    """The other end of a channel closed or its process went away."""
