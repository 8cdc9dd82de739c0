"""One Triton server's health, model control and statistics over gRPC: :class:`ControlClient`.

```python
import os
from hermes.aeriel.control import ControlClient

with ControlClient("gpu-node-0:8001", admin_token=os.environ.get("HERMES_ADMIN_TOKEN")) as control:
    control.load("mlp", versions=[1, 2])     # exactly versions 1 and 2, waits until ready
    print(control.ready_versions("mlp"))     # [1, 2]
    control.unload("mlp")                    # waits until no version is ready or unloading
```

Every call carries the admin token when one is given: a server started with Triton's restricted
API (``--grpc-restricted-protocol=model-repository:hermes-admin-token=<token>``, as cloudbreak's
Kubernetes deployment does) refuses model control without it. Triton checks that token in the
gRPC header ``triton-grpc-protocol-<key>`` (its refusal names it), so the client sends the key
with that prefix. Errors go through :mod:`hermes.aeriel._errors`, the one translation boundary.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as pb
from tritonclient.utils import np_to_triton_dtype

from hermes.aeriel._errors import translated
from hermes.aeriel._lifecycle import Closeable, Deadline
from hermes.aeriel.endpoints import Endpoint
from hermes.aeriel.exceptions import ClientClosedError, ModelControlTimeout, ModelLoadError
from hermes.quiver.config import ModelConfig

__all__ = ["ADMIN_TOKEN_HEADER", "ControlClient", "RepositoryEntry"]

ADMIN_TOKEN_HEADER = "hermes-admin-token"
"""The key of the admin token in ``--grpc-restricted-protocol=<protocols>:<key>=<token>``."""

# Triton's gRPC frontend reads a restricted protocol's key from the header with this prefix
# (its refusal: "This protocol is restricted, expecting header 'triton-grpc-protocol-<key>'").
_GRPC_HEADER_PREFIX = "triton-grpc-protocol-"
_POLL_S = 0.05
_LOOPBACK = ("127.", "localhost", "[::1]", "::1")

# The calls that only read, which gRPC itself sends again when one ends UNAVAILABLE before the
# server answered: a connection reset by a live server (seen in this project's CI), a proxy or
# tunnel dropping it, the server restarting. gRPC's status codes guide: UNAVAILABLE "is
# most likely a transient condition, which can be corrected by retrying with a backoff". Loads,
# unloads, inference and shared-memory registration are never retried.
_READS = (
    "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
    "ModelConfig", "ModelStatistics", "RepositoryIndex",
)  # fmt: skip
_RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.05s",
    "maxBackoff": "0.5s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
_READS_RETRIED = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "inference.GRPCInferenceService", "method": m} for m in _READS],
                "retryPolicy": _RETRY_POLICY,
            }
        ]
    }
)
"""gRPC service config (``grpc.service_config``) of the control client's channel."""


def channel_args(grpc_address: str, direct: bool | None = None) -> list[tuple[str, int | str]]:
    """gRPC channel options: tritonclient's defaults and, for a server on this node, no HTTP proxy.

    grpcio sends every channel through ``https_proxy``/``http_proxy`` when set (HPC login and
    compute nodes often set them), and a proxy cannot reach this node's loopback.
    """
    keepalive = grpcclient.KeepAliveOptions()
    args: list[tuple[str, int | str]] = [  # what tritonclient sets when given no channel_args
        ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", int(keepalive.keepalive_permit_without_calls)),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
    ]
    if direct or (direct is None and grpc_address.startswith(_LOOPBACK)):
        args.append(("grpc.enable_http_proxy", 0))
    return args


@dataclasses.dataclass(frozen=True)
class RepositoryEntry:
    """One row of Triton's repository index.

    Args:
        name: the model.
        version: the version (``""`` for a model Triton has not loaded yet).
        state: ``READY``, ``LOADING``, ``UNLOADING``, ``UNAVAILABLE`` or ``""`` (never loaded).
        reason: why it is not ready (Triton's text), or ``""``.
    """

    name: str
    version: str
    state: str
    reason: str

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> RepositoryEntry:
        return cls(
            name=str(entry.get("name", "")),
            version=str(entry.get("version") or ""),
            state=str(entry.get("state") or ""),
            reason=str(entry.get("reason") or ""),
        )


