"""GKE clusters and node pools through google-cloud-container, with bounded waits and retries.

The client is injectable: pass ``client=`` (any ``ClusterManagerClient``, e.g. one on an
insecure channel to a local fake); otherwise one is built on the gRPC (default) or REST
transport with Application Default Credentials or a service-account key. Both transports
raise the same hermes errors: REST reports 409 as ``Conflict``, 429 as ``TooManyRequests``
and FAILED_PRECONDITION as a plain ``BadRequest``, so errors are matched on those parents
and on the status name in the body.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.auth.credentials import Credentials
from google.cloud import container_v1

from hermes.cloudbreak._credentials import load_credentials
from hermes.cloudbreak._errors import (
    GOOGLE_ERRORS,
    capacity_from_conditions,
    capacity_kind,
    google_status,
    quota_resource,
    translate_error,
    zones_available,
)
from hermes.cloudbreak._retry import RetryPolicy, retry_transient
from hermes.cloudbreak._validation import check_location, check_project
from hermes.cloudbreak._wait import poll_until
from hermes.cloudbreak.exceptions import (
    CapacityError,
    CloudbreakError,
    CloudConfigError,
    OperationFailed,
    OperationTimeout,
    ResourceNotFound,
)
from hermes.cloudbreak.gke._specs import (
    ClusterSpec,
    NodePoolSpec,
    create_cluster_request,
    delete_cluster_request,
)

if TYPE_CHECKING:
    from hermes.cloudbreak.gke._cluster import Cluster, NodePool

__all__ = ["ClusterManager", "OperationProgress"]

logger = logging.getLogger("hermes.cloudbreak.gke")

T = TypeVar("T")
OperationProgress = Callable[[container_v1.Operation], None]
_DONE = container_v1.Operation.Status.DONE
_TRANSPORTS = ("grpc", "rest")


def _is_emulator(api_endpoint: str | None) -> bool:
    return bool(api_endpoint and api_endpoint.startswith("http://"))


def _make_client(
    transport: str, api_endpoint: str | None, credentials: Credentials | None
) -> container_v1.ClusterManagerClient:
    """A ``ClusterManagerClient`` on ``transport``.

    A plain ``http://`` endpoint is an emulator: gRPC gets an insecure channel, REST anonymous
    credentials unless others were given (never a Google token by default over plain HTTP).
    """
    from google.api_core.client_options import ClientOptions

    if _is_emulator(api_endpoint) and credentials is None:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()
    if transport == "grpc" and api_endpoint and _is_emulator(api_endpoint):
        import grpc
        from google.cloud.container_v1.services.cluster_manager.transports import ClusterManagerGrpcTransport

        channel = grpc.insecure_channel(api_endpoint.removeprefix("http://"))
        return container_v1.ClusterManagerClient(transport=ClusterManagerGrpcTransport(channel=channel))
    options = ClientOptions(api_endpoint=api_endpoint) if api_endpoint else None
    return container_v1.ClusterManagerClient(
        transport=transport, credentials=credentials, client_options=options
    )


class ClusterManager:
    """Create, get, list and delete GKE clusters and node pools in one project and location.

    Args:
        project: the GCP project id; ``None`` takes the one the credentials name.
        location: a zone (``us-central1-a``) or a region (``us-central1``).
        client: a ready ``ClusterManagerClient``; ``None`` builds one from the credentials.
        transport: ``"grpc"`` (default) or ``"rest"``, for the client built here.
        api_endpoint: another endpoint than container.googleapis.com for the client built here;
            ``http://host:port`` means a local emulator: plain HTTP for REST, an insecure channel
            for gRPC.
        credentials: Google credentials; ``None`` loads ``credentials_file`` or ADC.
        credentials_file: a service-account JSON key (used when ``credentials`` is ``None``).
        retry: how GPU stockouts and quota errors are retried.
        timeout_s: the default deadline of each long-running operation, in seconds.
        poll_interval_s: the wait between two operation polls, in seconds.
        progress: called with each polled operation (status, detail, progress); ``None`` logs it.
        stockout_grace_s: GKE retries a GPU stockout inside one operation for up to 35 minutes;
            once ``Operation.nodepool_conditions`` has reported GCE_STOCKOUT (or GCE_QUOTA_EXCEEDED)
            for this many seconds, stop waiting and raise :class:`CapacityError` (so the retry
            policy or a failover location can act). ``None`` waits for the operation to end.
        read_retry_deadline_s: how long reads (operations, clusters, node pools) are retried by
            google-api-core on UNAVAILABLE/DEADLINE_EXCEEDED before its ``RetryError``; ``None``
            keeps the client's default.
    """

    def __init__(
        self,
        *,
        project: str | None = None,
        location: str,
        client: container_v1.ClusterManagerClient | None = None,
        transport: str = "grpc",
        api_endpoint: str | None = None,
        credentials: Credentials | None = None,
        credentials_file: str | Path | None = None,
        retry: RetryPolicy | None = None,
        timeout_s: float = 1800.0,
        poll_interval_s: float = 10.0,
        progress: OperationProgress | None = None,
        stockout_grace_s: float | None = 600.0,
        read_retry_deadline_s: float | None = None,
    ):
        emulator = _is_emulator(api_endpoint)
        if project is not None:
            check_project("ClusterManager", project)
        check_location("ClusterManager", location, allow_all=True)
        if credentials is None and (project is None or (client is None and not emulator)):
            credentials, default_project = load_credentials(credentials_file)
            project = project or default_project
        if transport not in _TRANSPORTS:
            raise CloudConfigError(
                f"ClusterManager.transport must be one of {list(_TRANSPORTS)}, got {transport!r}"
            )
        if not project:
            raise CloudConfigError("ClusterManager.project is not set and the credentials name no project")
        check_project("ClusterManager", project)
        if timeout_s <= 0 or poll_interval_s <= 0:
            raise CloudConfigError(
                f"ClusterManager.timeout_s and poll_interval_s must be > 0, got {timeout_s} and {poll_interval_s}"
            )
        self.project = project
        self.location = location
        self.credentials = credentials
        self.transport = transport
        self._owns_client = client is None
        self.client = client or _make_client(transport, api_endpoint, credentials)
        self.retry = retry or RetryPolicy()
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self.progress = progress
        self.stockout_grace_s = stockout_grace_s
        self.read_retry_deadline_s = read_retry_deadline_s
        self.stop = threading.Event()

    def __repr__(self) -> str:  # never shows the credentials
        return f"ClusterManager(project={self.project!r}, location={self.location!r})"

    def close(self) -> None:
        """Close the connection of a client built here (an injected ``client`` is left to its owner). Idempotent."""
        if self._owns_client:
            self._owns_client = False
            self.client.transport.close()

    def __enter__(self) -> ClusterManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------- names and requests
    @property
    def parent(self) -> str:
        """``projects/<project>/locations/<location>``."""
        return f"projects/{self.project}/locations/{self.location}"

    def cluster_path(self, cluster: str) -> str:
        """The full resource name of a cluster."""
        return f"{self.parent}/clusters/{cluster}"

    def node_pool_path(self, cluster: str, pool: str) -> str:
        """The full resource name of a node pool."""
        return f"{self.cluster_path(cluster)}/nodePools/{pool}"

    def create_cluster_request(self, spec: ClusterSpec) -> container_v1.CreateClusterRequest:
        """The exact request :meth:`create_cluster` sends for ``spec``."""
        return create_cluster_request(self.project, self.location, spec)

    def create_node_pool_request(
        self, cluster: str, spec: NodePoolSpec
    ) -> container_v1.CreateNodePoolRequest:
        """The exact request :meth:`create_node_pool` sends for ``spec``."""
        return container_v1.CreateNodePoolRequest(
            parent=self.cluster_path(cluster), node_pool=spec.to_proto()
        )

    # ----------------------------------------------------------------- plumbing
    def at(self, location: str) -> ClusterManager:
        """A manager of the same project, client and settings in another zone or region."""
        other = ClusterManager(
            project=self.project,
            location=location,
            client=self.client,
            credentials=self.credentials,
            retry=self.retry,
            timeout_s=self.timeout_s,
            poll_interval_s=self.poll_interval_s,
            progress=self.progress,
            stockout_grace_s=self.stockout_grace_s,
            read_retry_deadline_s=self.read_retry_deadline_s,
        )
        other.stop = self.stop
        return other

    def _call(self, what: str, method: Callable[..., T], request: Any, *, read: bool = False) -> T:
        kwargs: dict[str, Any] = {}
        if read and self.read_retry_deadline_s is not None:
            kwargs["retry"] = gretry.Retry(
                predicate=gretry.if_exception_type(gexc.ServiceUnavailable, gexc.DeadlineExceeded),
                initial=0.05,
                maximum=1.0,
                timeout=self.read_retry_deadline_s,
            )
        try:
            return method(request=request, **kwargs)
        except GOOGLE_ERRORS as exc:
            raise translate_error(exc, what) from exc

    def wait_operation(
        self, operation: container_v1.Operation, *, what: str, timeout_s: float | None = None
    ) -> container_v1.Operation:
        """Poll a long-running operation until it is done.

        Args:
            operation: the operation a create or delete call returned.
            what: names the request in logs and errors.
            timeout_s: the deadline in seconds; ``None`` takes the manager's ``timeout_s``.

        Raises:
            CapacityError: the operation failed for a stockout or an exhausted quota.
            OperationFailed: it failed for another reason (the message quotes GKE's).
            OperationTimeout: it was not done before the deadline (it keeps running in GKE).
        """
        name = f"{self.parent}/operations/{operation.name}"
        start = time.monotonic()
        state: dict[str, Any] = {"op": operation, "seen": None}

        def check() -> container_v1.Operation | None:
            op = self._call(
                f"{what}: get operation",
                self.client.get_operation,
                container_v1.GetOperationRequest(name=name),
                read=True,
            )
            state["op"] = op
            self._watch_conditions(op, state, what)
            seen = (op.status, op.detail, op.status_message)
            if self.progress is not None:
                self.progress(op)
            elif seen != state["seen"]:
                logger.info(
                    "%s: %s %s (%.0f s)", what, op.status.name, op.detail or "", time.monotonic() - start
                )
            state["seen"] = seen
            return op if op.status == _DONE else None

        try:
            op = poll_until(
                check,
                timeout_s=self.timeout_s if timeout_s is None else timeout_s,
                interval_s=self.poll_interval_s,
                what=f"{what} (operation {operation.name})",
                describe=lambda: _describe_operation(state["op"]),
                stop=self.stop,
            )
        except OperationTimeout as exc:
            if state.get("capacity") is not None:  # keep the cause: GKE was retrying a stockout
                kind, text = state["capacity"]
                raise _capacity_error(what, f"{exc}; GKE was still retrying: {text}", kind) from exc
            raise
        message = op.error.message or op.status_message
        if op.error.code or op.status_message:
            found = capacity_from_conditions([*op.nodepool_conditions, *op.cluster_conditions])
            kind = capacity_kind(message) or (found[0] if found else None)
            if kind is not None:
                raise _capacity_error(what, message, kind)
            raise OperationFailed(f"{what} failed: {message}")
        return op

    def _watch_conditions(self, op: container_v1.Operation, state: dict[str, Any], what: str) -> None:
        """Log a stockout or quota condition once; give up after ``stockout_grace_s`` of it."""
        found = capacity_from_conditions([*op.nodepool_conditions, *op.cluster_conditions])
        if found is None or op.status == _DONE:
            return
        if state.get("capacity") is None:
            state["capacity"], state["capacity_since"] = found, time.monotonic()
            logger.warning("%s: GKE reports %s and keeps retrying: %s", what, found[0], found[1])
        lasted = time.monotonic() - state["capacity_since"]
        if self.stockout_grace_s is not None and lasted >= self.stockout_grace_s:
            self._cancel(op, what)  # else GKE keeps the operation (and refuses deletes) for 35 min
            raise _capacity_error(
                what,
                f"GKE reported {found[0]} for {lasted:.0f} s (stockout_grace_s={self.stockout_grace_s:g}): "
                f"{found[1]}",
                found[0],
            )

    def _cancel(self, op: container_v1.Operation, what: str) -> None:
        name = f"{self.parent}/operations/{op.name}"
        try:
            self._call(
                f"{what}: cancel operation",
                self.client.cancel_operation,
                container_v1.CancelOperationRequest(name=name),
            )
        except CloudbreakError as exc:  # the delete that follows retries until the operation ends
            logger.warning("%s: could not cancel operation %s: %s", what, op.name, exc)

    def check_node_pools(self, pools: list[container_v1.NodePool], what: str) -> None:
        """Raise :class:`CapacityError` for a pool in RUNNING_WITH_ERROR for lack of capacity (fewer nodes
        than asked); log any other RUNNING_WITH_ERROR."""
        for pool in pools:
            if pool.status != container_v1.NodePool.Status.RUNNING_WITH_ERROR:
                continue
            found = capacity_from_conditions(pool.conditions)
            kind = (found[0] if found else None) or capacity_kind(pool.status_message)
            text = pool.status_message or (found[1] if found else "")
            if kind is not None:
                raise _capacity_error(what, f"node pool {pool.name} is RUNNING_WITH_ERROR: {text}", kind)
            logger.warning("%s: node pool %s is RUNNING_WITH_ERROR: %s", what, pool.name, text)

    # ----------------------------------------------------------------- clusters
    def create_cluster(self, spec: ClusterSpec, *, timeout_s: float | None = None) -> container_v1.Cluster:
        """Create a cluster and wait until it runs, retrying stockouts and quota errors by ``retry``.

        A cluster whose creation failed for lack of capacity is deleted before the next attempt.

        Raises:
            ResourceExists: a cluster of that name exists already (it is left alone).
            CapacityError: no capacity after the retry policy gave up; nothing is left behind.
            OperationFailed, OperationTimeout: see :meth:`wait_operation`.
        """
        what = f"create cluster {spec.name}"

        def attempt() -> container_v1.Cluster:
            op = self._call(what, self.client.create_cluster, self.create_cluster_request(spec))
            try:
                self.wait_operation(op, what=what, timeout_s=timeout_s)
            except CapacityError:
                self.delete_cluster(spec.name, missing_ok=True)
                raise
            cluster = self.get_cluster(spec.name)
            try:
                self.check_node_pools(list(cluster.node_pools), what)
            except CapacityError:
                self.delete_cluster(spec.name, missing_ok=True)
                raise
            return cluster

        return self.retry.call(attempt, what=what, stop=self.stop)

    def get_cluster(self, name: str) -> container_v1.Cluster:
        """The cluster ``name``; raises :class:`ResourceNotFound` when there is none."""
        return self._call(
            f"get cluster {name}",
            self.client.get_cluster,
            container_v1.GetClusterRequest(name=self.cluster_path(name)),
            read=True,
        )

    def list_clusters(self) -> list[container_v1.Cluster]:
        """Every cluster in the project and location."""
        response = self._call(
            "list clusters",
            self.client.list_clusters,
            container_v1.ListClustersRequest(parent=self.parent),
            read=True,
        )
        return list(response.clusters)

    def delete_cluster(self, name: str, *, missing_ok: bool = False, timeout_s: float | None = None) -> bool:
        """Delete a cluster and wait until it is gone.

        While another operation runs on the cluster (GKE answers FAILED_PRECONDITION), the delete is
        sent again every ``poll_interval_s`` until the deadline.

        Returns:
            ``True`` when deleted, ``False`` when it did not exist and ``missing_ok``.
        """
        what = f"delete cluster {name}"
        request = delete_cluster_request(self.project, self.location, name)
        return self._delete(
            what, self.client.delete_cluster, request, missing_ok=missing_ok, timeout_s=timeout_s
        )

    def _delete(
        self,
        what: str,
        method: Callable[..., Any],
        request: Any,
        *,
        missing_ok: bool,
        timeout_s: float | None,
    ) -> bool:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout

        def send() -> container_v1.Operation | None:
            try:
                return method(request=request)
            except gexc.GoogleAPICallError as exc:
                if google_status(exc) == "FAILED_PRECONDITION":  # another operation is running on it
                    logger.info("%s: %s; retrying", what, exc.message)
                    return None
                raise translate_error(exc, what) from exc
            except GOOGLE_ERRORS as exc:
                raise translate_error(exc, what) from exc

        try:
            op = poll_until(send, timeout_s=timeout, interval_s=self.poll_interval_s, what=what)
        except ResourceNotFound:
            if missing_ok:
                return False
            raise
        self.wait_operation(op, what=what, timeout_s=max(deadline - time.monotonic(), 0.0))
        return True

    def delete_with_retries(self, delete: Callable[[], T], what: str) -> T:
        """Run a delete again after each transient error (network, 5xx, RetryError, RefreshError) with
        backoff, until ``timeout_s``: the teardown boundary of clusters and node pools."""
        return retry_transient(
            delete, what=f"delete {what}", deadline_s=self.timeout_s, backoff_s=min(self.poll_interval_s, 5.0)
        )

    def attach(self, name: str) -> Cluster:
        """A context manager for an existing cluster: gets it on entry and never deletes it.

        Use it to reach a cluster made elsewhere (``hermes cloud cluster up``), e.g. for
        :meth:`Cluster.kube_api_client`. Entering raises :class:`ResourceNotFound` when there is none.
        """
        from hermes.cloudbreak.gke._cluster import Cluster

        return Cluster(self, name, keep=True)

    def cluster(
        self,
        spec: ClusterSpec,
        *,
        keep: bool = False,
        timeout_s: float | None = None,
        failover: Sequence[str] = (),
    ) -> Cluster:
        """A context manager that creates the cluster on entry and deletes it on exit.

        Deleted on normal exit, on an exception, on SIGINT, SIGTERM and SIGHUP, unless ``keep=True``.
        ``failover``: further zones or regions tried, in order, when one has no capacity.
        """
        from hermes.cloudbreak.gke._cluster import Cluster

        return Cluster(self, spec, keep=keep, timeout_s=timeout_s, failover=failover)

    # ----------------------------------------------------------------- node pools
    def create_node_pool(
        self, cluster: str, spec: NodePoolSpec, *, timeout_s: float | None = None
    ) -> container_v1.NodePool:
        """Add a node pool to a running cluster and wait until it is ready (retries as :meth:`create_cluster`)."""
        what = f"create node pool {spec.name} in {cluster}"

        def attempt() -> container_v1.NodePool:
            op = self._call(what, self.client.create_node_pool, self.create_node_pool_request(cluster, spec))
            try:
                self.wait_operation(op, what=what, timeout_s=timeout_s)
            except CapacityError:
                self.delete_node_pool(cluster, spec.name, missing_ok=True)
                raise
            pool = self.get_node_pool(cluster, spec.name)
            try:
                self.check_node_pools([pool], what)
            except CapacityError:
                self.delete_node_pool(cluster, spec.name, missing_ok=True)
                raise
            return pool

        return self.retry.call(attempt, what=what, stop=self.stop)

    def get_node_pool(self, cluster: str, name: str) -> container_v1.NodePool:
        """The node pool ``name`` of ``cluster``; raises :class:`ResourceNotFound` when there is none."""
        return self._call(
            f"get node pool {name} in {cluster}",
            self.client.get_node_pool,
            container_v1.GetNodePoolRequest(name=self.node_pool_path(cluster, name)),
            read=True,
        )

    def list_node_pools(self, cluster: str) -> list[container_v1.NodePool]:
        """Every node pool of ``cluster``."""
        response = self._call(
            f"list node pools of {cluster}",
            self.client.list_node_pools,
            container_v1.ListNodePoolsRequest(parent=self.cluster_path(cluster)),
            read=True,
        )
        return list(response.node_pools)

    def delete_node_pool(
        self, cluster: str, name: str, *, missing_ok: bool = False, timeout_s: float | None = None
    ) -> bool:
        """Delete a node pool and wait until it is gone (see :meth:`delete_cluster`)."""
        what = f"delete node pool {name} in {cluster}"
        request = container_v1.DeleteNodePoolRequest(name=self.node_pool_path(cluster, name))
        return self._delete(
            what, self.client.delete_node_pool, request, missing_ok=missing_ok, timeout_s=timeout_s
        )

    def node_pool(
        self, cluster: str, spec: NodePoolSpec, *, keep: bool = False, timeout_s: float | None = None
    ) -> NodePool:
        """A context manager that adds the pool on entry and deletes it on exit (unless ``keep``)."""
        from hermes.cloudbreak.gke._cluster import NodePool

        return NodePool(self, cluster, spec, keep=keep, timeout_s=timeout_s)


def _capacity_error(what: str, message: str, kind: str) -> CapacityError:
    return CapacityError(
        f"{what}: {message}",
        kind=kind,
        resource=quota_resource(message),
        zones_available=zones_available(message),
    )


def _describe_operation(op: container_v1.Operation) -> str:
    conditions = [f"{c.code.name}: {c.message}" for c in [*op.nodepool_conditions, *op.cluster_conditions]]
    return op.status.name + (f"; conditions: {'; '.join(conditions)}" if conditions else "")
