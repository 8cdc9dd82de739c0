"""A loopback gRPC fake of GKE's ``google.container.v1.ClusterManager``.

Built from google-cloud-container's own request/response types, so the product code's real
gRPC transport, routing headers and status→exception mapping are exercised. It is stateful
(clusters, node pools, operations) and can be told to fail the way GKE does, with GKE's texts:

* quota, refused on the request: PERMISSION_DENIED (HTTP 403) "Insufficient regional quota to
  satisfy request: resource ..." (the text of kubeflow/kubeflow#842 and vanvalenlab/kiosk-console#367);
* a stockout inside the operation: while it runs, ``nodepool_conditions`` carries a
  ``StatusCondition`` with ``code=GCE_STOCKOUT`` (GKE keeps retrying); it ends with the
  "Not all instances running in IGM ... [GCE_STOCKOUT]" error of akka/akka-core#32992;
* a pool left in ``RUNNING_WITH_ERROR`` with fewer nodes than asked;
* UNAVAILABLE on reads (a network blip), FAILED_PRECONDITION while an operation runs.
"""

from __future__ import annotations

import itertools
import threading
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.cloud import container_v1 as c
from google.cloud.container_v1.services.cluster_manager.transports import ClusterManagerGrpcTransport
from google.rpc import code_pb2, status_pb2

from cloudbreak_fakes.clock import gke_time

SERVICE = "google.container.v1.ClusterManager"


class _Empty:
    """google.protobuf.Empty with the (de)serialize pair the generic handler wants."""

    @staticmethod
    def serialize(message: Any) -> bytes:
        return message.SerializeToString()

    @staticmethod
    def deserialize(data: bytes) -> Any:
        from google.protobuf import empty_pb2

        return empty_pb2.Empty.FromString(data)

    @staticmethod
    def to_json(message: Any, **_: Any) -> str:
        return "{}"


@dataclass
class _Op:
    op: c.Operation
    polls_left: int
    on_done: Any
    target: str


