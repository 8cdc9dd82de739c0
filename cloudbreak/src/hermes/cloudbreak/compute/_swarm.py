"""A swarm of Compute Engine VMs: create N from one description, run commands over SSH, delete all.

Uses the ``*_unary`` calls plus an explicit ``ZoneOperationsClient.wait`` on the same
endpoint: the extended-operation ``.result()`` of google-cloud-compute polls
compute.googleapis.com whatever endpoint the client was given.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.auth.credentials import Credentials
from google.cloud import compute_v1

from hermes.cloudbreak._credentials import load_credentials
from hermes.cloudbreak._errors import (
    GOOGLE_ERRORS,
    capacity_kind,
    quota_resource,
    translate_error,
    translate_google_error,
    zones_available,
)
from hermes.cloudbreak._managed import ManagedResource
from hermes.cloudbreak._retry import RetryPolicy, retry_transient
from hermes.cloudbreak._validation import check_count, check_project, check_zone
from hermes.cloudbreak._wait import poll_until
from hermes.cloudbreak.compute._specs import SWARM_LABEL, VMSpec, insert_requests
from hermes.cloudbreak.compute._ssh import CommandResult, run_on_hosts
from hermes.cloudbreak.exceptions import (
    CapacityError,
    CloudbreakError,
    CloudConfigError,
    OperationFailed,
    ResourceExists,
    ResourceNotFound,
)

__all__ = ["ComputeClients", "Swarm", "compute_clients", "delete_swarm", "host_keys", "list_swarm"]

logger = logging.getLogger("hermes.cloudbreak.compute")

T = TypeVar("T")
_DONE = compute_v1.Operation.Status.DONE


class ComputeClients:
    """The Compute clients a swarm needs, on one endpoint, and those ``hermes cloud gc`` uses for what
    load balancers leave behind.

    Args:
        instances: an ``InstancesClient``.
        operations: a ``ZoneOperationsClient`` on the same endpoint.
        forwarding_rules: a ``ForwardingRulesClient`` (optional: only for leftovers).
        target_pools: a ``TargetPoolsClient`` (optional: only for leftovers).
        firewalls: a ``FirewallsClient`` (optional: only for leftovers).
        region_operations: a ``RegionOperationsClient`` (optional: only for leftovers).
        global_operations: a ``GlobalOperationsClient`` (optional: only for leftovers).
    """

    def __init__(
        self,
        instances: compute_v1.InstancesClient,
        operations: compute_v1.ZoneOperationsClient,
        *,
        forwarding_rules: compute_v1.ForwardingRulesClient | None = None,
        target_pools: compute_v1.TargetPoolsClient | None = None,
        firewalls: compute_v1.FirewallsClient | None = None,
        region_operations: compute_v1.RegionOperationsClient | None = None,
        global_operations: compute_v1.GlobalOperationsClient | None = None,
    ):
        self.instances = instances
        self.operations = operations
        self.forwarding_rules = forwarding_rules
        self.target_pools = target_pools
        self.firewalls = firewalls
        self.region_operations = region_operations
        self.global_operations = global_operations

    @property
    def has_network(self) -> bool:
        """Whether the load-balancer clients (forwarding rules, target pools, firewalls, operations) are all set."""
        return None not in (
            self.forwarding_rules,
            self.target_pools,
            self.firewalls,
            self.region_operations,
            self.global_operations,
        )


def compute_clients(
    *,
    credentials: Credentials | None = None,
    credentials_file: str | Path | None = None,
    api_endpoint: str | None = None,
) -> tuple[ComputeClients, str | None]:
    """Build the Compute clients (REST) and name the credentials' project.

    Args:
        credentials: Google credentials; ``None`` loads ``credentials_file`` or ADC.
        credentials_file: a service-account JSON key.
        api_endpoint: another endpoint than compute.googleapis.com (``http://127.0.0.1:PORT`` for a fake).
    """
    project = None
    if credentials is None:
        credentials, project = load_credentials(credentials_file)
    options = ClientOptions(api_endpoint=api_endpoint) if api_endpoint else None
    kwargs: dict[str, Any] = {"transport": "rest", "credentials": credentials, "client_options": options}
    return ComputeClients(
        compute_v1.InstancesClient(**kwargs),
        compute_v1.ZoneOperationsClient(**kwargs),
        forwarding_rules=compute_v1.ForwardingRulesClient(**kwargs),
        target_pools=compute_v1.TargetPoolsClient(**kwargs),
        firewalls=compute_v1.FirewallsClient(**kwargs),
        region_operations=compute_v1.RegionOperationsClient(**kwargs),
        global_operations=compute_v1.GlobalOperationsClient(**kwargs),
    ), project


def _operation_error(op: compute_v1.Operation) -> str | None:
    errors = []
    for e in op.error.errors:
        available = [d.error_info.metadatas.get("zonesAvailable", "") for d in e.error_details]
        hint = f" (zonesAvailable: {', '.join(a for a in available if a)})" if any(available) else ""
        errors.append(f"{e.code}: {e.message}{hint}")
    if errors:
        return "; ".join(errors)
    if op.http_error_status_code and op.http_error_status_code >= 400:
        return f"HTTP {op.http_error_status_code} {op.http_error_message}"
    return None


def _guest_host_keys(clients: ComputeClients, project: str, zone: str, name: str) -> list[str] | None:
    """The SSH host keys the guest agent published (``hostkeys/`` guest attributes), or ``None`` yet."""
    try:
        attributes = clients.instances.get_guest_attributes(
            request=compute_v1.GetGuestAttributesInstanceRequest(
                project=project, zone=zone, instance=name, query_path="hostkeys/"
            )
        )
    except gexc.NotFound:
        return None  # the guest agent has not written them yet
    except GOOGLE_ERRORS as exc:
        raise translate_error(exc, f"get the SSH host keys of VM {name}") from exc
    keys = [f"{e.key} {e.value}" for e in attributes.query_value.items if e.namespace == "hostkeys"]
    return keys or None


def host_keys(
    clients: ComputeClients,
    *,
    project: str,
    zone: str,
    names: list[str],
    timeout_s: float = 180.0,
    poll_interval_s: float = 5.0,
) -> dict[str, list[str]]:
    """Each VM's SSH host keys from its guest attributes (``enable-guest-attributes=TRUE``), waiting
    until every VM published them; what ``run`` checks servers against."""
    found: dict[str, list[str]] = {}

    def check() -> dict[str, list[str]] | None:
        for name in names:
            if name not in found and (keys := _guest_host_keys(clients, project, zone, name)) is not None:
                found[name] = keys
        return dict(found) if len(found) == len(names) else None

    return poll_until(
        check,
        timeout_s=timeout_s,
        interval_s=poll_interval_s,
        what="the SSH host keys of the VMs (guest attributes hostkeys/)",
        describe=lambda: f"missing for {sorted(set(names) - set(found))}",
    )


class Swarm(ManagedResource):
    """N Compute Engine VMs made from one :class:`VMSpec`; created on enter, deleted on exit.

    Deletion happens on normal exit, on an exception and on SIGINT/SIGTERM, unless ``keep=True``.
    VMs refused for a stockout or a quota are deleted and retried by ``retry``.

    Args:
        spec: the VM description.
        count: how many VMs.
        project: the GCP project id.
        zone: the zone (``us-central1-a``).
        clients: Compute clients (e.g. on a fake); ``None`` builds them from the credentials.
        credentials: Google credentials, used when ``clients`` is ``None``.
        credentials_file: a service-account JSON key, used when both are ``None``.
        keep: leave the VMs running on exit.
        retry: how stockouts and quota errors are retried.
        timeout_s: the deadline for the VMs to run (and to be deleted), in seconds.
        poll_interval_s: the wait between two polls, in seconds.
        ssh_port: the port :meth:`run` connects to.

    Attributes:
        addresses: VM name → address (external IP, else internal), once running.
        host_keys: VM name → its SSH host keys (from guest attributes), fetched on the first :meth:`run`.
    """

    def __init__(
        self,
        spec: VMSpec,
        count: int,
        *,
        project: str | None = None,
        zone: str,
        clients: ComputeClients | None = None,
        credentials: Credentials | None = None,
        credentials_file: str | Path | None = None,
        keep: bool = False,
        retry: RetryPolicy | None = None,
        timeout_s: float = 900.0,
        poll_interval_s: float = 5.0,
        ssh_port: int = 22,
    ):
        super().__init__(keep=keep)
        check_count("Swarm", "count", count)
        check_zone("Swarm", zone)
        if project is not None:
            check_project("Swarm", project)
        if clients is None:
            clients, default_project = compute_clients(
                credentials=credentials, credentials_file=credentials_file
            )
            project = project or default_project
        if not project:
            raise CloudConfigError("Swarm.project is not set and the credentials name no project")
        check_project("Swarm", project)
        self.spec = spec
        self.count = count
        self.project = project
        self.zone = zone
        self.clients = clients
        self.retry = retry or RetryPolicy()
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self.ssh_port = ssh_port
        self.addresses: dict[str, str] = {}
        self.host_keys: dict[str, list[str]] = {}
        self.stop = threading.Event()
        self._requested: list[str] = []

    def __repr__(self) -> str:
        return f"Swarm(name={self.spec.name!r}, count={self.count}, project={self.project!r}, zone={self.zone!r})"

    def describe(self) -> str:
        return f"VM swarm {self.spec.name} ({self.count} VMs) in {self.project}/{self.zone}"

    def __enter__(self) -> Swarm:
        super().__enter__()
        return self

    # ------------------------------------------------------------- requests
    def insert_requests(self) -> list[compute_v1.InsertInstanceRequest]:
        """The exact requests that create the VMs."""
        return insert_requests(self.spec, self.count, project=self.project, zone=self.zone)

    def _call(self, what: str, method: Callable[..., T], **kwargs: Any) -> T:
        try:
            return method(**kwargs)
        except GOOGLE_ERRORS as exc:
            raise translate_error(exc, what) from exc

    def wait_operation(
        self, op: compute_v1.Operation, *, what: str, timeout_s: float | None = None
    ) -> compute_v1.Operation:
        """Wait for a zonal operation with ``ZoneOperationsClient.wait`` (on the clients' endpoint).

        Raises:
            CapacityError: it failed for a stockout or quota. OperationFailed: for another reason.
            OperationTimeout: not done before the deadline.
        """
        state = {"op": op}

        def check() -> compute_v1.Operation | None:
            current = self._call(
                f"{what}: wait",
                self.clients.operations.wait,
                project=self.project,
                zone=self.zone,
                operation=op.name,
            )
            state["op"] = current
            return current if current.status == _DONE else None

        done = poll_until(
            check,
            timeout_s=self.timeout_s if timeout_s is None else timeout_s,
            interval_s=self.poll_interval_s,
            what=f"{what} (operation {op.name})",
            describe=lambda: str(state["op"].status.name),
            stop=self.stop,
        )
        error = _operation_error(done)
        if error is not None:
            kind = capacity_kind(error)
            if kind is not None:
                raise CapacityError(
                    f"{what}: {error}",
                    kind=kind,
                    resource=quota_resource(error),
                    zones_available=zones_available(error.replace("zonesAvailable: ", "zonesAvailable=")),
                )
            raise OperationFailed(f"{what} failed: {error}")
        return done

    # ------------------------------------------------------------- life cycle
    def _create(self) -> None:
        by_name = {r.instance_resource.name: r for r in self.insert_requests()}
        pending = list(by_name)

        def attempt() -> None:
            ops: dict[str, compute_v1.Operation | CapacityError] = {}
            for name in pending:
                self._requested.append(name)
                try:
                    ops[name] = self._call(
                        f"create VM {name}", self.clients.instances.insert_unary, request=by_name[name]
                    )
                except ResourceExists:
                    self._requested.remove(name)  # not ours: never delete it
                    raise
                except CapacityError as exc:
                    ops[name] = exc
            refused: list[tuple[str, CapacityError]] = []
            for name, op in ops.items():
                try:
                    if isinstance(op, CapacityError):
                        raise op
                    self.wait_operation(op, what=f"create VM {name}")
                except CapacityError as exc:
                    refused.append((name, exc))
            if refused:
                for name, _ in refused:
                    self._delete_vm(name)
                pending[:] = [name for name, _ in refused]
                first = refused[0][1]
                raise CapacityError(
                    f"{len(refused)} of {len(ops)} VMs refused; {first}",
                    kind=first.kind,
                    code=first.code,
                    resource=first.resource,
                    zones_available=first.zones_available,
                )

        self.retry.call(attempt, what=f"create {self.describe()}", stop=self.stop)
        self.addresses = self._wait_running()

    def _wait_running(self) -> dict[str, str]:
        names = self.spec.instance_names(self.count)
        found: dict[str, str] = {}

        def check() -> dict[str, str] | None:
            for name in names:
                if name in found:
                    continue
                vm = self._call(
                    f"get VM {name}",
                    self.clients.instances.get,
                    project=self.project,
                    zone=self.zone,
                    instance=name,
                )
                if vm.status == "RUNNING":
                    found[name] = _address(vm)
            return (
                dict(sorted(found.items(), key=lambda kv: names.index(kv[0])))
                if len(found) == len(names)
                else None
            )

        return poll_until(
            check,
            timeout_s=self.timeout_s,
            interval_s=self.poll_interval_s,
            what=f"{self.describe()} to run",
            stop=self.stop,
            describe=lambda: f"{len(found)} of {len(names)} running",
        )

    def _delete_vm(self, name: str) -> bool:
        try:
            op = self._call(
                f"delete VM {name}",
                self.clients.instances.delete_unary,
                project=self.project,
                zone=self.zone,
                instance=name,
            )
        except ResourceNotFound:
            return False
        self.wait_operation(op, what=f"delete VM {name}")
        return True

    def _teardown_retry(self, attempt: Callable[[], T], what: str) -> T:
        return retry_transient(
            attempt, what=what, deadline_s=self.timeout_s, backoff_s=min(self.poll_interval_s, 5.0)
        )

    def _delete(self) -> list[str]:
        leftovers = []
        ops = {}
        for name in dict.fromkeys(self._requested):  # send every delete first, then wait for each
            try:
                ops[name] = self._teardown_retry(
                    lambda name=name: self._call(  # type: ignore[misc]
                        f"delete VM {name}",
                        self.clients.instances.delete_unary,
                        project=self.project,
                        zone=self.zone,
                        instance=name,
                    ),
                    f"delete VM {name}",
                )
            except ResourceNotFound:
                continue
            except CloudbreakError as exc:
                leftovers.append(f"VM {name} in {self.project}/{self.zone} ({exc})")
        deadline = time.monotonic() + self.timeout_s
        for name, op in ops.items():
            try:
                self._teardown_retry(
                    lambda name=name, op=op: self.wait_operation(  # type: ignore[misc]
                        op, what=f"delete VM {name}", timeout_s=max(deadline - time.monotonic(), 0.01)
                    ),
                    f"delete VM {name}",
                )
            except CloudbreakError as exc:
                leftovers.append(f"VM {name} in {self.project}/{self.zone} ({exc})")
        self._requested.clear()
        return leftovers

    # ------------------------------------------------------------- commands
    def run(
        self,
        command: str,
        *,
        per_vm: Mapping[str, Sequence[object]] | None = None,
        username: str | None = None,
        client_keys: Sequence[str | Path] | None = None,
        known_hosts: str | Path | None = None,
        check_host_keys: bool = True,
        timeout_s: float = 600.0,
        concurrency: int = 16,
        check: bool = False,
    ) -> dict[str, CommandResult]:
        """Run ``command`` on every VM over SSH; VM name → :class:`CommandResult`.

        The servers' host keys are checked against what each VM published in its guest attributes
        (fetched once), unless ``known_hosts`` is given or ``check_host_keys=False``.
        ``per_vm`` fills ``str.format`` fields per VM (``{"shard": [0, 1, 2]}``); see
        :func:`~hermes.cloudbreak.compute.run_on_hosts` for the other arguments.
        """
        if not self.addresses:
            raise CloudbreakError(f"{self.describe()} has no running VMs; enter the context first")
        if check_host_keys and known_hosts is None and not self.host_keys:
            self.host_keys = host_keys(
                self.clients,
                project=self.project,
                zone=self.zone,
                names=list(self.addresses),
                poll_interval_s=self.poll_interval_s,
            )
        return run_on_hosts(
            self.addresses,
            command,
            per_host=per_vm,
            port=self.ssh_port,
            username=username or self.spec.ssh_user,
            client_keys=client_keys,
            known_hosts=known_hosts,
            host_keys=self.host_keys if known_hosts is None and check_host_keys else None,
            check_host_keys=check_host_keys,
            timeout_s=timeout_s,
            concurrency=concurrency,
            check=check,
        )


def _address(vm: compute_v1.Instance) -> str:
    for interface in vm.network_interfaces:
        for access in interface.access_configs:
            if access.nat_i_p:
                return str(access.nat_i_p)
        if interface.network_i_p:
            return str(interface.network_i_p)
    raise CloudbreakError(f"VM {vm.name} is running but has no IP address")


def list_swarm(clients: ComputeClients, *, project: str, zone: str, name: str) -> dict[str, str]:
    """The running VMs of the swarm ``name`` (found by its ``hermes-swarm`` label): VM name → address."""
    check_project("list_swarm", project)
    check_zone("list_swarm", zone)
    try:
        vms = clients.instances.list(
            request=compute_v1.ListInstancesRequest(
                project=project, zone=zone, filter=f"labels.{SWARM_LABEL} = {name}"
            )
        )
        found = {vm.name: vm for vm in vms if vm.labels.get(SWARM_LABEL) == name}
    except gexc.GoogleAPICallError as exc:
        raise translate_google_error(exc, f"list VMs of swarm {name}") from exc
    return {vm_name: _address(vm) for vm_name, vm in sorted(found.items()) if vm.status == "RUNNING"}


def delete_swarm(
    clients: ComputeClients,
    *,
    project: str,
    zone: str,
    name: str,
    timeout_s: float = 900.0,
    poll_interval_s: float = 5.0,
) -> list[str]:
    """Delete every VM labelled ``hermes-swarm=<name>``; return the names deleted."""
    check_project("delete_swarm", project)
    check_zone("delete_swarm", zone)
    try:
        vms = [
            vm.name
            for vm in clients.instances.list(
                request=compute_v1.ListInstancesRequest(
                    project=project, zone=zone, filter=f"labels.{SWARM_LABEL} = {name}"
                )
            )
            if vm.labels.get(SWARM_LABEL) == name
        ]
    except gexc.GoogleAPICallError as exc:
        raise translate_google_error(exc, f"list VMs of swarm {name}") from exc
    swarm = Swarm(
        VMSpec(name=name),
        max(len(vms), 1),
        project=project,
        zone=zone,
        clients=clients,
        timeout_s=timeout_s,
        poll_interval_s=poll_interval_s,
    )
    swarm._requested = list(vms)
    swarm.close()
    return sorted(vms)
