"""A loopback REST fake of Compute Engine's instances and zone operations, and of what a GKE
LoadBalancer Service leaves: forwarding rules and target pools (regional), firewall rules (global),
with their region and global operations.

Request bodies are parsed with google-cloud-compute's own types (unknown fields rejected);
answers are those types serialised, so every field has the Compute API's real JSON name
(``targetTags``, ``creationTimestamp``, ``IPAddress``...: cloud.google.com/compute/docs/reference/rest/v1
``firewalls``, ``forwardingRules``, ``targetPools``); errors use Google's JSON error shape.
Operations advance one step per request received.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from google.cloud import compute_v1 as c

from cloudbreak_fakes._http import JsonHandler, serve_on_loopback
from cloudbreak_fakes.clock import compute_time

_BASE = r"^/compute/v1/projects/(?P<p>[^/]+)/zones/(?P<z>[^/]+)"
_PROJECT = r"^/compute/v1/projects/(?P<p>[^/]+)"
_REGION = _PROJECT + r"/regions/(?P<r>[^/]+)"
ROUTES = [
    ("POST", re.compile(_BASE + r"/instances$"), "insert"),
    ("GET", re.compile(_BASE + r"/instances$"), "list"),
    ("GET", re.compile(r"^/compute/v1/projects/(?P<p>[^/]+)/aggregated/instances$"), "aggregated_list"),
    ("GET", re.compile(_BASE + r"/instances/(?P<name>[^/]+)$"), "get"),
    ("GET", re.compile(_BASE + r"/instances/(?P<name>[^/]+)/getGuestAttributes$"), "guest_attributes"),
    ("DELETE", re.compile(_BASE + r"/instances/(?P<name>[^/]+)$"), "delete"),
    ("POST", re.compile(_BASE + r"/operations/(?P<op>[^/]+)/wait$"), "wait"),
    ("GET", re.compile(_BASE + r"/operations/(?P<op>[^/]+)$"), "get_operation"),
    ("GET", re.compile(_PROJECT + r"/global/firewalls$"), "list_firewalls"),
    ("DELETE", re.compile(_PROJECT + r"/global/firewalls/(?P<name>[^/]+)$"), "delete_firewall"),
    ("GET", re.compile(_PROJECT + r"/aggregated/forwardingRules$"), "aggregated_forwarding_rules"),
    ("DELETE", re.compile(_REGION + r"/forwardingRules/(?P<name>[^/]+)$"), "delete_forwarding_rule"),
    ("GET", re.compile(_PROJECT + r"/aggregated/targetPools$"), "aggregated_target_pools"),
    ("DELETE", re.compile(_REGION + r"/targetPools/(?P<name>[^/]+)$"), "delete_target_pool"),
    ("POST", re.compile(_REGION + r"/operations/(?P<op>[^/]+)/wait$"), "wait_scoped"),
    ("POST", re.compile(_PROJECT + r"/global/operations/(?P<op>[^/]+)/wait$"), "wait_global"),
]


class HttpError(Exception):
    def __init__(self, code: int, status: str, message: str, *, reason: str = "", domain: str = "global"):
        super().__init__(message)
        self.code, self.status, self.message = code, status, message
        self.reason, self.domain = reason, domain


@dataclass
class FakeCompute:
    """State and behaviour knobs; ``requests`` records (method, path, body)."""

    polls_per_operation: int = 1
    stockouts: int = 0  # that many inserts end with ZONE_RESOURCE_POOL_EXHAUSTED in their operation
    quota_errors: int = 0  # that many inserts are refused with Compute's 403 quota text
    zones_available: str = "us-central1-a,us-central1-f"  # what a stockout says has capacity
    host_key: str | None = None  # "ssh-ed25519 AAAA...": what each VM's guest agent publishes
    host_key_delay: int = 0  # that many guest-attribute reads answer 404 first (agent not up yet)
    page_size: int = 2
    address: str = "127.0.0.1"
    creation_timestamp: str | None = None  # what new VMs report; None: the clock at creation
    instances: dict[str, c.Instance] = field(default_factory=dict)
    firewalls: dict[str, c.Firewall] = field(default_factory=dict)
    forwarding_rules: dict[str, c.ForwardingRule] = field(default_factory=dict)  # name -> rule (region in it)
    target_pools: dict[str, c.TargetPool] = field(default_factory=dict)
    ops: dict[str, list[Any]] = field(default_factory=dict)  # name -> [Operation, steps_left, on_done]
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Any = field(default_factory=lambda: itertools.count(1000))
    port: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tick(self) -> None:
        for entry in self.ops.values():
            op = entry[0]
            if op.status != c.Operation.Status.DONE:
                entry[1] -= 1
                if entry[1] <= 0:
                    op.status = c.Operation.Status.DONE
                    entry[2](op)

    def _op(self, zone: str, kind: str, target: str, on_done: Any) -> c.Operation:
        number = next(self._ids)
        op = c.Operation(
            name=f"operation-{number}",
            id=number,
            operation_type=kind,
            zone=zone,
            status=c.Operation.Status.RUNNING,
            target_link=target,
        )
        self.ops[op.name] = [op, self.polls_per_operation, on_done]
        return op

    # ------------------------------------------------------------- handlers
    def insert(self, p: str, z: str, body: bytes, query: dict) -> Any:
        vm = c.Instance.from_json(body, ignore_unknown_fields=False)
        if self.quota_errors:
            self.quota_errors -= 1
            # Compute's refusal (gcloud shows it as in fastai/course-v3#165): 403, reason quotaExceeded
            raise HttpError(
                403,
                "PERMISSION_DENIED",
                "Quota 'NVIDIA_T4_GPUS' exceeded.  Limit: 0.0 in region us-central1.",
                reason="quotaExceeded",
                domain="usageLimits",
            )
        if vm.name in self.instances:
            raise HttpError(
                409,
                "ALREADY_EXISTS",
                f"The resource 'projects/{p}/zones/{z}/instances/{vm.name}' already exists",
            )
        vm.status = "PROVISIONING"
        vm.id = next(self._ids)
        vm.zone = f"https://www.googleapis.com/compute/v1/projects/{p}/zones/{z}"
        vm.creation_timestamp = self.creation_timestamp or compute_time()
        for interface in vm.network_interfaces:
            interface.network_i_p = "10.128.0.2"
            for access in interface.access_configs:
                access.nat_i_p = self.address
        self.instances[vm.name] = vm
        stockout = self.stockouts > 0
        if stockout:
            self.stockouts -= 1

        def done(op: c.Operation) -> None:
            if stockout:
                # the shape of kubernetes/k8s.io#9834: code, message, errorDetails with errorInfo metadatas
                op.error = c.Error(
                    errors=[
                        c.Errors(
                            code="ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
                            message=(
                                f"The zone 'projects/{p}/zones/{z}' does not have enough resources available to "
                                "fulfill the request.  'NULL:0/NULL:0/NULL:0 (state:STOCKOUT, sub-state:STOCKOUT, "
                                "resource type:compute)'."
                            ),
                            error_details=[
                                c.ErrorDetails(
                                    error_info=c.ErrorInfo(
                                        domain="compute.googleapis.com",
                                        reason="resource_availability",
                                        metadatas={
                                            "attachment": "nvidia-tesla-t4:1",
                                            "vmType": "n1-standard-4",
                                            "zone": z,
                                            "zonesAvailable": self.zones_available,
                                        },
                                    )
                                )
                            ],
                        )
                    ]
                )
                op.http_error_status_code = 503
                self.instances.pop(vm.name, None)
            else:
                vm.status = "RUNNING"

        return self._op(z, "insert", vm.name, done)

    def add_instance(
        self, project: str, zone: str, name: str, *, labels: dict[str, str], creation_timestamp: str
    ) -> c.Instance:
        """Put a RUNNING VM in place, as if made earlier (e.g. by a run that crashed)."""
        vm = c.Instance(
            name=name,
            id=next(self._ids),
            zone=f"https://www.googleapis.com/compute/v1/projects/{project}/zones/{zone}",
            status="RUNNING",
            labels=labels,
            creation_timestamp=creation_timestamp,
        )
        self.instances[name] = vm
        return vm

    def aggregated_list(self, p: str, body: bytes, query: dict) -> Any:
        zones: dict[str, list[c.Instance]] = {}
        for name in sorted(self.instances):
            vm = self.instances[name]
            zones.setdefault("zones/" + vm.zone.rsplit("/", 1)[-1], []).append(vm)
        return c.InstanceAggregatedList(
            items={scope: c.InstancesScopedList(instances=vms) for scope, vms in zones.items()}
        )

    def list(self, p: str, z: str, body: bytes, query: dict) -> Any:
        names = sorted(
            n for n, vm in self.instances.items() if not vm.zone or vm.zone.endswith(f"/zones/{z}")
        )
        start = int(query.get("pageToken", ["0"])[0])
        page = names[start : start + self.page_size]
        out = c.InstanceList(items=[self.instances[n] for n in page])
        if start + self.page_size < len(names):
            out.next_page_token = str(start + self.page_size)
        return out

    def get(self, p: str, z: str, name: str, body: bytes, query: dict) -> Any:
        if name not in self.instances:
            raise HttpError(
                404, "NOT_FOUND", f"The resource 'projects/{p}/zones/{z}/instances/{name}' was not found"
            )
        return self.instances[name]

    def delete(self, p: str, z: str, name: str, body: bytes, query: dict) -> Any:
        vm = self.get(p, z, name, body, query)
        vm.status = "STOPPING"
        return self._op(z, "delete", name, lambda op: self.instances.pop(name, None))

    def guest_attributes(self, p: str, z: str, name: str, body: bytes, query: dict) -> Any:
        """``hostkeys/`` guest attributes as the guest agent writes them: key = type, value = base64 key."""
        self.get(p, z, name, body, query)
        path = query.get("queryPath", [""])[0]
        if self.host_key is None or self.host_key_delay > 0 or path != "hostkeys/":
            self.host_key_delay = max(self.host_key_delay - 1, 0)
            raise HttpError(
                404,
                "NOT_FOUND",
                f"The resource 'projects/{p}/zones/{z}/instances/{name}/guestAttributes/{path}' was not found",
            )
        kind, value = self.host_key.split()[:2]
        return c.GuestAttributes(
            query_path=path,
            query_value=c.GuestAttributesValue(
                items=[c.GuestAttributesEntry(namespace="hostkeys", key=kind, value=value)]
            ),
        )

    def wait(self, p: str, z: str, op: str, body: bytes, query: dict) -> Any:
        return self.get_operation(p, z, op, body, query)

    def get_operation(self, p: str, z: str, op: str, body: bytes, query: dict) -> Any:
        if op not in self.ops:
            raise HttpError(
                404, "NOT_FOUND", f"The resource 'projects/{p}/zones/{z}/operations/{op}' was not found"
            )
        return self.ops[op][0]

    # ------------------------------------------------------------- load balancers
    def add_service_load_balancer(
        self,
        project: str,
        region: str,
        service: str,
        *,
        uid: str,
        node_tag: str,
        created: str,
        ip: str = "34.1.2.3",
    ) -> str:
        """What GKE's service controller makes for a LoadBalancer Service ``ns/name``: a forwarding rule and a
        target pool named ``a<uid without dashes>`` (32 characters) and the firewall rule ``k8s-fw-<that>``,
        with the names and descriptions of kubernetes/cloud-provider-gcp (gce_loadbalancer_external.go:
        ``{"kubernetes.io/service-name":"%s"}``, and ``, "kubernetes.io/service-ip":"%s"`` on the firewall)."""
        lb = ("a" + uid.replace("-", ""))[:32]
        base = f"https://www.googleapis.com/compute/v1/projects/{project}"
        self.target_pools[lb] = c.TargetPool(
            name=lb,
            id=next(self._ids),
            region=f"{base}/regions/{region}",
            description=f'{{"kubernetes.io/service-name":"{service}"}}',
            creation_timestamp=created,
            self_link=f"{base}/regions/{region}/targetPools/{lb}",
        )
        self.forwarding_rules[lb] = c.ForwardingRule(
            name=lb,
            id=next(self._ids),
            region=f"{base}/regions/{region}",
            I_p_address=ip,
            I_p_protocol="TCP",
            port_range="8000-8002",
            target=f"{base}/regions/{region}/targetPools/{lb}",
            load_balancing_scheme="EXTERNAL",
            description=f'{{"kubernetes.io/service-name":"{service}"}}',
            creation_timestamp=created,
        )
        self.add_firewall(
            project,
            f"k8s-fw-{lb}",
            target_tags=[node_tag],
            created=created,
            description=f'{{"kubernetes.io/service-name":"{service}", "kubernetes.io/service-ip":"{ip}"}}',
        )
        return lb

    def add_firewall(
        self, project: str, name: str, *, target_tags: list[str], created: str, description: str = ""
    ) -> c.Firewall:
        rule = c.Firewall(
            name=name,
            id=next(self._ids),
            network=f"https://www.googleapis.com/compute/v1/projects/{project}/global/networks/default",
            direction="INGRESS",
            priority=1000,
            source_ranges=["0.0.0.0/0"],
            allowed=[c.Allowed(I_p_protocol="tcp", ports=["8000", "8001", "8002"])],
            target_tags=target_tags,
            description=description,
            creation_timestamp=created,
        )
        self.firewalls[name] = rule
        return rule

    def list_firewalls(self, p: str, body: bytes, query: dict) -> Any:
        names = sorted(self.firewalls)
        start = int(query.get("pageToken", ["0"])[0])
        out = c.FirewallList(items=[self.firewalls[n] for n in names[start : start + self.page_size]])
        if start + self.page_size < len(names):
            out.next_page_token = str(start + self.page_size)
        return out

    def _by_region(self, items: dict[str, Any]) -> dict[str, list[Any]]:
        regions: dict[str, list[Any]] = {"regions/asia-east1": []}  # a region with none: a warning scope
        for name in sorted(items):
            regions.setdefault("regions/" + items[name].region.rsplit("/", 1)[-1], []).append(items[name])
        return regions

    @staticmethod
    def _no_results(scope: str) -> c.Warning:
        # what aggregatedList answers for an empty scope (Compute API reference, "warning" of a scoped list)
        return c.Warning(
            code="NO_RESULTS_ON_PAGE",
            message=f"There are no results for scope '{scope}' on this page.",
            data=[c.Data(key="scope", value=scope)],
        )

    def aggregated_forwarding_rules(self, p: str, body: bytes, query: dict) -> Any:
        return c.ForwardingRuleAggregatedList(
            items={
                scope: c.ForwardingRulesScopedList(forwarding_rules=rules)
                if rules
                else c.ForwardingRulesScopedList(warning=self._no_results(scope))
                for scope, rules in self._by_region(self.forwarding_rules).items()
            }
        )

    def aggregated_target_pools(self, p: str, body: bytes, query: dict) -> Any:
        return c.TargetPoolAggregatedList(
            items={
                scope: c.TargetPoolsScopedList(target_pools=pools)
                if pools
                else c.TargetPoolsScopedList(warning=self._no_results(scope))
                for scope, pools in self._by_region(self.target_pools).items()
            }
        )

    def _regional_get(self, items: dict[str, Any], p: str, r: str, name: str, collection: str) -> Any:
        item = items.get(name)
        if item is None or not item.region.endswith(f"/regions/{r}"):
            raise HttpError(
                404, "NOT_FOUND", f"The resource 'projects/{p}/regions/{r}/{collection}/{name}' was not found"
            )
        return item

    def delete_forwarding_rule(self, p: str, r: str, name: str, body: bytes, query: dict) -> Any:
        self._regional_get(self.forwarding_rules, p, r, name, "forwardingRules")
        return self._scoped_op(
            f"regions/{r}", "delete", name, lambda op: self.forwarding_rules.pop(name, None)
        )

    def delete_target_pool(self, p: str, r: str, name: str, body: bytes, query: dict) -> Any:
        self._regional_get(self.target_pools, p, r, name, "targetPools")
        users = [f for f in self.forwarding_rules.values() if f.target.endswith(f"/targetPools/{name}")]
        if users:
            # Compute's refusal to delete a pool a forwarding rule still targets (reason resourceInUseByAnotherResource)
            raise HttpError(
                400,
                "BAD_REQUEST",
                f"The target_pool resource 'projects/{p}/regions/{r}/targetPools/{name}' is already being used by "
                f"'projects/{p}/regions/{r}/forwardingRules/{users[0].name}'",
                reason="resourceInUseByAnotherResource",
            )
        return self._scoped_op(f"regions/{r}", "delete", name, lambda op: self.target_pools.pop(name, None))

    def delete_firewall(self, p: str, name: str, body: bytes, query: dict) -> Any:
        if name not in self.firewalls:
            raise HttpError(
                404, "NOT_FOUND", f"The resource 'projects/{p}/global/firewalls/{name}' was not found"
            )
        return self._scoped_op("global", "delete", name, lambda op: self.firewalls.pop(name, None))

    def _scoped_op(self, scope: str, kind: str, target: str, on_done: Any) -> c.Operation:
        number = next(self._ids)
        op = c.Operation(
            name=f"operation-{number}",
            id=number,
            operation_type=kind,
            status=c.Operation.Status.RUNNING,
            target_link=target,
        )
        if scope.startswith("regions/"):
            op.region = scope
        self.ops[op.name] = [op, self.polls_per_operation, on_done]
        return op

    def wait_scoped(self, p: str, r: str, op: str, body: bytes, query: dict) -> Any:
        return self.get_operation(p, f"regions/{r}", op, body, query)

    def wait_global(self, p: str, op: str, body: bytes, query: dict) -> Any:
        return self.get_operation(p, "global", op, body, query)

    def methods(self) -> list[str]:
        return [
            f"{m} {path.split('/zones/')[1].split('/', 2)[1] if '/zones/' in path else path}"
            for m, path, _ in self.requests
        ]


def start_fake_compute(fake: FakeCompute) -> ThreadingHTTPServer:
    """Serve ``fake`` on 127.0.0.1 (a free port, stored in ``fake.port``) in a thread."""

    class Handler(JsonHandler):
        def _handle(self, method: str) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            for verb, pattern, name in ROUTES:
                match = pattern.match(url.path)
                if verb == method and match:
                    action = name
                    break
            else:
                return self._send(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": url.path}})
            with fake.lock:
                fake.requests.append((method, url.path, json.loads(body) if body else None))
                fake.tick()
                try:
                    result = getattr(fake, action)(*match.groups(), body, parse_qs(url.query))
                except HttpError as exc:
                    return self._send(
                        exc.code,
                        {
                            "error": {
                                "code": exc.code,
                                "status": exc.status,
                                "message": exc.message,
                                "errors": [
                                    {"message": exc.message, "domain": exc.domain, "reason": exc.reason}
                                ],
                            }
                        },
                    )
                self._send(200, json.loads(type(result).to_json(result)))
            return None

    server = serve_on_loopback(Handler, "fake-compute")
    fake.port = server.server_address[1]
    return server