def _check_versions(versions: Iterable[int] | None) -> list[int] | None:
    if versions is None:
        return None
    wanted = sorted({int(v) for v in versions})
    if not wanted or any(v < 1 for v in wanted):
        raise ValueError(f"versions must be positive integers, got {versions!r}")
    return wanted


class ControlClient(Closeable):
    """Health, model control and statistics of one Triton server (tritonclient gRPC).

    Args:
        endpoint: the server: an :class:`~hermes.aeriel.endpoints.Endpoint` or ``host:port``.
        timeout_s: seconds one call may take (health, index, config, statistics).
        admin_token: the token of the server's restricted API, sent with every call.
        admin_header: the key the server was started with (``<key>=<token>``).
        grpc_client: an existing ``tritonclient.grpc.InferenceServerClient`` to use (not closed
            by :meth:`close`); by default the client opens its own.
        direct: never go through an HTTP proxy (``https_proxy``); ``None`` (default): direct
            for a loopback address, as the environment says otherwise.

    A read (health, readiness, index, config, statistics) that ends ``UNAVAILABLE`` before the
    server answered is sent again by gRPC, up to 4 attempts with a backoff from 0.05 s, within the
    call's timeout: a connection reset mid-call costs a retry, not the wait of a load or unload.

    Raises (from every call):
        ConnectionFailed: the server did not answer.
        AccessDenied: the server's restricted API refused the call (no or a wrong token).
        ClientClosedError: the client was closed.
    """

    def __init__(
        self,
        endpoint: Endpoint | str,
        *,
        timeout_s: float = 10.0,
        admin_token: str | None = None,
        admin_header: str = ADMIN_TOKEN_HEADER,
        grpc_client: Any = None,
        direct: bool | None = None,
    ):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
        self.endpoint = endpoint if isinstance(endpoint, Endpoint) else Endpoint.parse(endpoint)
        self.timeout_s = float(timeout_s)
        self._headers = {_GRPC_HEADER_PREFIX + admin_header.lower(): admin_token} if admin_token else None
        self._owns_grpc = grpc_client is None
        self._grpc = (
            grpc_client
            if grpc_client is not None
            else grpcclient.InferenceServerClient(
                self.endpoint.grpc,
                channel_args=[
                    *channel_args(self.endpoint.grpc, direct),
                    ("grpc.service_config", _READS_RETRIED),
                ],
            )
        )
        self._closed = threading.Event()  # also ends a wait of load/unload at once

    @property
    def where(self) -> str:
        """``name (host:port)``, or just ``host:port`` when that is the name."""
        ep = self.endpoint
        return ep.name if ep.name == ep.grpc else f"{ep.name} ({ep.grpc})"

    def __repr__(self) -> str:  # never shows the token
        token = ", admin token" if self._headers else ""
        return f"<ControlClient {self.where}{token}>"

    def _call(self, action: str, method: str, *args: Any, model: str | None = None,
              timeout_s: float | None = None, **kwargs: Any) -> Any:  # fmt: skip
        """``grpc_client.<method>(*args, **kwargs)`` with the token, a deadline and translated errors."""
        if self._closed.is_set():
            raise ClientClosedError(f"this ControlClient ({self.where}) is closed; create a new one")
        limit = self.timeout_s if timeout_s is None else max(timeout_s, 0.001)
        with translated(endpoint=self.where, model=model, action=action):
            return getattr(self._grpc, method)(*args, headers=self._headers, client_timeout=limit, **kwargs)

    # ------------------------------------------------------------------ health
    def is_live(self) -> bool:
        """Whether the server answers that it is live."""
        return bool(self._call("liveness check", "is_server_live"))

    def is_ready(self) -> bool:
        """Whether the server is ready (every model it was told to load at start is ready)."""
        return bool(self._call("readiness check", "is_server_ready"))

    def is_model_ready(self, model: str, version: int | str = "") -> bool:
        """Whether ``version`` of ``model`` (default: the model's default policy) is ready."""
        return bool(self._call(f"readiness of {model!r}", "is_model_ready", model, str(version)))

    # ------------------------------------------------------------------ repository
    def repository_index(self) -> list[RepositoryEntry]:
        """Every model of the repository with its versions, states and reasons."""
        index = self._call("reading the repository index", "get_model_repository_index", as_json=True)
        return [RepositoryEntry.from_json(entry) for entry in index.get("models", [])]

    def ready_versions(self, model: str) -> list[int]:
        """The versions of ``model`` that are ready, ascending."""
        return sorted(
            int(e.version)
            for e in self.repository_index()
            if e.name == model and e.state == "READY" and e.version.isdigit()
        )

    def unavailable_reason(self, model: str) -> str | None:
        """Triton's reason when ``model`` (any version) failed to load, else ``None``."""
        for entry in self.repository_index():
            if entry.name == model and entry.state == "UNAVAILABLE" and entry.reason:
                return entry.reason
        return None

    def model_config(self, model: str) -> pb.ModelConfig:
        """The model's configuration as the server holds it."""
        response = self._call(f"reading the config of {model!r}", "get_model_config", model, model=model)
        config: pb.ModelConfig = response.config
        return config

    # ------------------------------------------------------------------ control
    def load(
        self,
        model: str,
        *,
        versions: Iterable[int] | None = None,
        config: pb.ModelConfig | ModelConfig | Mapping[str, Any] | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        """Load (or reload) ``model`` (explicit model control) and wait until it is ready.

        Args:
            model: the model name in the repository.
            versions: exactly these versions (a ``version_policy { specific }`` override on top
                of ``config`` or the served configuration); the others are unloaded.
            config: a full configuration override: the protobuf, a quiver ``ModelConfig`` or
                Triton's JSON form.
            timeout_s: seconds the load and the wait may take.

        Raises:
            ModelLoadError: Triton refused (it keeps serving the previous versions); quotes why.
            ModelControlTimeout: not loaded (or old versions not gone) within ``timeout_s``.
        """
        wanted = _check_versions(versions)
        deadline = Deadline(timeout_s)
        action = f"loading {model!r}" + (f" versions {wanted}" if wanted else "")
        cfg = config_proto(config) if config is not None else None
        before: list[int] = []
        if wanted is not None:
            before = self.ready_versions(model)
            if cfg is None:
                if not before:  # Triton holds a config only for a model it has loaded
                    self._call(action, "load_model", model, model=model, timeout_s=deadline.remaining_s)
                cfg = self.model_config(model)
            cfg.version_policy.Clear()
            cfg.version_policy.specific.versions.extend(wanted)
        body = json_format.MessageToJson(cfg, preserving_proto_field_name=True) if cfg is not None else None
        self._call(action, "load_model", model, model=model, config=body, timeout_s=deadline.remaining_s)
        ready = [str(v) for v in wanted] if wanted is not None else [""]
        gone = [str(v) for v in before if wanted is not None and v not in wanted]
        self._wait_versions(model, ready, gone, deadline, timeout_s)

    def unload(self, model: str, *, timeout_s: float = 60.0) -> None:
        """Unload every version of ``model`` and wait until none is ready or still unloading.

        Raises:
            ModelControlTimeout: a version was still ready or unloading after ``timeout_s``.
        """
        deadline = Deadline(timeout_s)
        self._call(f"unloading {model!r}", "unload_model", model, model=model, timeout_s=deadline.remaining_s)
        busy: list[str] = []

        def unloaded() -> bool | None:  # unload_model returns before the unload finishes
            busy[:] = [
                f"version {e.version} {e.state.lower()}"
                for e in self.repository_index()
                if e.name == model and e.state in ("READY", "UNLOADING")
            ]
            return None if busy else True

        if deadline.poll(unloaded, interval_s=_POLL_S, stop=self._closed) is None:
            self._raise_if_closed()
            hint = (
                "; Triton finishes an unload only when every gRPC stream that sent the model a request is "
                "closed: close the clients streaming to it (InferenceClient.close()) first"
                if any(b.endswith("unloading") for b in busy)
                else ""
            )
            raise ModelControlTimeout(
                f"model {model!r} on {self.where} not unloaded {timeout_s:g} s after the request: "
                f"{', '.join(busy)}{hint}"
            )

    def _wait_versions(
        self, model: str, ready: list[str], gone: list[str], deadline: Deadline, timeout_s: float
    ) -> None:
        """Wait until every version in ``ready`` is ready and none in ``gone`` is ("": the default)."""
        left: list[str] = []

        def settled() -> bool | None:
            missing = [v for v in ready if not self.is_model_ready(model, v)]
            lingering = [v for v in gone if self.is_model_ready(model, v)]
            if missing:
                self._raise_unavailable(model, missing)
            left[:] = [f"{v or 'default'} not ready" for v in missing] + [
                f"{v} still loaded" for v in lingering
            ]
            return None if left else True

        if deadline.poll(settled, interval_s=_POLL_S, stop=self._closed) is None:
            self._raise_if_closed()
            raise ModelControlTimeout(
                f"model {model!r} on {self.where} not settled {timeout_s:g} s after the load: "
                f"version(s) {', '.join(left)}"
            )

    def _raise_unavailable(self, model: str, missing: list[str]) -> None:
        """Raise ModelLoadError for a wanted version Triton does not have or could not load."""
        entries = [e for e in self.repository_index() if e.name == model]
        versions = {e.version: e for e in entries if e.version.isdigit()}
        for v in missing:
            if v and v not in versions:
                raise ModelLoadError(
                    f"model {model!r} version {v} is not in the repository of {self.where} "
                    f"(versions there: {sorted(map(int, versions)) or 'none'}); the previous versions keep serving",
                    model=model,
                    reason=f"version {v} not found",
                )
            failed = [
                e for e in entries if (not v or e.version == v) and e.state == "UNAVAILABLE" and e.reason
            ]
            if failed:
                what = f"version {v}" if v else ""
                raise ModelLoadError(
                    f"model {model!r} {what + ' ' if what else ''}failed to load on {self.where}: {failed[0].reason}",
                    model=model,
                    reason=failed[0].reason,
                )

    def _raise_if_closed(self) -> None:
        if self._closed.is_set():
            raise ClientClosedError(f"this ControlClient ({self.where}) was closed while waiting")

    # ------------------------------------------------------------------ requests
    def warm(
        self, model: str, version: int, inputs: Mapping[str, np.ndarray], *, timeout_s: float = 60.0
    ) -> None:
        """Send one request to ``version`` of ``model`` (a one-request sequence for a stateful model).

        Raises:
            InferenceFailed: the server answered with an error.
        """
        infer_inputs = []
        for name, array in inputs.items():
            arr = np.ascontiguousarray(array)
            inp = grpcclient.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
            inp.set_data_from_numpy(arr)
            infer_inputs.append(inp)
        seq: dict[str, Any] = {}
        if self.model_config(model).HasField("sequence_batching"):
            seq = {"sequence_id": secrets.randbits(62) + 1, "sequence_start": True, "sequence_end": True}
        if self._closed.is_set():
            raise ClientClosedError(f"this ControlClient ({self.where}) is closed; create a new one")
        with translated(endpoint=self.where, model=model):
            self._grpc.infer(
                model, infer_inputs, model_version=str(version), headers=self._headers,
                client_timeout=timeout_s, **seq,
            )  # fmt: skip

    def statistics(self, model: str = "", version: int | str = "") -> dict[str, Any]:
        """Triton's cumulative statistics (JSON form) of ``model`` (default: every model)."""
        what = "reading the statistics" + (f" of {model!r}" if model else "")
        return dict(self._call(what, "get_inference_statistics", model, str(version), as_json=True))

    def mean_statistics(self, model: str, version: int | str = "") -> dict[str, float]:
        """``count`` of successful requests and their mean ``queue_s``, ``compute_{input,infer,output}_s``."""
        model_stats = self.statistics(model, version).get("model_stats", [])
        if not model_stats:
            return {"count": 0.0}
        infer = model_stats[0].get("inference_stats", {})
        count = float(infer.get("success", {}).get("count", 0))

        def mean(key: str) -> float:
            return float(infer.get(key, {}).get("ns", 0)) / 1e9 / count if count else 0.0

        return {
            "count": count,
            "queue_s": mean("queue"),
            "compute_input_s": mean("compute_input"),
            "compute_infer_s": mean("compute_infer"),
            "compute_output_s": mean("compute_output"),
        }

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the gRPC channel (unless it was handed in); a wait in another thread ends. Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._owns_grpc:
            self._grpc.close()


def config_proto(config: pb.ModelConfig | ModelConfig | Mapping[str, Any]) -> pb.ModelConfig:
    """A config override as a new protobuf (Triton's JSON form is parsed; unknown fields refused)."""
    copy = pb.ModelConfig()
    if isinstance(config, ModelConfig):
        copy.CopyFrom(config.proto)
    elif isinstance(config, pb.ModelConfig):
        copy.CopyFrom(config)
    else:
        try:
            json_format.ParseDict(config, copy)
        except json_format.ParseError as exc:
            raise ValueError(f"config: not a Triton model configuration: {exc}") from None
    return copy