@dataclass
class FakeGKE:
    """State and behaviour knobs of the fake; ``requests`` records (method, request, metadata)."""

    polls_per_operation: int = 1  # RPCs (of any kind) until an operation is done
    create_polls: int | None = None  # the same for create operations only (None: polls_per_operation)
    endpoint: str = "127.0.0.1"  # the control plane new clusters report (host or host:port)
    ca_certificate: str = "Y2VydA=="  # their base64 cluster CA (PEM in real GKE)
    create_time: str | None = None  # the createTime new clusters report; None: the clock at creation
    stockouts: int = 0  # that many create operations end with GCE_STOCKOUT
    stockout_locations: set[str] = field(default_factory=set)  # creates there always stock out
    quota_errors: int = 0  # that many create requests are refused with GKE's 403 quota text
    running_with_error: int = 0  # that many created pools end RUNNING_WITH_ERROR (stockout)
    unavailable: int = 0  # that many of the next reads (Get*/List*) answer UNAVAILABLE
    unavailable_deletes: int = 0  # that many of the next Delete* answer UNAVAILABLE
    clusters: dict[str, c.Cluster] = field(default_factory=dict)
    requests: list[tuple[str, Any, dict[str, str]]] = field(default_factory=list)
    ops: dict[str, _Op] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    port: int = 0

    # ------------------------------------------------------------- helpers
    def _new_op(self, kind: c.Operation.Type, target: str, on_done: Any) -> c.Operation:
        name = f"operation-{next(self._ids)}"
        op = c.Operation(
            name=name, operation_type=kind, status=c.Operation.Status.RUNNING, target_link=target
        )
        creating = kind in (c.Operation.Type.CREATE_CLUSTER, c.Operation.Type.CREATE_NODE_POOL)
        polls = self.create_polls if creating and self.create_polls is not None else self.polls_per_operation
        self.ops[name] = _Op(op=op, polls_left=polls, on_done=on_done, target=target)
        return op

    def _busy(self, target: str) -> bool:
        return any(
            o.target.startswith(target) and o.op.status != c.Operation.Status.DONE for o in self.ops.values()
        )

    @staticmethod
    def _split(name: str) -> list[str]:
        return name.split("/")

    def add_cluster(
        self, project: str, location: str, name: str, *, labels: dict[str, str], create_time: str
    ) -> c.Cluster:
        """Put a RUNNING cluster in place, as if made earlier (e.g. by a run that crashed)."""
        cluster = c.Cluster(
            name=name,
            location=location,
            status=c.Cluster.Status.RUNNING,
            resource_labels=labels,
            create_time=create_time,
            endpoint=self.endpoint,
            master_auth=c.MasterAuth(cluster_ca_certificate=self.ca_certificate),
        )
        self.clusters[f"projects/{project}/locations/{location}/clusters/{name}"] = cluster
        return cluster

    # ------------------------------------------------------------- RPCs
    def create_cluster(self, req: c.CreateClusterRequest, ctx: grpc.ServicerContext) -> c.Operation:
        if self.quota_errors:
            self.quota_errors -= 1
            # GKE's text, verbatim in shape (kubeflow/kubeflow#842): a 403 PERMISSION_DENIED, not RESOURCE_EXHAUSTED
            ctx.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                'Insufficient regional quota to satisfy request: resource "NVIDIA_T4_GPUS": '
                "request requires '4.0' and is short '4.0'. project has a quota of '0.0' with '0.0' "
                "available. View and manage quotas at "
                "https://console.cloud.google.com/iam-admin/quotas?usage=USED&project=p1.",
            )
        full = f"{req.parent}/clusters/{req.cluster.name}"
        if full in self.clusters:
            ctx.abort(grpc.StatusCode.ALREADY_EXISTS, f"Already exists: {full}.")
        cluster = c.Cluster(req.cluster)
        cluster.status = c.Cluster.Status.PROVISIONING
        cluster.endpoint = self.endpoint
        cluster.master_auth = c.MasterAuth(cluster_ca_certificate=self.ca_certificate)
        cluster.create_time = self.create_time or gke_time()
        cluster.location = req.parent.split("/")[3]
        self.clusters[full] = cluster
        location = req.parent.split("/")[3]
        stockout = self.stockouts > 0 or location in self.stockout_locations
        if self.stockouts > 0:
            self.stockouts -= 1
        zone = location if location.count("-") == 2 else f"{location}-c"
        pool_name = cluster.node_pools[0].name if cluster.node_pools else "default-pool"

        def done(op: c.Operation) -> None:
            if stockout:
                cluster.status = c.Cluster.Status.ERROR
                op.error = status_pb2.Status(
                    code=code_pb2.RESOURCE_EXHAUSTED, message=_igm_stockout(zone, pool_name)
                )
                op.status_message = op.error.message
            else:
                cluster.status = c.Cluster.Status.RUNNING
                if not cluster.locations:  # GKE's default: the zone, or three zones of the region
                    cluster.locations = [zone] if zone == location else [f"{location}-{z}" for z in "abc"]
                for pool in cluster.node_pools:
                    pool.status = c.NodePool.Status.RUNNING
                    self._maybe_running_with_error(pool, zone)

        op = self._new_op(c.Operation.Type.CREATE_CLUSTER, full, done)
        if stockout:  # while GKE retries, the operation reports the typed condition
            self._conditions(op.name, zone)
        return op

    def _conditions(self, name: str, zone: str) -> None:
        self.ops[name].op.nodepool_conditions = [
            c.StatusCondition(
                code=c.StatusCondition.Code.GCE_STOCKOUT,
                canonical_code=code_pb2.RESOURCE_EXHAUSTED,
                message=(
                    f"Instance creation failed: The zone 'projects/p1/zones/{zone}' does not have enough "
                    "resources available to fulfill the request.  '(resource type:compute)'."
                ),
            )
        ]

    def _maybe_running_with_error(self, pool: c.NodePool, zone: str) -> None:
        if self.running_with_error <= 0:
            return
        self.running_with_error -= 1
        pool.status = c.NodePool.Status.RUNNING_WITH_ERROR
        pool.status_message = _igm_stockout(zone, pool.name)
        pool.conditions = [
            c.StatusCondition(
                code=c.StatusCondition.Code.GCE_STOCKOUT,
                canonical_code=code_pb2.RESOURCE_EXHAUSTED,
                message=pool.status_message,
            )
        ]

    def get_operation(self, req: c.GetOperationRequest, ctx: grpc.ServicerContext) -> c.Operation:
        name = self._split(req.name)[-1]
        if name not in self.ops:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"Operation {req.name} not found.")
        return self.ops[name].op

    def cancel_operation(self, req: c.CancelOperationRequest, ctx: grpc.ServicerContext) -> Any:
        from google.protobuf import empty_pb2

        name = self._split(req.name)[-1]
        if name not in self.ops:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"Operation {req.name} not found.")
        entry = self.ops[name]
        if entry.op.status != c.Operation.Status.DONE:
            entry.op.status = c.Operation.Status.DONE
            entry.op.error = status_pb2.Status(code=code_pb2.CANCELLED, message="Operation was cancelled.")
            cluster = self.clusters.get("/".join(self._split(entry.target)[:6]))
            if cluster is not None and entry.op.operation_type == c.Operation.Type.CREATE_CLUSTER:
                cluster.status = c.Cluster.Status.ERROR
        return empty_pb2.Empty()

    def tick(self) -> None:
        """Time passes: every running operation moves one step (one step per RPC received)."""
        for entry in list(self.ops.values()):
            if entry.op.status != c.Operation.Status.DONE:
                entry.polls_left -= 1
                if entry.polls_left <= 0:
                    entry.op.status = c.Operation.Status.DONE
                    entry.on_done(entry.op)

    def get_cluster(self, req: c.GetClusterRequest, ctx: grpc.ServicerContext) -> c.Cluster:
        if req.name not in self.clusters:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"Not found: {req.name}.")
        return self.clusters[req.name]

    def list_clusters(self, req: c.ListClustersRequest, ctx: grpc.ServicerContext) -> c.ListClustersResponse:
        parent = req.parent.removesuffix("/locations/-") + "/"  # "-" lists every location
        return c.ListClustersResponse(clusters=[v for k, v in self.clusters.items() if k.startswith(parent)])

    def delete_cluster(self, req: c.DeleteClusterRequest, ctx: grpc.ServicerContext) -> c.Operation:
        if req.name not in self.clusters:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"Not found: {req.name}.")
        if self._busy(req.name):
            ctx.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Cluster {req.name} is currently being created. Please wait and try again once it is done.",
            )
        self.clusters[req.name].status = c.Cluster.Status.STOPPING
        return self._new_op(
            c.Operation.Type.DELETE_CLUSTER, req.name, lambda op: self.clusters.pop(req.name, None)
        )

    def _cluster_of(self, name: str, ctx: grpc.ServicerContext) -> c.Cluster:
        cluster_name = "/".join(self._split(name)[:6])
        if cluster_name not in self.clusters:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"Not found: {cluster_name}.")
        return self.clusters[cluster_name]

    def create_node_pool(self, req: c.CreateNodePoolRequest, ctx: grpc.ServicerContext) -> c.Operation:
        cluster = self._cluster_of(req.parent, ctx)
        if any(p.name == req.node_pool.name for p in cluster.node_pools):
            ctx.abort(
                grpc.StatusCode.ALREADY_EXISTS,
                f"Already exists: {req.parent}/nodePools/{req.node_pool.name}.",
            )
        pool = c.NodePool(req.node_pool)
        pool.status = c.NodePool.Status.PROVISIONING
        cluster.node_pools.append(pool)

        location = req.parent.split("/")[3]
        zone = location if location.count("-") == 2 else f"{location}-c"
        stockout = self.stockouts > 0 or location in self.stockout_locations
        if self.stockouts > 0:
            self.stockouts -= 1

        def done(op: c.Operation) -> None:
            for p in cluster.node_pools:
                if p.name != pool.name:
                    continue
                if stockout:
                    p.status = c.NodePool.Status.ERROR
                    op.error = status_pb2.Status(
                        code=code_pb2.RESOURCE_EXHAUSTED, message=_igm_stockout(zone, p.name)
                    )
                    op.status_message = op.error.message
                else:
                    p.status = c.NodePool.Status.RUNNING
                    self._maybe_running_with_error(p, zone)

        op = self._new_op(c.Operation.Type.CREATE_NODE_POOL, f"{req.parent}/nodePools/{pool.name}", done)
        if stockout:
            self._conditions(op.name, zone)
        return op

    def get_node_pool(self, req: c.GetNodePoolRequest, ctx: grpc.ServicerContext) -> c.NodePool:
        cluster = self._cluster_of(req.name, ctx)
        for pool in cluster.node_pools:
            if pool.name == self._split(req.name)[-1]:
                return pool
        ctx.abort(grpc.StatusCode.NOT_FOUND, f"Not found: {req.name}.")
        raise AssertionError  # unreachable

    def list_node_pools(
        self, req: c.ListNodePoolsRequest, ctx: grpc.ServicerContext
    ) -> c.ListNodePoolsResponse:
        return c.ListNodePoolsResponse(node_pools=list(self._cluster_of(req.parent, ctx).node_pools))

    def delete_node_pool(self, req: c.DeleteNodePoolRequest, ctx: grpc.ServicerContext) -> c.Operation:
        cluster = self._cluster_of(req.name, ctx)
        name = self._split(req.name)[-1]
        if not any(p.name == name for p in cluster.node_pools):
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"Not found: {req.name}.")

        def done(op: c.Operation) -> None:
            keep = [p for p in cluster.node_pools if p.name != name]
            del cluster.node_pools[:]
            cluster.node_pools.extend(keep)

        return self._new_op(c.Operation.Type.DELETE_NODE_POOL, req.name, done)

    # ------------------------------------------------------------- server
    def table(self) -> dict[str, tuple[Any, type, type]]:
        """RPC name -> (handler, request type, response type), shared by the gRPC and REST fronts."""
        return {
            "CreateCluster": (self.create_cluster, c.CreateClusterRequest, c.Operation),
            "GetOperation": (self.get_operation, c.GetOperationRequest, c.Operation),
            "CancelOperation": (self.cancel_operation, c.CancelOperationRequest, _Empty),
            "GetCluster": (self.get_cluster, c.GetClusterRequest, c.Cluster),
            "ListClusters": (self.list_clusters, c.ListClustersRequest, c.ListClustersResponse),
            "DeleteCluster": (self.delete_cluster, c.DeleteClusterRequest, c.Operation),
            "CreateNodePool": (self.create_node_pool, c.CreateNodePoolRequest, c.Operation),
            "GetNodePool": (self.get_node_pool, c.GetNodePoolRequest, c.NodePool),
            "ListNodePools": (self.list_node_pools, c.ListNodePoolsRequest, c.ListNodePoolsResponse),
            "DeleteNodePool": (self.delete_node_pool, c.DeleteNodePoolRequest, c.Operation),
        }

    def call(self, rpc: str, request: Any, ctx: Any, metadata: dict[str, str]) -> Any:
        """Record the request, let time pass one step, and run the RPC (``ctx.abort`` raises its error)."""
        with self.lock:
            self.requests.append((rpc, request, metadata))
            self.tick()
            if self.unavailable > 0 and rpc.startswith(("Get", "List")):
                self.unavailable -= 1
                ctx.abort(grpc.StatusCode.UNAVAILABLE, "The service is currently unavailable.")
            if self.unavailable_deletes > 0 and rpc.startswith("Delete"):
                self.unavailable_deletes -= 1
                ctx.abort(grpc.StatusCode.UNAVAILABLE, "The service is currently unavailable.")
            return self.table()[rpc][0](request, ctx)

    def handlers(self) -> grpc.GenericRpcHandler:
        def wrap(rpc: str) -> Any:
            def handle(request: Any, ctx: grpc.ServicerContext) -> Any:
                return self.call(rpc, request, ctx, dict(ctx.invocation_metadata()))

            return handle

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                rpc: grpc.unary_unary_rpc_method_handler(
                    wrap(rpc), request_deserializer=rq.deserialize, response_serializer=rs.serialize
                )
                for rpc, (_, rq, rs) in self.table().items()
            },
        )

    def methods(self) -> list[str]:
        """The RPC names received, in order."""
        return [m for m, _, _ in self.requests]


def _igm_stockout(zone: str, pool: str) -> str:
    """GKE's error after it gave up on a stockout (akka/akka-core#32992, tranquilitybase-io/tb-gcp#589)."""
    return (
        "Google Compute Engine: Not all instances running in IGM after 35m4.033429035s. Expected 1, running 0, "
        f"transitioning 1. Current errors: [GCE_STOCKOUT]: Instance 'gke-c-{pool}-97da88a9-8gmv' creation "
        f"failed: The zone 'projects/p1/zones/{zone}' does not have enough resources available to fulfill "
        "the request.  '(resource type:compute)'."
    )


def start_fake_gke(fake: FakeGKE) -> grpc.Server:
    """Serve ``fake`` on 127.0.0.1 (a free port, stored in ``fake.port``)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((fake.handlers(),))
    fake.port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server


def client_for(fake: FakeGKE) -> tuple[c.ClusterManagerClient, grpc.Channel]:
    """A real ClusterManagerClient on an insecure channel to the fake."""
    channel = grpc.insecure_channel(f"127.0.0.1:{fake.port}")
    return c.ClusterManagerClient(transport=ClusterManagerGrpcTransport(channel=channel)), channel
