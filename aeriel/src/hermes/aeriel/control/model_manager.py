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
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2 as pb

from hermes.aeriel._lifecycle import Closeable
from hermes.aeriel.control.client import ADMIN_TOKEN_HEADER, ControlClient, config_proto
from hermes.aeriel.endpoints import Endpoint, load_endpoints
from hermes.aeriel.exceptions import ClientClosedError, ConnectionFailed
from hermes.quiver.config import ModelConfig

__all__ = ["ModelManager", "SwapReport"]

logger = logging.getLogger("hermes.aeriel.control")


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


class ModelManager(Closeable):
    """Load, unload and swap model versions on every server of a cluster (explicit mode).

    One :class:`~hermes.aeriel.control.ControlClient` per server does the work; the manager
    runs it on every server at once.

    Args:
        endpoints: the servers (anything :func:`~hermes.aeriel.endpoints.load_endpoints` takes).
        timeout_s: default seconds one load or unload may take (and one call to a server).
        admin_token: the token of the servers' restricted API, sent with every call.
        admin_header: the key the servers were started with (``<key>=<token>``).

    ```python
    with ModelManager(endpoints) as models:
        models.load("mlp", versions=[1])
        report = models.swap("mlp", 2)
    ```
    """

    def __init__(
        self,
        endpoints: Any,
        *,
        timeout_s: float = 120.0,
        admin_token: str | None = None,
        admin_header: str = ADMIN_TOKEN_HEADER,
    ):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
        self.endpoints: list[Endpoint] = (
            [endpoints] if isinstance(endpoints, Endpoint) else load_endpoints(endpoints)
        )
        self.timeout_s = float(timeout_s)
        self._token = (admin_token, admin_header)
        self._clients: dict[str, ControlClient] = {}
        self._closed = False

    # ------------------------------------------------------------------ servers
    def client(self, endpoint: Endpoint) -> ControlClient:
        """The control client of ``endpoint`` (made on first use, closed with the manager)."""
        if self._closed:
            raise ClientClosedError("this ModelManager is closed; create a new one")
        client = self._clients.get(endpoint.name)
        if client is None:
            token, header = self._token
            client = ControlClient(endpoint, timeout_s=self.timeout_s, admin_token=token, admin_header=header)
            self._clients[endpoint.name] = client
        return client

    def check_reachable(self) -> None:
        """Raise ConnectionFailed naming every server that does not answer a liveness check."""
        down = []
        for ep in self.endpoints:
            try:
                self.client(ep).is_live()
            except ConnectionFailed as exc:
                down.append(str(exc))
        if down:
            raise ConnectionFailed("\n".join(down))

    def ready_versions(self, model: str) -> dict[str, list[int]]:
        """``{endpoint name: ready versions of model}`` from each server's repository index."""
        return {ep.name: self.client(ep).ready_versions(model) for ep in self.endpoints}

    def config(self, model: str, endpoint: Endpoint | None = None) -> pb.ModelConfig:
        """The model's configuration as the server holds it."""
        return self.client(endpoint or self.endpoints[0]).model_config(model)

    def _on_every_server(self, task: Callable[[ControlClient], None]) -> None:
        """Run ``task`` for every server at once (one thread each); raise the first error."""
        clients = [self.client(ep) for ep in self.endpoints]  # made before the threads share the dict
        if len(clients) == 1:
            task(clients[0])
            return
        with concurrent.futures.ThreadPoolExecutor(len(clients), thread_name_prefix="hermes-models") as pool:
            futures = [pool.submit(task, client) for client in clients]
        for future in futures:
            future.result()

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
            config: a full configuration override: the protobuf, a quiver ``ModelConfig`` or
                Triton's JSON form.
            timeout_s: seconds per server (default: the manager's).

        Raises:
            ModelLoadError: a server refused (Triton keeps serving the previous versions).
            ConnectionFailed: a server is unreachable.
            ModelControlTimeout: a version was not ready (or not gone) in time.
        """
        wanted = sorted({int(v) for v in versions}) if versions is not None else None
        if wanted is not None and (not wanted or any(v < 1 for v in wanted)):
            raise ValueError(f"versions must be positive integers, got {versions!r}")
        limit = self.timeout_s if timeout_s is None else timeout_s

        override = config_proto(config) if config is not None else None  # a bad one: before any server

        def load_one(client: ControlClient) -> None:
            started = time.monotonic()
            client.load(model, versions=wanted, config=override, timeout_s=limit)
            what = f" versions {wanted}" if wanted else ""
            logger.info("loaded %s%s on %s in %.2f s", model, what, client.where, time.monotonic() - started)

        self._on_every_server(load_one)

    def unload(self, model: str, *, timeout_s: float | None = None) -> None:
        """Unload every version of ``model`` on every server, waiting until none is ready or unloading."""
        limit = self.timeout_s if timeout_s is None else timeout_s
        self._on_every_server(lambda client: client.unload(model, timeout_s=limit))

    def warm(
        self, model: str, version: int, inputs: Mapping[str, np.ndarray], *, timeout_s: float = 60.0
    ) -> None:
        """Send one request to ``version`` on every server (a one-request sequence for stateful models).

        Raises:
            InferenceFailed: a server answered with an error.
        """
        for ep in self.endpoints:
            self.client(ep).warm(model, version, inputs, timeout_s=timeout_s)

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
        """Close the control clients; a load waiting in another thread stops at once. Idempotent."""
        if self._closed:
            return
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
