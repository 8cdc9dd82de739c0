"""Errors raised by hermes.aeriel.

Every error derives from :class:`AerielError`; subclasses also inherit the builtin they
refine, so ``except TimeoutError`` keeps working.

* AerielError
  + EndpointError (also ValueError): an endpoint list or file is malformed
  + ProfileError (also ValueError): ``hermes profile`` cannot drive a model (names what is missing)
  + ServerError
    - ServerPreflightError (also RuntimeError): the server cannot start here; the message names the fix
    - ServerStartTimeout (also TimeoutError): not ready within the deadline
    - ServerExitedError (also RuntimeError): the process ended while it was needed
      - PortInUseError: it could not bind a port it was given (another process holds it)
    - ModelControlTimeout (also TimeoutError): a load or unload did not finish in time
    - ModelControlError (also RuntimeError): the server refused a control call; quotes its answer
      - ModelLoadError: a model did not load (or unload); quotes Triton's reason
    - ImagePullError (also RuntimeError): pulling a container image failed or timed out
  + ClientError
    - AccessDenied (also PermissionError): the server's restricted API refused the call (no or a wrong token)
    - ConnectionFailed (also ConnectionError)
      - ServerLost: a server of a cluster went away; its sequences' state is gone
    - InferenceTimeout (also TimeoutError)
    - InferenceFailed (also RuntimeError)
    - InputValidationError (also ValueError)
    - SequenceError (also RuntimeError)
    - ClientClosedError (also RuntimeError)
    - SharedMemoryError (also RuntimeError): a shared-memory region could not be made or used
  + BackendError: raised inside the portable Triton backends (``hermes.aeriel.backends``)
    - BackendConfigError (also ValueError): a model configuration they cannot serve
    - BackendRequestError (also RuntimeError): one request failed; sent back as its error response
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


class PortInUseError(ServerPreflightError, ServerExitedError):
    """A port the server was told to bind is held by another process.

    Found before the start (a given port that is already taken) or when Triton exits on it
    (a port taken between the check and Triton's bind: metrics bind last).

    ``serve()`` picks new ports and retries by itself when it chose them; with ports you asked
    for, pick others (``hermes.aeriel.testing.serve_on_free_ports`` does this for tests).
    """


class ModelControlTimeout(ServerError, TimeoutError):
    """A model load or unload did not finish before its deadline (the server itself is up)."""


class ModelControlError(ServerError, RuntimeError):
    """The server answered a control call (repository index, statistics, load) with an error."""


class ModelLoadError(ModelControlError):
    """A model failed to load; the message names the model and quotes Triton's reason."""

    def __init__(self, message: str, *, model: str | None = None, reason: str = ""):
        super().__init__(message)
        self.model = model
        self.reason = reason


class ImagePullError(ServerError, RuntimeError):
    """Pulling and converting a container image (``docker://``, ``oras://``) failed or timed out.

    Attributes:
        uri: the image that was being pulled.
    """

    def __init__(self, message: str, *, uri: str = ""):
        super().__init__(message)
        self.uri = uri


class ClientError(AerielError):
    """A request to an inference server failed."""


class AccessDenied(ClientError, PermissionError):
    """The server refused the call: its API is restricted (``--grpc-restricted-protocol``) and the
    call carried no token or a wrong one. Give the server's admin token (``admin_token=``)."""


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


class StreamOrderError(SequenceError, ValueError):
    """A chunk of a stream is duplicated, out of order or after a gap the stream's policy refuses.

    Raised before anything is sent; the message names the sequence and the positions.
    """


class ClientClosedError(ClientError, RuntimeError):
    """The client (or a resource of it) was used after it was closed."""


class SharedMemoryError(ClientError, RuntimeError):
    """A shared-memory region could not be created, registered, written or read."""


class BackendError(AerielError):
    """An error inside hermes' portable Triton backends (``onnxruntime``, ``pytorch``)."""


class BackendConfigError(BackendError, ValueError):
    """A model configuration the portable backends cannot serve (names the field and value)."""


class BackendRequestError(BackendError, RuntimeError):
    """One request failed (e.g. an unknown sequence); it becomes that request's error response."""


class EndpointError(AerielError, ValueError):
    """An endpoint (or a list or file of them) is malformed; the message names the entry and field."""


class ProfileError(AerielError, ValueError):
    """The streaming profiler cannot drive a model or a sweep is malformed; the message names what."""


class ServerLost(ConnectionFailed):
    """A server of a cluster went away: its pending requests fail and its sequences' state is gone.

    Attributes:
        endpoint: the name of the endpoint that went away.
    """

    def __init__(self, message: str, *, endpoint: str = ""):
        super().__init__(message)
        self.endpoint = endpoint
