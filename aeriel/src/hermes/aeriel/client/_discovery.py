"""Reading a model's signature from a server, written once for the sync and the asyncio client.

Discovery is a plan (a generator) that yields the calls it needs — ``(method name, args)`` of a
tritonclient ``InferenceServerClient`` — and receives each reply; :func:`discover` runs it on
a synchronous client, :func:`discover_async` on an asyncio one. The plan owns every decision
and message, the runners only make the calls.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from hermes.aeriel._errors import translated
from hermes.aeriel.client._signature import ModelSignature, ensemble_steps, read_signature
from hermes.aeriel.exceptions import ConnectionFailed, InferenceFailed

__all__ = ["discover", "discover_async"]

Call = tuple[str, tuple[Any, ...]]
Plan = Generator[Call, Any, ModelSignature]


def _plan(endpoint: str, model: str, version: str) -> Plan:
    try:
        live = yield ("is_server_live", ())
    except Exception as exc:
        raise ConnectionFailed(f"cannot reach the inference server at {endpoint}: {exc}") from exc
    if not live:
        raise ConnectionFailed(f"the inference server at {endpoint} is not live")
    if not (yield ("is_model_ready", (model, version))):
        raise InferenceFailed(
            f"model '{model}' (version {version or 'latest'}) is not ready at {endpoint}; load it first"
        )
    config = (yield ("get_model_config", (model, version))).config
    steps = {}
    for step, step_version in ensemble_steps(config):
        steps[step] = (yield ("get_model_config", (step, step_version))).config
    return read_signature(model, version, config, steps)


def _advance(plan: Plan, reply: Any, error: Exception | None) -> Call | ModelSignature:
    """The plan's next call, or its signature when it is done."""
    try:
        return plan.send(reply) if error is None else plan.throw(error)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def discover(grpc_client: Any, endpoint: str, model: str, version: str, timeout_s: float) -> ModelSignature:
    """Read ``model``'s signature through a synchronous tritonclient gRPC client.

    Args:
        grpc_client: a ``tritonclient.grpc.InferenceServerClient``.
        endpoint: its ``host:port`` (for messages).
        model: the model name.
        version: the wire version (``""`` = latest).
        timeout_s: seconds each call may take.

    Raises:
        ConnectionFailed: the server cannot be reached or is not live.
        InferenceFailed: the model is not ready.
    """
    plan, reply, error = _plan(endpoint, model, version), None, None
    with translated(endpoint=endpoint, model=model):
        while not isinstance(step := _advance(plan, reply, error), ModelSignature):
            try:
                reply, error = getattr(grpc_client, step[0])(*step[1], client_timeout=timeout_s), None
            except Exception as exc:
                reply, error = None, exc
    return step


async def discover_async(
    grpc_client: Any, endpoint: str, model: str, version: str, timeout_s: float
) -> ModelSignature:
    """As :func:`discover`, through a ``tritonclient.grpc.aio.InferenceServerClient``."""
    plan, reply, error = _plan(endpoint, model, version), None, None
    with translated(endpoint=endpoint, model=model):
        while not isinstance(step := _advance(plan, reply, error), ModelSignature):
            try:
                reply, error = await getattr(grpc_client, step[0])(*step[1], client_timeout=timeout_s), None
            except Exception as exc:
                reply, error = None, exc
    return step
