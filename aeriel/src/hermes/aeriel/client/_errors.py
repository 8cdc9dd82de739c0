"""The one boundary where tritonclient and grpc errors become hermes errors.

Every call into tritonclient made by the clients goes through :func:`translated` (a context
manager) or :func:`translate` (for errors handed to a callback), so no foreign exception
escapes a public hermes call.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from tritonclient.utils import InferenceServerException

from hermes.aeriel.exceptions import (
    ClientError,
    ConnectionFailed,
    InferenceFailed,
    InferenceTimeout,
    InputValidationError,
    SharedMemoryError,
)

__all__ = ["is_stream_failure", "request_id_of", "translate", "translated"]

_CONNECTION_CODES = {"UNAVAILABLE", "CANCELLED", "UNKNOWN", "INTERNAL_CONNECTION"}
_REQUEST_ID = re.compile(r"\[request id: ([^\]]+)\]")


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


def translate(exc: BaseException, *, endpoint: str, model: str) -> ClientError:
    """Map a tritonclient/grpc error to a :class:`ClientError` that names the endpoint and model."""
    if isinstance(exc, ClientError):
        return exc
    status = _status(exc)
    message = _message(exc)
    where = f"{endpoint} (model '{model}')"
    if status == "DEADLINE_EXCEEDED":
        return InferenceTimeout(f"request to {where} timed out: {message}")
    if (
        status in _CONNECTION_CODES
        or "failed to connect" in message.lower()
        or "stream is no longer" in message
    ):
        return ConnectionFailed(f"connection to the inference server at {where} failed: {message}")
    if status == "INVALID_ARGUMENT":
        return InputValidationError(f"server at {where} rejected the request: {message}")
    if type(exc).__name__ == "SharedMemoryException":
        return SharedMemoryError(f"shared memory for {where}: {message}")
    return InferenceFailed(f"inference on {where} failed: {message}")


@contextmanager
def translated(*, endpoint: str, model: str) -> Iterator[None]:
    """Re-raise tritonclient/grpc errors inside the block as hermes errors (``raise ... from``)."""
    try:
        yield
    except (InferenceServerException, grpc.RpcError) as exc:
        raise translate(exc, endpoint=endpoint, model=model) from exc
    except Exception as exc:
        if type(exc).__name__ in ("SharedMemoryException", "CudaSharedMemoryException"):
            raise translate(exc, endpoint=endpoint, model=model) from exc
        raise
