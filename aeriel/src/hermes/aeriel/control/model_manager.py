"""Model control on every server of a cluster: load, unload, and swap versions.

A swap from version ``old`` to ``new``:

```
 1. load     version_policy {specific [old, new]} via load_model(config=...) on every server
 2. warm     one request to `new` on every server (optional inputs)
 3. switch   on_switch(new): the client sends NEW sequences to `new`
 4. drain    drain(timeout_s, {old}): live sequences on `old` finish (or time out)
 5. retire   version_policy {specific [new]}; wait until `old` is gone everywhere
```

Triton reloads a version only when its files or the non-``instance_group``,
non-``version_policy`` part of the config change, so steps 1 and 5 leave the state of
running sequences alone. One trap, measured here: the python backend writes
``__pycache__`` into a python model's version folder the first time it loads it; the
folder's changed time then counts as "files changed" and the next load re-creates that
version, dropping its sequences. Ship python models with their ``__pycache__`` (or
compile them before serving); ONNX/TorchScript folders are not affected.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as pb

from hermes.aeriel.endpoints import Endpoint, load_endpoints
from hermes.aeriel.exceptions import (
    ClientClosedError,
    ConnectionFailed,
    InferenceFailed,
    ModelLoadError,
    ServerStartTimeout,
)
from hermes.quiver.config import ModelConfig

__all__ = ["ModelManager", "SwapReport"]

logger = logging.getLogger("hermes.aeriel.routing")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SwapReport:
    """How a swap went.

    Args:
        model: the model swapped.
        old_versions: versions retired.
        new_version: the version now serving.
        load_s: seconds to load the new version beside the old one on every server.
        warmup_s: seconds of warm-up requests.
        drain_s: seconds waiting for sequences on the old version to finish.
        retire_s: seconds to unload the old version everywhere.
        total_s: seconds from start to end.
        abandoned: sequences still on the old version when the drain timed out.
    """

    model: str
    old_versions: tuple[int, ...]
    new_version: int
    load_s: float
    warmup_s: float
    drain_s: float
    retire_s: float
    total_s: float
    abandoned: int = 0


class ModelManager:
    """Load, unload and swap model versions on every server of a cluster (explicit mode).

    Args:
        endpoints: the servers (anything :func:`~hermes.aeriel.routing.load_endpoints` takes).
        timeout_s: default seconds one load or unload may take.

    ```python
    with ModelManager(endpoints) as models:
        models.load("mlp", versions=[1])
        report = models.swap("mlp", 2)
    ```
    """

    def __init__(self, endpoints: Any, *, timeout_s: float = 120.0):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
        self.endpoints: list[Endpoint] = (
            [endpoints] if isinstance(endpoints, Endpoint) else load_endpoints(endpoints)
        )
        self.timeout_s = float(timeout_s)
        self._clients: dict[str, Any] = {}
        self._closed = False
        self._wake = threading.Event()  # set by close(): ends the waits of a load

    # ------------------------------------------------------------------ helpers
    def _client(self, endpoint: Endpoint) -> Any:
        if self._closed:
            raise ClientClosedError("this ModelManager is closed; create a new one")
        client = self._clients.get(endpoint.name)
        if client is None:
            import tritonclient.grpc as grpcclient

            client = grpcclient.InferenceServerClient(endpoint.grpc)
            self._clients[endpoint.name] = client
        return client

    def _call(self, endpoint: Endpoint, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """``client.<method>(*args, **kwargs)`` on ``endpoint``, with tritonclient's errors translated."""
        from tritonclient.utils import InferenceServerException

        try:
            return getattr(self._client(endpoint), method)(*args, **kwargs)
        except InferenceServerException as exc:
            status = str(exc.status() or "")
            if "UNAVAILABLE" in status:
                raise ConnectionFailed(
                    f"{what}: server {endpoint.name} ({endpoint.grpc}) is unreachable"
                ) from exc
            raise ModelLoadError(
                f"{what} on {endpoint.name}: {exc.message()}", reason=str(exc.message())
            ) from exc

    def _ready_on(self, ep: Endpoint, model: str) -> list[int]:
        index = self._call(ep, "reading the repository index", "get_model_repository_index", as_json=True)
        return sorted(
            int(m["version"])
            for m in index.get("models", [])
            if m.get("name") == model and m.get("state") == "READY" and str(m.get("version", "")).isdigit()
        )

    def ready_versions(self, model: str) -> dict[str, list[int]]:
        """``{endpoint name: ready versions of model}`` from each server's repository index."""
        return {ep.name: self._ready_on(ep, model) for ep in self.endpoints}

    def config(self, model: str, endpoint: Endpoint | None = None) -> pb.ModelConfig:
        """The model's configuration as the server holds it."""
        ep = endpoint or self.endpoints[0]
        response = self._call(ep, f"reading the config of {model!r}", "get_model_config", model)
        return response.config

    def _wait_versions(
        self, ep: Endpoint, model: str, ready: Iterable[int], gone: Iterable[int], deadline: float
    ) -> None:
        ready, gone = list(ready), list(gone)
        interval = 0.01
        while True:
            missing = [v for v in ready if not self._call(ep, "readiness", "is_model_ready", model, str(v))]
            lingering = [v for v in gone if self._call(ep, "readiness", "is_model_ready", model, str(v))]
            if not missing and not lingering:
                return
            if missing:
                self._raise_unavailable(ep, model, missing)
            if time.monotonic() >= deadline:
                raise ServerStartTimeout(
                    f"model {model!r} on {ep.name}: version(s) {missing or lingering} "
                    f"{'not ready' if missing else 'still loaded'} before the deadline"
                )
            self._wake.wait(interval)
            interval = min(interval * 1.5, 0.2)

    def _raise_unavailable(self, ep: Endpoint, model: str, missing: list[int]) -> None:
        """Raise ModelLoadError for a wanted version Triton does not have or could not load."""
        index = self._call(
            ep,
            "reading the repository index",
            "get_model_repository_index",
            as_json=True,
        )
        entries = {
            int(m["version"]): m
            for m in index.get("models", [])
            if m.get("name") == model and str(m.get("version", "")).isdigit()
        }
        for v in missing:
            entry = entries.get(v)
            if entry is None:
                raise ModelLoadError(
                    f"model {model!r} version {v} is not in the repository of {ep.name} "
                    f"(versions there: {sorted(entries) or 'none'}); the previous versions keep serving",
                    model=model,
                    reason=f"version {v} not found",
                )
            if entry.get("state") == "UNAVAILABLE":
                reason = str(entry.get("reason", ""))
                raise ModelLoadError(
                    f"model {model!r} version {v} failed to load on {ep.name}: {reason}",
                    model=model,
                    reason=reason,
                )

    # ------------------------------------------------------------------ control
    def load(
        self,
        model: str,
        *,
        versions: Iterable[int] | None = None,
        config: pb.ModelConfig | ModelConfig | Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """Load (or reload) ``model`` on every server and wait until it is ready.

        Args:
            model: the model name in the repository.
            versions: exactly these versions (a ``version_policy { specific }`` override
                on top of ``config`` or the served configuration); others are unloaded.
            config: a full configuration override: a ``model_config_pb2.ModelConfig``, a
                quiver :class:`~hermes.quiver.ModelConfig`, or Triton's JSON form as a dict.
            timeout_s: seconds per server (default: the manager's).

        Raises:
            ModelLoadError: a server refused (Triton keeps serving the previous versions).
            ConnectionFailed: a server is unreachable.
            ServerStartTimeout: a version was not ready (or not gone) in time.
        """
        wanted = sorted({int(v) for v in versions}) if versions is not None else None
        if wanted is not None and (not wanted or any(v < 1 for v in wanted)):
            raise ValueError(f"versions must be positive integers, got {versions!r}")
        limit = self.timeout_s if timeout_s is None else timeout_s
        override = _config_proto(config) if config is not None else None
        self._on_every_server(lambda ep: self._load_one(ep, model, wanted, override, limit))

    def _on_every_server(self, task: Callable[[Endpoint], None]) -> None:
        """Run ``task`` for every endpoint at once (one thread each); raise the first error."""
        for ep in self.endpoints:
            self._client(ep)  # create the clients before the threads share the dict
        if len(self.endpoints) == 1:
            task(self.endpoints[0])
            return
        with concurrent.futures.ThreadPoolExecutor(
            len(self.endpoints), thread_name_prefix="hermes-models"
        ) as pool:
            futures = [pool.submit(task, ep) for ep in self.endpoints]
        for future in futures:
            future.result()

    def _load_one(
        self,
        ep: Endpoint,
        model: str,
        wanted: list[int] | None,
        config: pb.ModelConfig | None,
        limit: float,
    ) -> None:
        deadline = time.monotonic() + limit
        cfg = _copy(config) if config is not None else None
        before: list[int] = []
        if wanted is not None:
            before = self._ready_on(ep, model)
            if cfg is None:
                if not before:
                    self._call(ep, f"loading {model!r}", "load_model", model, client_timeout=limit)
                cfg = self.config(model, ep)
            cfg.version_policy.Clear()
            cfg.version_policy.specific.versions.extend(wanted)
        body = json_format.MessageToJson(cfg, preserving_proto_field_name=True) if cfg is not None else None
        started = time.monotonic()
        self._call(
            ep,
            f"loading {model!r}" + (f" versions {wanted}" if wanted else ""),
            "load_model",
            model,
            config=body,
            client_timeout=limit,
        )
        gone = [v for v in before if wanted is not None and v not in wanted]
        self._wait_versions(ep, model, wanted or [], gone, deadline)
        logger.info(
            "loaded %s%s on %s in %.2f s",
            model,
            f" versions {wanted}" if wanted else "",
            ep.name,
            time.monotonic() - started,
        )

    def unload(self, model: str, *, timeout_s: float | None = None) -> None:
        """Unload every version of ``model`` on every server, waiting until none is ready."""
        limit = self.timeout_s if timeout_s is None else timeout_s

        def unload_one(ep: Endpoint) -> None:
            deadline = time.monotonic() + limit
            versions = self._ready_on(ep, model)
            self._call(ep, f"unloading {model!r}", "unload_model", model)
            # unload_model returns before the unload finishes: wait for it
            self._wait_versions(ep, model, [], versions, deadline)

        self._on_every_server(unload_one)

    def warm(
        self, model: str, version: int, inputs: Mapping[str, np.ndarray], *, timeout_s: float = 60.0
    ) -> None:
        """Send one request to ``version`` on every server (a one-request sequence for stateful models).

        Raises:
            InferenceFailed: a server answered with an error.
        """
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        for ep in self.endpoints:
            client = self._client(ep)
            stateful = self.config(model, ep).HasField("sequence_batching")
            infer_inputs = []
            for name, array in inputs.items():
                arr = np.ascontiguousarray(array)
                inp = grpcclient.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
                inp.set_data_from_numpy(arr)
                infer_inputs.append(inp)
            seq: dict[str, Any] = {}
            if stateful:
                seq = {"sequence_id": secrets.randbits(62) + 1, "sequence_start": True, "sequence_end": True}
            try:
                client.infer(model, infer_inputs, model_version=str(version), client_timeout=timeout_s, **seq)
            except InferenceServerException as exc:
                raise InferenceFailed(
                    f"warm-up of {model!r} version {version} on {ep.name} failed: {exc.message()}"
                ) from exc

    def swap(
        self,
        model: str,
        new_version: int,
        *,
        warmup: Mapping[str, np.ndarray] | None = None,
        on_switch: Callable[[int], None] | None = None,
        drain: Callable[[float, frozenset[int]], int] | None = None,
        drain_timeout_s: float = 60.0,
        timeout_s: float | None = None,
    ) -> SwapReport:
        """Replace the served versions of ``model`` by ``new_version`` without dropping sequences.

        Args:
            model: the model name.
            new_version: the version to serve from now on (its folder must be in the repository).
            warmup: inputs for one warm-up request per server to the new version.
            on_switch: called with ``new_version`` once it is loaded and warm: route new work there.
            drain: ``drain(timeout_s, old_versions) -> abandoned``: wait for live sequences on
                the old versions to end; returns how many were still live at the timeout.
            drain_timeout_s: seconds the drain may take.
            timeout_s: seconds per load on each server.

        Returns:
            A :class:`SwapReport` with the time of each step.

        Raises:
            ModelLoadError: the new version did not load; the old ones keep serving and
                nothing was switched.
        """
        new_version = int(new_version)
        if new_version < 1:
            raise ValueError(f"new_version must be a positive integer, got {new_version!r}")
        start = time.monotonic()
        ready = self.ready_versions(model)
        old = sorted({v for versions in ready.values() for v in versions} - {new_version})
        self.load(model, versions=[*old, new_version], timeout_s=timeout_s)
        loaded = time.monotonic()
        if warmup is not None:
            self.warm(model, new_version, warmup)
        warmed = time.monotonic()
        if on_switch is not None:
            on_switch(new_version)
        abandoned = drain(drain_timeout_s, frozenset(old)) if drain is not None else 0
        drained = time.monotonic()
        self.load(model, versions=[new_version], timeout_s=timeout_s)
        end = time.monotonic()
        report = SwapReport(
            model=model,
            old_versions=tuple(old),
            new_version=new_version,
            load_s=loaded - start,
            warmup_s=warmed - loaded,
            drain_s=drained - warmed,
            retire_s=end - drained,
            total_s=end - start,
            abandoned=abandoned,
        )
        logger.info(
            "swapped %s %s -> %d in %.2f s (load %.2f, drain %.2f, retire %.2f; %d abandoned)",
            model,
            old,
            new_version,
            report.total_s,
            report.load_s,
            report.drain_s,
            report.retire_s,
            abandoned,
        )
        return report

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the gRPC clients. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()  # a load waiting in another thread stops at its next check
        for client in self._clients.values():
            try:
                client.close()
            except Exception:
                pass
        self._clients.clear()

    def __enter__(self) -> ModelManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _copy(config: pb.ModelConfig) -> pb.ModelConfig:
    copy = pb.ModelConfig()
    copy.CopyFrom(config)
    return copy


def _config_proto(config: pb.ModelConfig | ModelConfig | Mapping[str, Any]) -> pb.ModelConfig:
    """A config override as the protobuf (Triton's JSON form is parsed; unknown fields refused)."""
    if isinstance(config, ModelConfig):
        return _copy(config.proto)
    if isinstance(config, pb.ModelConfig):
        return _copy(config)
    try:
        return json_format.ParseDict(config, pb.ModelConfig())
    except json_format.ParseError as exc:
        raise ValueError(f"config: not a Triton model configuration: {exc}") from None
