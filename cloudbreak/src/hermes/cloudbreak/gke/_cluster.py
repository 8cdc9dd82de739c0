"""Context managers for a GKE cluster and a node pool that delete what they created."""

from __future__ import annotations

import base64
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.cloud import container_v1

from hermes.cloudbreak._managed import ManagedResource
from hermes.cloudbreak.exceptions import CapacityError, CloudbreakError, CloudConfigError, ResourceExists
from hermes.cloudbreak.gke._specs import ClusterSpec, NodePoolSpec

if TYPE_CHECKING:
    import kubernetes.client

    from hermes.cloudbreak.gke._manager import ClusterManager

__all__ = ["Cluster", "NodePool"]

logger = logging.getLogger("hermes.cloudbreak.gke")


class Cluster(ManagedResource):
    """A GKE cluster created on ``__enter__`` and deleted on exit, on errors and on SIGINT/SIGTERM.

    Made by :meth:`ClusterManager.cluster`. A cluster of the same name that existed before is
    never deleted: entering raises :class:`ResourceExists`. Made by :meth:`ClusterManager.attach`
    (``spec`` is then the name of an existing cluster), entering only gets the cluster, and
    nothing is ever deleted.

    With ``failover`` (zones or regions), a :class:`CapacityError` in one location (after the
    manager's retry policy gave up there) moves on to the next; what a failed location created
    is deleted first. :attr:`location` is where the cluster came up.

    Attributes:
        spec: what is created; ``None`` for an attached cluster.
        info: the ``google.container.v1.Cluster`` as GKE described it once running.
        failover: the locations tried, in order, after the manager's own.
    """

    def __init__(
        self,
        manager: ClusterManager,
        spec: ClusterSpec | str,
        *,
        keep: bool = False,
        timeout_s: float | None = None,
        failover: Sequence[str] = (),
    ):
        super().__init__(keep=keep)
        self.manager = manager
        self.failover = tuple(dict.fromkeys(loc for loc in failover if loc != manager.location))
        self.spec: ClusterSpec | None = spec if isinstance(spec, ClusterSpec) else None
        self._name = spec.name if isinstance(spec, ClusterSpec) else spec
        self.timeout_s = timeout_s
        self.info: container_v1.Cluster | None = None
        self._requested = False
        self._kube_used = False
        self._ca_file: str | None = None

    @property
    def name(self) -> str:
        """The cluster's name."""
        return self._name

    @property
    def location(self) -> str:
        """The zone or region of the cluster (after failover, where it came up)."""
        return self.manager.location

    @property
    def node_locations(self) -> list[str]:
        """The zones the cluster's nodes run in (``Cluster.locations``); a pool's ``node_count`` is per zone."""
        return list(self.info.locations) if self.info is not None else []

    def gpu_total(self) -> int:
        """The GPUs of every running pool: per-zone node count x zones x GPUs per node."""
        if self.info is None:
            return 0
        total = 0
        for pool in self.info.node_pools:
            zones = len(pool.locations) or len(self.info.locations) or 1
            gpus = sum(a.accelerator_count for a in pool.config.accelerators)
            total += pool.initial_node_count * zones * gpus
        return total

    def describe(self) -> str:
        return f"GKE cluster {self._name} in {self.manager.parent}"

    def __enter__(self) -> Cluster:
        super().__enter__()
        return self

    def _create(self) -> None:
        if self.spec is None:  # attached: someone else's cluster, only read
            self.info = self.manager.get_cluster(self._name)
            return
        tried: list[str] = []
        for location in (self.manager.location, *self.failover):
            manager = self.manager if location == self.manager.location else self.manager.at(location)
            tried.append(location)
            self._requested = True  # from here on a cluster may exist, even if the call fails midway
            try:
                self.info = manager.create_cluster(self.spec, timeout_s=self.timeout_s)
            except ResourceExists:
                self._requested = False  # someone else's cluster: never delete it
                raise
            except CapacityError as exc:
                self._requested = False  # create_cluster deleted what the failed attempt made
                if len(tried) == 1 + len(self.failover):  # the last location
                    raise CapacityError(
                        f"{exc} (locations tried: {', '.join(tried)})",
                        kind=exc.kind,
                        attempts=exc.attempts,
                        code=exc.code,
                        resource=exc.resource,
                        zones_available=exc.zones_available,
                        locations_tried=tuple(tried),
                    ) from exc
                logger.warning(
                    "%s: no capacity in %s (%s); failing over", self.describe(), location, exc.kind
                )
                continue
            self.manager = manager
            return

    def _delete(self) -> list[str]:
        if self._requested:
            self._release_load_balancers()
        if self._ca_file is not None:
            Path(self._ca_file).unlink(missing_ok=True)
            self._ca_file = None
        if not self._requested:
            return []
        logger.info("deleting %s", self.describe())
        try:
            self.manager.delete_with_retries(
                lambda: self.manager.delete_cluster(self._name, missing_ok=True), self.describe()
            )
        except CloudbreakError as exc:
            return [f"{self.describe()} ({exc})"]
        return []

    def _release_load_balancers(self) -> None:
        """When Kubernetes was used through :meth:`kube_api_client`, delete the cluster's LoadBalancer
        Services first (GKE then deletes their forwarding rules); best-effort, the cluster goes anyway."""
        if not self._kube_used or self.info is None:
            return
        from hermes.cloudbreak.kubernetes import delete_load_balancers

        try:
            with self.kube_api_client() as api:
                delete_load_balancers(
                    api,
                    timeout_s=min(self.manager.timeout_s, 600.0),
                    poll_interval_s=self.manager.poll_interval_s,
                )
        except CloudbreakError as exc:
            logger.warning(
                "%s: could not delete its load balancers first (%s); check forwarding rules",
                self.describe(),
                exc,
            )

    def close(self) -> None:
        """Delete the cluster unless kept (an attached cluster never is); remove the CA file. Idempotent."""
        if self._ca_file is not None:
            Path(self._ca_file).unlink(missing_ok=True)
            self._ca_file = None
        if self.spec is None:  # attached: nothing of ours to delete, nothing to warn about
            self._state = "closed"
            return
        super().close()

    def node_pool(
        self, spec: NodePoolSpec, *, keep: bool = False, timeout_s: float | None = None
    ) -> NodePool:
        """A node pool added to this cluster on entry and deleted on exit."""
        return NodePool(self.manager, self._name, spec, keep=keep, timeout_s=timeout_s)

    def kube_api_client(self) -> kubernetes.client.ApiClient:
        """A ``kubernetes`` API client for this cluster, authenticated by the manager's Google credentials.

        The API server's certificate is checked against the cluster's CA (written to a temporary
        file removed on :meth:`close`). The bearer token is refreshed before it expires; neither it
        nor the credentials are logged. Anonymous credentials (emulators) send no token.
        """
        import google.auth.transport.requests
        import kubernetes.client

        if self.info is None:
            raise CloudbreakError(f"{self.describe()} is not running; enter the context first")
        credentials = self.manager.credentials
        if credentials is None:
            raise CloudConfigError(
                "kube_api_client needs the ClusterManager's Google credentials; none were given"
            )
        self._kube_used = True
        config = kubernetes.client.Configuration()
        config.host = f"https://{self.info.endpoint}"
        ca = self.info.master_auth.cluster_ca_certificate
        if ca:
            if self._ca_file is None:
                handle, self._ca_file = tempfile.mkstemp(prefix=f"hermes-{self.name}-ca-", suffix=".crt")
                with os.fdopen(handle, "wb") as fh:
                    fh.write(base64.b64decode(ca))
            config.ssl_ca_cert = self._ca_file

        def refresh(cfg: Any) -> None:
            if not credentials.valid:
                credentials.refresh(google.auth.transport.requests.Request())
            cfg.api_key = {"authorization": credentials.token} if credentials.token else {}

        config.api_key_prefix = {"authorization": "Bearer"}
        config.refresh_api_key_hook = refresh  # type: ignore[assignment]
        refresh(config)
        return kubernetes.client.ApiClient(config)


