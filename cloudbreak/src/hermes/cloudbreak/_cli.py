"""``hermes cloud``: GKE clusters, Triton deployments and VM swarms from the command line.

Every command takes ``--dry-run``: it prints the exact API requests (JSON) and Kubernetes
manifests (YAML) it would send, and sends nothing. The hidden options ``--gke-endpoint``,
``--compute-endpoint`` and ``--anonymous`` point the commands at local emulators.
"""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from hermes.cloudbreak.exceptions import CloudbreakError

__all__ = ["app"]

app = typer.Typer(
    name="cloud",
    help="GKE clusters, Triton on Kubernetes and VM swarms, always torn down.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
cluster_app = typer.Typer(help="GKE clusters with GPU node pools.", no_args_is_help=True)
swarm_app = typer.Typer(help="Swarms of Compute Engine VMs.", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")
app.add_typer(swarm_app, name="swarm")


@dataclass
class _Options:
    gke_endpoint: str | None = None
    compute_endpoint: str | None = None
    billing_endpoint: str | None = None
    anonymous: bool = False
    credentials_file: Path | None = None
    live_prices: bool = False


_options = _Options()


@app.callback()
def _cloud(
    credentials_file: Path | None = typer.Option(
        None,
        "--credentials-file",
        help="Google credentials JSON of any type (service account key, authorized_user, external_account). "
        "Default: Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's login, metadata server).",
    ),
    gke_endpoint: str | None = typer.Option(
        None,
        hidden=True,
        envvar="HERMES_CLOUDBREAK_GKE_ENDPOINT",
        help="http://host:port of a GKE emulator (insecure gRPC).",
    ),
    compute_endpoint: str | None = typer.Option(
        None,
        hidden=True,
        envvar="HERMES_CLOUDBREAK_COMPUTE_ENDPOINT",
        help="http://host:port of a Compute emulator.",
    ),
    billing_endpoint: str | None = typer.Option(
        None,
        hidden=True,
        envvar="HERMES_CLOUDBREAK_BILLING_ENDPOINT",
        help="http://host:port of a Cloud Billing Catalog emulator.",
    ),
    live_prices: bool = typer.Option(
        False,
        "--live-prices",
        help="Estimate with the region's current prices from the Cloud Billing Catalog API "
        "(needs hermes-cloudbreak[pricing]); falls back to the dated table when it cannot be read.",
    ),
    anonymous: bool = typer.Option(False, hidden=True, help="Anonymous credentials (emulators only)."),
) -> None:
    """GKE clusters, Triton on Kubernetes and VM swarms, always torn down."""
    _options.gke_endpoint = gke_endpoint
    _options.compute_endpoint = compute_endpoint
    _options.billing_endpoint = billing_endpoint
    _options.live_prices = live_prices
    _options.anonymous = anonymous
    _options.credentials_file = credentials_file


def _print_requests(requests: list[tuple[str, Any]]) -> None:
    out = [
        {
            "method": method,
            "request": json.loads(
                type(req).to_json(
                    req, use_integers_for_enums=False, always_print_fields_with_no_presence=False
                )
            ),
        }
        for method, req in requests
    ]
    typer.echo(json.dumps({"requests": out}, indent=2))


def _print_estimate(estimate: Any) -> None:
    """A $/hour estimate on stderr (stdout stays the command's JSON)."""
    typer.echo(estimate.render(), err=True)


def _prices(location: str | None) -> Any:
    """The price table of the estimates: the region's live prices with --live-prices, else the dated table."""
    from hermes.cloudbreak._pricing import OFFLINE

    if not _options.live_prices:
        return OFFLINE
    from hermes.cloudbreak._catalog import catalog_prices

    region = location or "us-central1"
    if region.count("-") == 2:  # a zone: its region
        region = region.rsplit("-", 1)[0]
    try:
        return catalog_prices(region, credentials=_credentials(), api_endpoint=_options.billing_endpoint)
    except CloudbreakError as exc:
        typer.echo(f"warning: live prices unavailable ({exc}); using the dated price table", err=True)
        return OFFLINE


def _cluster_estimate(spec: Any, location: str) -> Any:
    from hermes.cloudbreak._pricing import Estimate, vm_parts

    table = _prices(location)
    parts: list[tuple[str, float | None]] = [("GKE cluster management fee", table.gke_cluster_hourly)]
    for pool in spec.node_pools:
        nodes = pool.node_count * spec.zones_of(pool, location)
        label = f"pool {pool.name} ({pool.node_count} node(s)/zone x {spec.zones_of(pool, location)} zone(s))"
        parts += vm_parts(
            label,
            nodes,
            pool.machine_type,
            pool.accelerator_type,
            pool.accelerator_count,
            pool.disk_size_gb,
            table,
        )
    return Estimate.of(f"GKE cluster {spec.name} in {location}", parts, table.source)


def _deploy_estimate(spec: Any) -> Any:
    from hermes.cloudbreak._pricing import Estimate, gpu_price

    table = _prices(None)

    count = spec.autoscale.max_servers if spec.autoscale is not None else spec.servers
    what = f"up to {count}" if spec.autoscale is not None else str(count)
    parts: list[tuple[str, float | None]] = []
    if spec.gpus:
        price = gpu_price(spec.accelerator_type or "", table=table)
        gpu = spec.accelerator_type or "GPU (type not given: --gpu-type)"
        parts.append(
            (
                f"{what} server(s) x {spec.gpus} {gpu} (billed through the nodes)",
                None if price is None else count * spec.gpus * price,
            )
        )
    if spec.service_type in ("LoadBalancer", "InternalLoadBalancer"):
        parts.append((f"{count} load balancer forwarding rule(s)", count * table.forwarding_rule_hourly))
    return Estimate.of(f"Triton deployment {spec.name}", parts, table.source)


def _swarm_estimate(spec: Any, count: int, zone: str) -> Any:
    from hermes.cloudbreak._pricing import Estimate, vm_parts

    table = _prices(zone)
    parts = vm_parts(
        "VMs",
        count,
        spec.machine_type,
        spec.accelerator_type,
        spec.accelerator_count,
        spec.disk_size_gb,
        table,
    )
    return Estimate.of(f"VM swarm {spec.name}", parts, table.source)


def _fail(exc: CloudbreakError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


def _validate(
    *,
    project: str | None = None,
    location: str | None = None,
    zone: str | None = None,
    count: int | None = None,
) -> None:
    """Check the where (and how many) of a command against Google's rules, before any request or plan."""
    from hermes.cloudbreak._validation import check_count, check_location, check_project, check_zone

    try:
        if project is not None:
            check_project("--project", project)
        if location is not None:
            check_location("--location", location, allow_all=True)
        if zone is not None:
            check_zone("--zone", zone)
        if count is not None:
            check_count("--count", "the number of VMs", count)
    except CloudbreakError as exc:
        raise _fail(exc) from exc


def _credentials() -> Any:
    if _options.anonymous:
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()
    from hermes.cloudbreak._credentials import load_credentials

    return load_credentials(_options.credentials_file)[0]


def _gke(project: str, location: str, timeout_s: float, poll_interval_s: float, retry: Any = None) -> Any:
    from hermes.cloudbreak.gke import ClusterManager

    emulator = _options.gke_endpoint
    return ClusterManager(
        project=project,
        location=location,
        api_endpoint=emulator,
        credentials=None if emulator and not _options.anonymous else _credentials(),
        timeout_s=timeout_s,
        poll_interval_s=poll_interval_s,
        retry=retry,
    )


def _compute() -> Any:
    from hermes.cloudbreak.compute import compute_clients

    return compute_clients(credentials=_credentials(), api_endpoint=_options.compute_endpoint)[0]


# ------------------------------------------------------------------------------ cluster
@cluster_app.command("up")
def cluster_up(
    name: str = typer.Option(..., help="Cluster name."),
    project: str = typer.Option(..., envvar="GOOGLE_CLOUD_PROJECT", help="GCP project id."),
    location: str = typer.Option(..., help="Zone or region, e.g. us-central1-a."),
    pool: str = typer.Option("gpus", help="Node pool name."),
    machine_type: str = typer.Option("n1-standard-8", help="Machine type of the nodes."),
    gpu_type: str | None = typer.Option(None, help="GPU type, e.g. nvidia-tesla-t4."),
    gpus: int = typer.Option(0, help="GPUs per node."),
    nodes: int = typer.Option(1, help="Nodes at creation."),
    min_nodes: int | None = typer.Option(None, help="Autoscaling minimum."),
    max_nodes: int | None = typer.Option(None, help="Autoscaling maximum."),
    spot: bool = typer.Option(False, help="Spot VMs."),
    node_location: list[str] = typer.Option(
        [], "--node-location", help="Zone of the nodes (repeatable); --nodes is per zone."
    ),
    workload_identity: bool = typer.Option(
        False, "--workload-identity", help="Turn on GKE workload identity (gs:// without keys)."
    ),
    failover_location: list[str] = typer.Option(
        [], "--failover-location", help="Zone or region tried next when one has no capacity (repeatable)."
    ),
    timeout_s: float = typer.Option(1800.0, help="Deadline of the create operation, in seconds."),
    retries: int = typer.Option(3, help="Attempts on a GPU stockout or quota error."),
    retry_backoff_s: float = typer.Option(30.0, help="Wait before the second attempt (doubles), in seconds."),
    retry_deadline_s: float = typer.Option(1800.0, help="No new attempt after this many seconds."),
    poll_interval_s: float = typer.Option(10.0, hidden=True),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the API request; send nothing."),
) -> None:
    """Create a GKE cluster and leave it running (it is deleted again if creation fails or is interrupted)."""
    from hermes.cloudbreak.gke import ClusterSpec, NodePoolSpec, create_cluster_request

    _validate(project=project, location=location)

    try:
        spec = ClusterSpec(
            name=name,
            node_pools=(
                NodePoolSpec(
                    name=pool,
                    machine_type=machine_type,
                    accelerator_type=gpu_type,
                    accelerator_count=gpus,
                    node_count=nodes,
                    min_node_count=min_nodes,
                    max_node_count=max_nodes,
                    spot=spot,
                ),
            ),
            node_locations=tuple(node_location),
            workload_identity=workload_identity,
        )
        for line in spec.capacity_summary(location):
            typer.echo(f"capacity in {location}: {line}", err=True)
        _print_estimate(_cluster_estimate(spec, location))
        if dry_run:
            _print_requests(
                [
                    (
                        "google.container.v1.ClusterManager/CreateCluster",
                        create_cluster_request(project, location, spec),
                    )
                ]
            )
            return
        from hermes.cloudbreak._retry import RetryPolicy

        retry = RetryPolicy(attempts=retries, backoff_s=retry_backoff_s, deadline_s=retry_deadline_s)
        with (
            _gke(project, location, timeout_s, poll_interval_s, retry) as gke,
            gke.cluster(spec, failover=tuple(failover_location)) as cluster,
        ):
            cluster.keep()
            info = cluster.info
        typer.echo(
            json.dumps(
                {
                    "name": info.name,
                    "location": cluster.location,
                    "node_locations": cluster.node_locations,
                    "gpus": cluster.gpu_total(),
                    "endpoint": info.endpoint,
                    "status": info.status.name,
                }
            )
        )
    except CloudbreakError as exc:
        raise _fail(exc) from exc


@cluster_app.command("down")
def cluster_down(
    name: str = typer.Option(..., help="Cluster name."),
    project: str = typer.Option(..., envvar="GOOGLE_CLOUD_PROJECT", help="GCP project id."),
    location: str = typer.Option(..., help="Zone or region."),
    timeout_s: float = typer.Option(1800.0, help="Deadline of the delete operation, in seconds."),
    load_balancers_first: bool = typer.Option(
        True,
        help="Delete the cluster's LoadBalancer Services and wait for them first (no orphaned forwarding rules).",
    ),
    poll_interval_s: float = typer.Option(10.0, hidden=True),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the API request; send nothing."),
) -> None:
    """Delete a GKE cluster and wait until it is gone (a missing cluster is not an error).

    Its LoadBalancer Services are deleted and awaited first, so GKE removes their forwarding rules."""
    from hermes.cloudbreak.gke import delete_cluster_request

    _validate(project=project, location=location)
    if dry_run:
        _print_requests(
            [
                (
                    "google.container.v1.ClusterManager/DeleteCluster",
                    delete_cluster_request(project, location, name),
                )
            ]
        )
        return
    try:
        with _gke(project, location, timeout_s, poll_interval_s) as gke:
            if load_balancers_first:
                _release_load_balancers(gke, name, timeout_s, poll_interval_s)
            deleted = gke.delete_cluster(name, missing_ok=True)
    except CloudbreakError as exc:
        raise _fail(exc) from exc
    typer.echo(f"deleted cluster {name}" if deleted else f"cluster {name} did not exist")


def _release_load_balancers(gke: Any, name: str, timeout_s: float, poll_interval_s: float) -> None:
    """Delete the cluster's LoadBalancer Services (and so GKE's forwarding rules) before the cluster."""
    from hermes.cloudbreak.exceptions import ResourceNotFound, TeardownError
    from hermes.cloudbreak.kubernetes import delete_load_balancers

    try:
        with gke.attach(name) as cluster, cluster.kube_api_client() as api:
            gone = delete_load_balancers(api, timeout_s=timeout_s, poll_interval_s=poll_interval_s)
    except ResourceNotFound:
        return
    except TeardownError:
        raise
    except CloudbreakError as exc:  # the API server cannot be reached: say what may be left, go on
        typer.echo(f"warning: could not delete the cluster's load balancers first ({exc}); "
                   "`hermes cloud gc` and the Cloud Console list forwarding rules left behind", err=True)  # fmt: skip
        return
    for service in gone:
        typer.echo(f"deleted load balancer Service {service}", err=True)


@cluster_app.command("list")
def cluster_list(
    project: str = typer.Option(..., envvar="GOOGLE_CLOUD_PROJECT", help="GCP project id."),
    location: str = typer.Option("-", help="Zone or region ('-' for all)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the API request; send nothing."),
) -> None:
    """List clusters as JSON lines: name, status, location, labels."""
    from google.cloud import container_v1

    _validate(project=project, location=location)

    if dry_run:
        _print_requests(
            [
                (
                    "google.container.v1.ClusterManager/ListClusters",
                    container_v1.ListClustersRequest(parent=f"projects/{project}/locations/{location}"),
                )
            ]
        )
        return
    try:
        with _gke(project, location, 60.0, 1.0) as gke:
            clusters = gke.list_clusters()
    except CloudbreakError as exc:
        raise _fail(exc) from exc
    for c in clusters:
        typer.echo(
            json.dumps(
                {
                    "name": c.name,
                    "status": c.status.name,
                    "location": c.location,
                    "labels": dict(c.resource_labels),
                }
            )
        )


# ------------------------------------------------------------------------------ deploy
def _kube_api(
    stack: ExitStack,
    cluster: str | None,
    project: str | None,
    location: str | None,
    kubeconfig: Path | None,
    context: str | None,
) -> Any:
    """The Kubernetes ApiClient of a GKE cluster (its GKE-side objects closed by ``stack``) or of a kubeconfig."""
    from hermes.cloudbreak.exceptions import CloudConfigError

    if cluster is None:
        if location:
            raise CloudConfigError(f"--location {location} names where --cluster is; give --cluster too")
        from kubernetes import config as kube_config

        return kube_config.new_client_from_config(
            config_file=str(kubeconfig) if kubeconfig else None, context=context
        )
    if kubeconfig is not None or context is not None:
        raise CloudConfigError("--cluster and --kubeconfig/--context each name the cluster; give one of them")
    if not project or not location:
        raise CloudConfigError(
            f"--cluster {cluster} needs --project and --location (the GKE zone or region), "
            f"got project={project!r}, location={location!r}"
        )
    gke = stack.enter_context(_gke(project, location, 60.0, 1.0))
    attached = stack.enter_context(gke.attach(cluster))
    return attached.kube_api_client()


def _triton_spec(
    name: str,
    repository: str,
    servers: int,
    image: str,
    gpus: int,
    gpu_type: str | None,
    server_arg: list[str],
    shm_size: str,
    namespace: str,
    service_type: str,
    source_range: list[str],
    access: dict[str, Any],
    autoscale: tuple[int | None, int | None, int, str],
) -> Any:
    from hermes.cloudbreak.kubernetes import Autoscale, TritonSpec

    low, high, queue_time_us, prometheus = autoscale
    elastic = None
    if low is not None or high is not None:
        elastic = Autoscale(
            min_servers=low if low is not None else 1,
            max_servers=high if high is not None else max(low or 1, 1),
            queue_time_us=queue_time_us,
            prometheus=prometheus,
        )
    return TritonSpec(
        name=name,
        model_repository=repository,
        servers=servers,
        image=image,
        gpus=gpus,
        accelerator_type=gpu_type,
        server_args=tuple(server_arg),
        shm_size=shm_size,
        namespace=namespace,
        service_type=service_type,
        load_balancer_source_ranges=tuple(source_range),
        autoscale=elastic,
        **access,
    )


@app.command("deploy")
def deploy(
    name: str = typer.Option(..., help="Base name; servers are <name>-0, <name>-1, ..."),
    repository: str = typer.Option(..., help="Model repository: gs://bucket/path or s3://bucket/path."),
    servers: int = typer.Option(1, help="How many Triton servers (one endpoint each)."),
    image: str = typer.Option("nvcr.io/nvidia/tritonserver:24.08-py3", help="Triton image."),
    gpus: int = typer.Option(1, help="GPUs per server."),
    gpu_type: str | None = typer.Option(None, help="Schedule on GKE nodes with this GPU type."),
    server_arg: list[str] = typer.Option(
        [], "--server-arg", help="Extra tritonserver argument (repeatable)."
    ),
    shm_size: str = typer.Option("1Gi", help="Size of /dev/shm."),
    namespace: str = typer.Option("default", help="Kubernetes namespace."),
    service_type: str = typer.Option(
        "ClusterIP",
        help="ClusterIP (private, default), InternalLoadBalancer (VPC only), LoadBalancer (external: "
        "needs --source-range) or NodePort.",
    ),
    source_range: list[str] = typer.Option(
        [], "--source-range", help="CIDR an external LoadBalancer accepts (repeatable)."
    ),
    model_control: str = typer.Option("none", help="none (default), explicit or poll."),
    admin_token_secret: str | None = typer.Option(
        None, help="Secret with a 'token' key guarding model load/unload (needed with --model-control)."
    ),
    workload_identity: str | None = typer.Option(
        None, help="Google service account email the pods act as for gs:// (GKE workload identity)."
    ),
    service_account: str | None = typer.Option(None, help="Existing Kubernetes ServiceAccount of the pods."),
    gcs_key_secret: str | None = typer.Option(
        None, help="Secret with key.json (a service-account key) mounted for gs://."
    ),
    credentials_secret: str | None = typer.Option(None, help="Secret whose keys become env (S3 keys)."),
    drain_s: int = typer.Option(30, help="Seconds a stopping server keeps serving what is in flight."),
    min_servers: int | None = typer.Option(None, help="Elastic servers (KEDA): the fewest."),
    max_servers: int | None = typer.Option(None, help="Elastic servers (KEDA): the most."),
    queue_time_us: int = typer.Option(50_000, help="Elastic servers: target queue time per request, in µs."),
    prometheus: str = typer.Option(
        "http://prometheus-operated.monitoring.svc.cluster.local:9090",
        help="Elastic servers: the Prometheus that scrapes Triton's metrics.",
    ),
    gpu_driver_installer: bool = typer.Option(
        False, help="Also apply the NVIDIA driver installer DaemonSet."
    ),
    cluster: str | None = typer.Option(
        None, help="GKE cluster to deploy to (with --project and --location); else a kubeconfig is used."
    ),
    project: str | None = typer.Option(None, envvar="GOOGLE_CLOUD_PROJECT", help="GCP project of --cluster."),
    location: str | None = typer.Option(None, help="Zone or region of --cluster."),
    kubeconfig: Path | None = typer.Option(None, help="kubeconfig file (default: ~/.kube/config)."),
    context: str | None = typer.Option(None, help="kubeconfig context."),
    endpoints_file: Path | None = typer.Option(None, help='Write {"endpoints": [...]} here.'),
    timeout_s: float = typer.Option(900.0, help="Deadline for every server to be ready, in seconds."),
    poll_interval_s: float = typer.Option(5.0, hidden=True),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the manifests; send nothing."),
) -> None:
    """Deploy Triton servers (a Deployment and a Service each), wait until ready, print the endpoints.

    Private by default (ClusterIP, model control off, probes, a preStop drain); see the README's
    security section. The cluster is a GKE cluster named by --cluster/--project/--location, or else
    the kubeconfig's current (or --context) cluster. The servers stay up when the command succeeds;
    on failure or interruption they are deleted, with the pods' events and Triton log printed.
    """
    import yaml

    from hermes.cloudbreak.kubernetes import (
        TritonDeployment,
        apply_gpu_driver_installer,
        gpu_driver_installer_manifest,
    )

    _validate(project=project, location=location)
    try:
        access = {
            "model_control": model_control,
            "admin_token_secret": admin_token_secret,
            "workload_identity": workload_identity,
            "service_account": service_account,
            "gcs_key_secret": gcs_key_secret,
            "credentials_secret": credentials_secret,
            "drain_s": drain_s,
        }
        spec = _triton_spec(
            name, repository, servers, image, gpus, gpu_type, server_arg, shm_size, namespace,
            service_type, source_range, access, (min_servers, max_servers, queue_time_us, prometheus),
        )  # fmt: skip
        _print_estimate(_deploy_estimate(spec))
        if dry_run:
            from hermes.cloudbreak.kubernetes import triton_manifests

            manifests = (
                [gpu_driver_installer_manifest()] if gpu_driver_installer else []
            ) + triton_manifests(spec)
            typer.echo(yaml.safe_dump_all(manifests, sort_keys=False), nl=False)
            return
        with ExitStack() as stack:
            api = stack.enter_context(_kube_api(stack, cluster, project, location, kubeconfig, context))
            if gpu_driver_installer:
                apply_gpu_driver_installer(api, timeout_s=timeout_s, poll_interval_s=poll_interval_s)
            with TritonDeployment(
                api, spec, timeout_s=timeout_s, poll_interval_s=poll_interval_s, endpoints_file=endpoints_file
            ) as deployment:
                deployment.keep()
        typer.echo(json.dumps({"endpoints": [e.to_dict() for e in deployment.endpoints]}, indent=2))
    except CloudbreakError as exc:
        raise _fail(exc) from exc


# ------------------------------------------------------------------------------ gc
@app.command("gc")
def gc(
    project: str = typer.Option(..., envvar="GOOGLE_CLOUD_PROJECT", help="GCP project id."),
    location: list[str] = typer.Option(
        ["-"], "--location", help="Zone or region to search (repeatable; '-' for all)."
    ),
    older_than: str | None = typer.Option(None, help="Only resources older than this, e.g. 2h, 30m, 1d."),
    yes: bool = typer.Option(False, "--yes", help="Delete what was found (otherwise only list it)."),
    timeout_s: float = typer.Option(1800.0, help="Deadline of each delete, in seconds."),
    poll_interval_s: float = typer.Option(10.0, hidden=True),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the exact delete requests; delete nothing."),
) -> None:
    """Find GKE clusters, node pools and VMs labelled managed-by=hermes-cloudbreak (what a crashed run
    left behind), and the forwarding rules, target pools and firewall rules their LoadBalancer Services left.

    Prints one JSON line per resource; deletes them only with --yes. --dry-run prints the delete
    requests instead (it only reads). Unlabelled clusters and VMs are never listed, so never deleted;
    a load-balancer resource is listed only when the cluster its firewall rule targets is one of ours
    or no longer exists.
    """
    from hermes.cloudbreak._leftovers import delete_leftovers, find_leftovers, parse_duration

    _validate(project=project)
    for where in location:
        _validate(location=where)

    try:
        older_than_s = parse_duration(older_than) if older_than is not None else None
        with _gke(project, "-", timeout_s, poll_interval_s) as gke:
            compute = _compute()
            leftovers = find_leftovers(
                project=project, locations=location, gke=gke, compute=compute, older_than_s=older_than_s
            )
            if dry_run:
                _print_requests([(x.delete_method, x.delete_request()) for x in leftovers])
                return
            for item in leftovers:
                typer.echo(json.dumps(item.to_dict()))
            if not yes:
                if leftovers:
                    typer.echo(f"{len(leftovers)} leftover(s) found; pass --yes to delete them", err=True)
                return
            deleted = delete_leftovers(
                leftovers, gke=gke, compute=compute, timeout_s=timeout_s, poll_interval_s=poll_interval_s
            )
        typer.echo(json.dumps({"deleted": [f"{x.kind}/{x.location}/{x.name}" for x in deleted]}))
    except CloudbreakError as exc:
        raise _fail(exc) from exc


# ------------------------------------------------------------------------------ swarm
def _vm_spec(
    name: str,
    machine_type: str,
    gpu_type: str | None,
    gpus: int,
    image: str | None,
    startup_script: Path | None,
    label: list[str],
    spot: bool,
    ssh_user: str | None,
    ssh_public_key: Path | None,
) -> Any:
    from hermes.cloudbreak.compute import VMSpec
    from hermes.cloudbreak.exceptions import CloudConfigError

    labels = {}
    for item in label:
        key, sep, value = item.partition("=")
        if not sep:
            raise CloudConfigError(f"--label must be key=value, got {item!r}")
        labels[key] = value
    return VMSpec(
        name=name,
        machine_type=machine_type,
        accelerator_type=gpu_type,
        accelerator_count=gpus,
        image=image,
        startup_script=startup_script.read_text() if startup_script else None,
        labels=labels,
        spot=spot,
        ssh_user=ssh_user,
        ssh_public_key=ssh_public_key.read_text() if ssh_public_key else None,
    )


@swarm_app.command("up")
def swarm_up(
    name: str = typer.Option(..., help="Swarm name; VMs are <name>-0, <name>-1, ..."),
    count: int = typer.Option(..., help="How many VMs."),
    project: str = typer.Option(..., envvar="GOOGLE_CLOUD_PROJECT", help="GCP project id."),
    zone: str = typer.Option(..., help="Zone, e.g. us-central1-a."),
    machine_type: str = typer.Option("n1-standard-4", help="Machine type."),
    gpu_type: str | None = typer.Option(None, help="GPU type."),
    gpus: int = typer.Option(0, help="GPUs per VM."),
    image: str | None = typer.Option(
        None,
        help="Boot image (default: a Deep Learning VM image with the NVIDIA driver with --gpus, else Debian 12).",
    ),
    startup_script: Path | None = typer.Option(None, help="File run as root at boot."),
    label: list[str] = typer.Option([], "--label", help="key=value GCP label (repeatable)."),
    spot: bool = typer.Option(False, help="Spot VMs."),
    ssh_user: str | None = typer.Option(None, help="User whose key is installed."),
    ssh_public_key: Path | None = typer.Option(None, help="OpenSSH public key file for --ssh-user."),
    timeout_s: float = typer.Option(900.0, help="Deadline for the VMs to run, in seconds."),
    poll_interval_s: float = typer.Option(5.0, hidden=True),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the API requests; send nothing."),
) -> None:
    """Create N VMs and leave them running (they are deleted again if creation fails or is interrupted)."""
    from hermes.cloudbreak.compute import Swarm, insert_requests

    _validate(project=project, zone=zone, count=count)

    try:
        spec = _vm_spec(
            name, machine_type, gpu_type, gpus, image, startup_script, label, spot, ssh_user, ssh_public_key
        )
        _print_estimate(_swarm_estimate(spec, count, zone))
        if dry_run:
            _print_requests(
                [
                    ("compute.instances.insert", r)
                    for r in insert_requests(spec, count, project=project, zone=zone)
                ]
            )
            return
        with Swarm(
            spec,
            count,
            project=project,
            zone=zone,
            clients=_compute(),
            timeout_s=timeout_s,
            poll_interval_s=poll_interval_s,
        ) as swarm:
            swarm.keep()
        typer.echo(json.dumps(swarm.addresses))
    except CloudbreakError as exc:
        raise _fail(exc) from exc


@swarm_app.command("run")
def swarm_run(
    command: str = typer.Argument(..., help="Shell command run on every VM."),
    name: str = typer.Option(..., help="Swarm name."),
    project: str = typer.Option(..., envvar="GOOGLE_CLOUD_PROJECT", help="GCP project id."),
    zone: str = typer.Option(..., help="Zone."),
    ssh_user: str | None = typer.Option(None, help="Remote user."),
    ssh_key: list[Path] = typer.Option([], "--ssh-key", help="Private key file (repeatable)."),
    ssh_port: int = typer.Option(22, help="SSH port."),
    concurrency: int = typer.Option(16, help="Most VMs at once."),
    timeout_s: float = typer.Option(600.0, help="Deadline per VM, in seconds."),
    known_hosts: Path | None = typer.Option(
        None, help="known_hosts file to check the VMs against (default: their guest-attribute host keys)."
    ),
    insecure_skip_host_key_check: bool = typer.Option(
        False, "--insecure-skip-host-key-check", help="Accept any SSH host key (not recommended)."
    ),
    poll_interval_s: float = typer.Option(5.0, hidden=True),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the API request; connect to nothing."),
) -> None:
    """Run a command on every VM of a swarm over SSH; print one JSON line per VM; exit 1 if any failed.

    SSH host keys are checked: against --known-hosts, or else against the keys each VM's guest
    agent published in its guest attributes (read through the Compute API)."""
    from google.cloud import compute_v1

    from hermes.cloudbreak.compute import SWARM_LABEL, host_keys, list_swarm, run_on_hosts

    _validate(project=project, zone=zone)

    if dry_run:
        _print_requests(
            [
                (
                    "compute.instances.list",
                    compute_v1.ListInstancesRequest(
                        project=project, zone=zone, filter=f"labels.{SWARM_LABEL} = {name}"
                    ),
                )
            ]
        )
        typer.echo(json.dumps({"ssh": {"command": command, "user": ssh_user, "port": ssh_port}}))
        return
    try:
        clients = _compute()
        hosts = list_swarm(clients, project=project, zone=zone, name=name)
        if not hosts:
            typer.echo(f"error: swarm {name} has no running VMs in {project}/{zone}", err=True)
            raise typer.Exit(1)
        check = not insecure_skip_host_key_check
        keys = None
        if check and known_hosts is None:
            keys = host_keys(
                clients,
                project=project,
                zone=zone,
                names=list(hosts),
                timeout_s=timeout_s,
                poll_interval_s=poll_interval_s,
            )
        results = run_on_hosts(
            hosts,
            command,
            port=ssh_port,
            username=ssh_user,
            client_keys=ssh_key or None,
            known_hosts=known_hosts,
            host_keys=keys,
            check_host_keys=check,
            timeout_s=timeout_s,
            concurrency=concurrency,
        )
    except CloudbreakError as exc:
        raise _fail(exc) from exc
    for r in results.values():
        typer.echo(
            json.dumps({"vm": r.host, "exit_status": r.exit_status, "stdout": r.stdout, "stderr": r.stderr})
        )
    if not all(r.ok for r in results.values()):
        raise typer.Exit(1)


@swarm_app.command("down")
def swarm_down(
    name: str = typer.Option(..., help="Swarm name."),
    project: str = typer.Option(..., envvar="GOOGLE_CLOUD_PROJECT", help="GCP project id."),
    zone: str = typer.Option(..., help="Zone."),
    timeout_s: float = typer.Option(900.0, help="Deadline for the deletes, in seconds."),
    poll_interval_s: float = typer.Option(5.0, hidden=True),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the API request; send nothing."),
) -> None:
    """Delete every VM of a swarm (found by its hermes-swarm label)."""
    from google.cloud import compute_v1

    from hermes.cloudbreak.compute import SWARM_LABEL, delete_swarm

    _validate(project=project, zone=zone)

    if dry_run:
        _print_requests(
            [
                (
                    "compute.instances.list",
                    compute_v1.ListInstancesRequest(
                        project=project, zone=zone, filter=f"labels.{SWARM_LABEL} = {name}"
                    ),
                )
            ]
        )
        return
    try:
        deleted = delete_swarm(
            _compute(),
            project=project,
            zone=zone,
            name=name,
            timeout_s=timeout_s,
            poll_interval_s=poll_interval_s,
        )
    except CloudbreakError as exc:
        raise _fail(exc) from exc
    typer.echo(json.dumps({"deleted": deleted}))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
