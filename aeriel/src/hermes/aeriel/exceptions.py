"""Errors raised by hermes.aeriel.

Every error derives from :class:`AerielError`; subclasses also inherit the builtin they
refine, so ``except TimeoutError`` keeps working.

* AerielError
  + ServerError
    - ServerPreflightError (also RuntimeError): the server cannot start here; the message names the fix
    - ServerStartTimeout (also TimeoutError): not ready within the deadline
    - ServerExitedError (also RuntimeError): the process ended while it was needed
    - ModelLoadError (also RuntimeError): a model did not load; quotes Triton's reason
  + ClientError
    - ConnectionFailed (also ConnectionError)
    - InferenceTimeout (also TimeoutError)
    - InferenceFailed (also RuntimeError)
    - InputValidationError (also ValueError)
    - SequenceError (also RuntimeError)
    - ClientClosedError (also RuntimeError)
"""

from __future__ import annotations


class AerielError(Exception):
    """Base class of every error raised by hermes.aeriel."""


class ServerError(AerielError):
    """Starting, running or stopping an inference server failed."""


class ServerPreflightError(ServerError, RuntimeError):
    """The server cannot be started in this environment; the message says how to fix it."""


class ServerStartTimeout(ServerError, TimeoutError):
    """The server (or one of its models) was not ready before the deadline."""


class ServerExitedError(ServerError, RuntimeError):
    """The server process ended unexpectedly.

    Attributes:
        returncode: the exit status (negative: killed by that signal).
        log_excerpt: the last relevant lines of the server log.
    """

    def __init__(self, message: str, *, returncode: int | None = None, log_excerpt: str = ""):
        super().__init__(message)
        self.returncode = returncode
        self.log_excerpt = log_excerpt


class ModelLoadError(ServerError, RuntimeError):
    """A model failed to load; the message names the model and quotes Triton's reason."""

    def __init__(self, message: str, *, model: str | None = None, reason: str = ""):
        super().__init__(message)
        self.model = model
        self.reason = reason


class ClientError(AerielError):
    """A request to an inference server failed."""


class ConnectionFailed(ClientError, ConnectionError):
    """The server could not be reached (names the endpoint)."""


class InferenceTimeout(ClientError, TimeoutError):
    """A request did not complete within its timeout."""


class InferenceFailed(ClientError, RuntimeError):
    """The server answered a request with an error."""


class InputValidationError(ClientError, ValueError):
    """Inputs do not match the model's signature (names the expected signature)."""


class SequenceError(ClientError, RuntimeError):
    """A stateful sequence was misused (request after END, duplicate live id, ...)."""


class ClientClosedError(ClientError, RuntimeError):
    """The client (or a resource of it) was used after it was closed."""