class NodePool(ManagedResource):
    """A node pool added on ``__enter__`` and deleted on exit (unless kept); see :class:`Cluster`."""

    def __init__(
        self,
        manager: ClusterManager,
        cluster: str,
        spec: NodePoolSpec,
        *,
        keep: bool = False,
        timeout_s: float | None = None,
    ):
        super().__init__(keep=keep)
        self.manager = manager
        self.cluster = cluster
        self.spec = spec
        self.timeout_s = timeout_s
        self.info: container_v1.NodePool | None = None
        self._requested = False

    def describe(self) -> str:
        return f"node pool {self.spec.name} of GKE cluster {self.cluster}"

    def __enter__(self) -> NodePool:
        super().__enter__()
        return self

    def _create(self) -> None:
        self._requested = True
        try:
            self.info = self.manager.create_node_pool(self.cluster, self.spec, timeout_s=self.timeout_s)
        except ResourceExists:
            self._requested = False
            raise

    def _delete(self) -> list[str]:
        if not self._requested:
            return []
        try:
            self.manager.delete_with_retries(
                lambda: self.manager.delete_node_pool(self.cluster, self.spec.name, missing_ok=True),
                self.describe(),
            )
        except CloudbreakError as exc:
            return [f"{self.describe()} ({exc})"]
        return []
