"""What a caller configures on a client, validated once for the synchronous and the asyncio client."""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass
from typing import Any

from hermes.aeriel.client._result import Callback
from hermes.aeriel.exceptions import SequenceError

__all__ = ["ClientOptions", "SequenceId", "check_callback", "check_sequence_id", "version_string"]

SequenceId = int | str
"""A Triton correlation id: a positive int (< 2**64) or a non-empty string."""

_VERSION = re.compile(r"[1-9][0-9]*")


def check_sequence_id(sequence_id: Any) -> SequenceId:
    """Validate a sequence id: a positive int (< 2**64) or a non-empty string.

    Raises:
        SequenceError: naming the id and what is expected.
    """
    if isinstance(sequence_id, bool) or not isinstance(sequence_id, int | str):
        raise SequenceError(f"sequence_id must be a positive int or a non-empty str, got {sequence_id!r}")
    if isinstance(sequence_id, int) and not 0 < sequence_id < 2**64:
        raise SequenceError(f"sequence_id must be in 1..2**64-1, got {sequence_id}")
    if isinstance(sequence_id, str) and not sequence_id:
        raise SequenceError("sequence_id must not be an empty string")
    return sequence_id


def version_string(model_version: int | str | None) -> str:
    """Triton's wire form of a model version: ``""`` for the server's choice.

    Args:
        model_version: None, -1, ``""`` or ``"-1"`` (the server's latest), or a version
            number >= 1 as an int or a decimal string.

    Raises:
        ValueError: anything else, naming the value.
    """
    if model_version is None:
        return ""
    if isinstance(model_version, bool) or not isinstance(model_version, int | str):
        raise ValueError(
            f"model_version must be an int or a str (-1 for the latest), got {type(model_version).__name__} "
            f"{model_version!r}"
        )
    if isinstance(model_version, int):
        if model_version < -1 or model_version == 0:
            raise ValueError(f"model_version must be -1 (latest) or >= 1, got {model_version}")
        return "" if model_version == -1 else str(model_version)
    if model_version in ("", "-1"):
        return ""
    if not _VERSION.fullmatch(model_version):
        raise ValueError(f"model_version must be '-1' (latest) or a number >= 1, got {model_version!r}")
    return model_version


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientOptions:
    """The settings of one client (see :class:`~hermes.aeriel.client.InferenceClient` for each).

    Construction normalises ``model_version`` to its wire form (``""`` = latest) and
    ``shared_memory`` to None, ``"system"`` or ``"cuda"``.

    Raises:
        ValueError: a field out of range, naming the field and the value.
    """

    url: str
    model_name: str
    model_version: int | str = -1
    max_in_flight: int = 16
    timeout_s: float = 60.0
    shared_memory: str | bool | None = None
    cuda_device: int = 0
    pad_batch: bool = False
    callback: Callback | None = None
    latency_window: int = 10_000
    connect_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url:
            raise ValueError(f"url must be a non-empty 'host:port' string, got {self.url!r}")
        if not isinstance(self.model_name, str) or not self.model_name:
            raise ValueError(f"model_name must be a non-empty string, got {self.model_name!r}")
        _set(self, "model_version", version_string(self.model_version))
        _check_count("max_in_flight", self.max_in_flight)
        _check_count("latency_window", self.latency_window)
        _set(self, "timeout_s", _seconds("timeout_s", self.timeout_s))
        _set(self, "connect_timeout_s", _seconds("connect_timeout_s", self.connect_timeout_s))
        shared = "system" if self.shared_memory is True else self.shared_memory or None
        if shared not in (None, "system", "cuda"):
            raise ValueError(f"shared_memory must be None, 'system' or 'cuda', got {self.shared_memory!r}")
        _set(self, "shared_memory", shared)
        if self.callback is not None:
            check_callback(self.callback)


def check_callback(callback: Any) -> None:
    """Refuse a callback that cannot be called as ``callback(result, error)``.

    The predecessor (ml4gw-hermes) called ``callback(y, request_id, sequence_id)``; such a
    callback would fail on every response, on the stream thread. It is refused here instead.

    Raises:
        ValueError: not callable.
        TypeError: its parameters do not accept ``(result, error)``.
    """
    if not callable(callback):
        raise ValueError(f"callback must be callable as callback(result, error), got {callback!r}")
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):  # builtins without a signature: trust them
        return
    try:
        signature.bind(None, None)
    except TypeError:
        raise TypeError(
            f"callback {callback!r} takes {signature}; hermes calls callback(result, error) with a "
            "Result (result.outputs, result.request_id, result.sequence_id) or the error. "
            "The predecessor's callback(y, request_id, sequence_id) becomes: "
            "def callback(result, error): y = result.output; request_id = result.request_id; ..."
        ) from None


def _set(options: ClientOptions, name: str, value: Any) -> None:
    object.__setattr__(options, name, value)


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")


def _seconds(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)
