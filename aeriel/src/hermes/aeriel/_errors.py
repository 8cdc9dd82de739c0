"""The one boundary where tritonclient and grpc errors become hermes errors.

Every call into tritonclient made by aeriel (the clients, the control client, routing, the
monitor) goes through :func:`translated` (a context manager) or :func:`translate` (for errors
handed to a callback), so no foreign exception escapes a public hermes call.

Two kinds of call, one mapping:

* a request to a model (``action=None``): timeouts become :class:`InferenceTimeout`, refusals
  :class:`InputValidationError` or :class:`InferenceFailed`;
* a control call (``action="loading 'm'"`` etc.): the server's answer becomes
  :class:`ModelLoadError` (a model action) or :class:`ModelControlError`, a load or unload
  past its deadline :class:`ModelControlTimeout`.

Either way a server that does not answer is :class:`ConnectionFailed`, and a call the server's
restricted API refuses (``--grpc-restricted-protocol``, no or a wrong token) is
:class:`AccessDenied` -- Triton answers that one with ``UNAVAILABLE``, so it is told apart by its
text before the connection codes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from tritonclient.utils import InferenceServerException

from hermes.aeriel.exceptions import (
    AccessDenied,
    AerielError,
    ConnectionFailed,
    InferenceFailed,
    InferenceTimeout,
    InputValidationError,
    ModelControlError,
    ModelControlTimeout,
    ModelLoadError,
    SharedMemoryError,
)

__all__ = ["is_stream_failure", "request_id_of", "translate", "translated"]

_CONNECTION_CODES = {"UNAVAILABLE", "CANCELLED", "UNKNOWN", "INTERNAL_CONNECTION"}
_REQUEST_ID = re.compile(r"\[request id: ([^\]]+)\]")
# Triton's refusal of a restricted protocol without (or with a wrong) token, status UNAVAILABLE,
# as the real server answers it (tritonserver 2.x, --grpc-restricted-protocol):
# "This protocol is restricted, expecting header 'triton-grpc-protocol-<key>'"
_RESTRICTED = "This protocol is restricted"
# Control actions on a model: a refusal is a ModelLoadError (it names the model and the reason)
_MODEL_ACTIONS = ("loading", "unloading", "reading the config", "warm-up")
_FOREIGN_SHM = ("SharedMemoryException", "CudaSharedMemoryException")


def _status(exc: BaseException) -> str | None:
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        code = exc.code()
        return getattr(code, "name", str(code))
    if isinstance(exc, InferenceServerException):
        status = exc.status()
        return status.split(".")[-1] if status else None
    return None


def _message(exc: BaseException) -> str:
    if isinstance(exc, InferenceServerException):
        return str(exc.message())
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "details"):
        return str(exc.details())
    return str(exc)


def is_stream_failure(exc: BaseException) -> bool:
    """Whether an error from the stream callback means the stream itself is gone.

    A per-request error response carries no gRPC status; a broken stream always does.
    """
    return _status(exc) is not None


def request_id_of(exc: BaseException) -> str | None:
    """The request id Triton quotes in an error message (``[request id: 7]``), if any."""
    match = _REQUEST_ID.search(_message(exc))
    return match.group(1) if match else None


def _is_connection_failure(status: str | None, message: str) -> bool:
    return (
        status in _CONNECTION_CODES
        or "failed to connect" in message.lower()
        or "stream is no longer" in message
    )


def _inference_error(exc: BaseException, status: str | None, message: str, where: str) -> AerielError:
    if status == "DEADLINE_EXCEEDED":
        return InferenceTimeout(f"request to {where} timed out: {message}")
    if _is_connection_failure(status, message):
        return ConnectionFailed(f"connection to the inference server at {where} failed: {message}")
    if status == "INVALID_ARGUMENT":
        return InputValidationError(f"server at {where} rejected the request: {message}")
    if type(exc).__name__ in _FOREIGN_SHM:
        return SharedMemoryError(f"shared memory for {where}: {message}")
    return InferenceFailed(f"inference on {where} failed: {message}")


def _control_error(
    status: str | None, message: str, endpoint: str, action: str, model: str | None
) -> AerielError:
    timed_out = status == "DEADLINE_EXCEEDED"
    if timed_out and action.startswith(("loading", "unloading")):
        return ModelControlTimeout(f"{action} on {endpoint} did not finish in time: {message}")
    if timed_out or _is_connection_failure(status, message):
        return ConnectionFailed(f"server {endpoint} is unreachable ({action}): {message}")
    if model is not None and action.startswith(_MODEL_ACTIONS):
        return ModelLoadError(f"{action} on {endpoint}: {message}", model=model, reason=message)
    return ModelControlError(f"{action} on {endpoint}: {message}")


def translate(
    exc: BaseException, *, endpoint: str, model: str | None = None, action: str | None = None
) -> AerielError:
    """Map a tritonclient/grpc error to a hermes error that names the endpoint (and model).

    Args:
        exc: the error tritonclient or grpc raised.
        endpoint: the server, as the message should name it.
        model: the model the call was about, if any.
        action: ``None`` for a request to a model; for a control call, what it did
            (``"loading 'm'"``, ``"reading the repository index"``, ...).
    """
    if isinstance(exc, AerielError):
        return exc
    status = _status(exc)
    message = _message(exc)
    if _RESTRICTED in message:
        what = action or (f"a request to model '{model}'" if model else "a request")
        return AccessDenied(
            f"server {endpoint} refused {what}: {message} (give the server's admin token: "
            "admin_token= or HERMES_ADMIN_TOKEN)"
        )
    if action is not None:
        return _control_error(status, message, endpoint, action, model)
    where = f"{endpoint} (model '{model}')" if model else endpoint
    return _inference_error(exc, status, message, where)


@contextmanager
def translated(*, endpoint: str, model: str | None = None, action: str | None = None) -> Iterator[None]:
    """Re-raise tritonclient/grpc errors inside the block as hermes errors (``raise ... from``)."""
    try:
        yield
    except (InferenceServerException, grpc.RpcError) as exc:
        raise translate(exc, endpoint=endpoint, model=model, action=action) from exc
    except Exception as exc:
        if type(exc).__name__ in _FOREIGN_SHM:
            raise translate(exc, endpoint=endpoint, model=model, action=action) from exc
        raise
